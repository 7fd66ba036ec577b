"""The Ollama provider: request bodies, reply parsing, NDJSON streams, errors, the factory.

Request shapes and reply parsing use aioresponses ("right JSON out, right parse in").
Streams and faults run against a real `aiohttp.web` server on 127.0.0.1 that writes the
recorded-style bodies in `tests/fixtures/ollama/` in small chunks.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import anyio
import attrs
import pytest
from aiohttp import web
from aioresponses import aioresponses
from yarl import URL

from majordomo_async import (
    DSN,
    AsyncModel,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContentPolicyError,
    ContextLengthError,
    FinishReason,
    HTTPSessionHolder,
    ImagePart,
    ManualClock,
    Message,
    ModelLister,
    ModelNotFoundError,
    OverloadedError,
    Provider,
    ProviderConnectionError,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    Request,
    ResponseFormatError,
    ServerError,
    StreamEnd,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    UnsupportedRequestError,
    Usage,
    UsageUpdate,
    json_mode,
    json_schema,
    max_tokens,
    stop,
    system,
    temperature,
    tool_choice,
    tools,
    top_p,
)
from majordomo_async._capabilities import builtin_capabilities
from majordomo_async._http import ON_DEMAND_TIMEOUTS, Timeouts
from majordomo_async._providers._base import USER_AGENT
from majordomo_async._providers.ollama import (
    DEFAULT_BASE_URL,
    OllamaProvider,
    _build_body,
    _parse_response,
    _StreamTranslator,
    ollama_factory,
    parse_ollama_host,
)

from .helpers.mocking import CompatResponse
from .helpers.servers import (
    Handler,
    LocalServer,
    acquired_connections,
    closed_port_url,
    play,
    respond,
)

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
LOCAL = "http://127.0.0.1:11434"
CHAT = f"{LOCAL}/api/chat"
SECRET = "ok-secret-3f9a27c1d84e4b6f"

LOOKUP = Tool(
    "lookup_city",
    "Find a city",
    {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
)
CLOCK = Tool("local_time", "", {"type": "object", "properties": {"tz": {"type": "string"}}})


def mock_post(mock: aioresponses, url: str = CHAT, **kwargs: Any) -> None:
    """Queue one reply to a POST of `url` (see `CompatResponse`)."""
    mock.post(url, response_class=CompatResponse, **kwargs)


def fixture(name: str) -> bytes:
    """The bytes of a recorded-style body."""
    return (FIXTURES / name).read_bytes()


def acquired(holder: HTTPSessionHolder) -> int:
    """Connections the holder's session has handed out and not got back."""
    return acquired_connections(holder.get())


def provider_for(
    http: HTTPSessionHolder,
    base_url: str = LOCAL,
    api_key: str | None = None,
    **kwargs: Any,
) -> OllamaProvider:
    """An Ollama provider named "ollama" (short timeouts: the tests never wait)."""
    kwargs.setdefault(
        "timeouts",
        Timeouts(
            connect=2.0,
            headers=5.0,
            generate=5.0,
            first_token=5.0,
            reasoning_first_token=5.0,
            idle=5.0,
        ),
    )
    return OllamaProvider("ollama", api_key=api_key, base_url=base_url, http=http, **kwargs)


def sent(mock: aioresponses, url: str = CHAT, method: str = "POST") -> tuple[Any, dict[str, str]]:
    """The JSON body and headers of the one request made to `url`."""
    calls = mock.requests[(method, URL(url))]
    assert len(calls) == 1
    kwargs = calls[0].kwargs
    data = kwargs.get("data")
    return (json.loads(data) if data else None), dict(kwargs["headers"])


def reply(content: str = "ok", **extra: Any) -> dict[str, Any]:
    """A non-streamed /api/chat reply."""
    body = {
        "model": "llama3.2",
        "created_at": "2026-03-02T09:20:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": 5,
        "eval_count": 2,
    }
    body.update(extra)
    return body


async def generate_body(http: HTTPSessionHolder, request: Request | str, *options: Any) -> Any:
    """The JSON body `generate` sends for `request`."""
    with aioresponses() as mock:
        mock_post(mock, CHAT, payload=reply())
        await provider_for(http).model("llama3.2").generate(request, *options)
        body, _ = sent(mock)
    return body


# --------------------------------------------------------------------------- request shapes


async def test_plain_text_body_and_headers(http: HTTPSessionHolder) -> None:
    """A plain prompt is one user message, `stream: false`, JSON headers and no auth."""
    with aioresponses() as mock:
        mock_post(mock, CHAT, payload=reply())
        await provider_for(http).model("llama3.2").generate("Why is the sky blue?")
        body, headers = sent(mock)
    assert body == {
        "model": "llama3.2",
        "messages": [{"role": "user", "content": "Why is the sky blue?"}],
        "stream": False,
    }
    assert headers == {
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Content-Type": "application/json",
    }


async def test_system_prompt_and_sampling_options(http: HTTPSessionHolder) -> None:
    """The system prompt leads the messages; sampling goes under `options` (num_predict)."""
    body = await generate_body(
        http,
        "Name a fjord.",
        system("Be terse."),
        temperature(0.2),
        top_p(0.9),
        max_tokens(64),
        stop("END", "\n\n"),
    )
    assert body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Name a fjord."},
        ],
        "options": {"temperature": 0.2, "top_p": 0.9, "num_predict": 64, "stop": ["END", "\n\n"]},
        "stream": False,
    }


async def test_tools_are_sent_as_functions(http: HTTPSessionHolder) -> None:
    """Tools use the OpenAI function schema; an empty description is left out."""
    body = await generate_body(http, "Where is Oslo?", tools(LOOKUP, CLOCK))
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_city",
                "description": "Find a city",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}},
                    "required": ["q"],
                },
            },
        },
        {
            "type": "function",
            "function": {
                "name": "local_time",
                "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
            },
        },
    ]
    assert "tool_choice" not in body


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        ("auto", ["lookup_city", "local_time"]),
        ("required", ["lookup_city", "local_time"]),
        ("none", None),
        ("local_time", ["local_time"]),
    ],
)
async def test_tool_choice_filters_the_tools(
    http: HTTPSessionHolder, choice: str, names: list[str] | None
) -> None:
    """Ollama has no tool_choice: "none" drops the tools, a name keeps only that tool."""
    body = await generate_body(http, "Go", tools(LOOKUP, CLOCK), tool_choice(choice))
    sent_names = [tool["function"]["name"] for tool in body["tools"]] if "tools" in body else None
    assert sent_names == names
    assert "tool_choice" not in body


async def test_tool_choice_of_an_unknown_tool_is_refused(http: HTTPSessionHolder) -> None:
    """Naming a tool the request does not offer fails before any request is made."""
    with aioresponses() as mock:
        with pytest.raises(UnsupportedRequestError, match="'weather'") as caught:
            await (
                provider_for(http)
                .model("llama3.2")
                .generate("Go", tools(LOOKUP), tool_choice("weather"))
            )
        assert not mock.requests
    assert caught.value.key == "ollama/llama3.2"


async def test_tool_results_follow_up(http: HTTPSessionHolder) -> None:
    """Replayed calls carry argument objects; each result is a `tool` message with its name."""
    request = Request(
        [
            Message.user("Cities?"),
            Message.assistant(
                "Looking.",
                ToolCallPart(ToolCall("call_0", "lookup_city", '{"q": "Oslo"}')),
                ToolCallPart(ToolCall("call_1", "local_time", '{"tz": "Europe/Oslo"}')),
            ),
            Message.tool_result("call_0", '{"found": true}'),
            Message("tool", ToolResultPart("call_1", "12:00", name="local_time")),
        ]
    )
    body = await generate_body(http, request)
    assert body["messages"] == [
        {"role": "user", "content": "Cities?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {"id": "call_0", "function": {"name": "lookup_city", "arguments": {"q": "Oslo"}}},
                {
                    "id": "call_1",
                    "function": {"name": "local_time", "arguments": {"tz": "Europe/Oslo"}},
                },
            ],
        },
        {
            "role": "tool",
            "content": '{"found": true}',
            "tool_name": "lookup_city",
            "tool_call_id": "call_0",
        },
        {"role": "tool", "content": "12:00", "tool_name": "local_time", "tool_call_id": "call_1"},
    ]


def test_tool_call_arguments_that_are_not_an_object_are_refused() -> None:
    """Ollama wants argument objects: replaying non-object arguments is unsupported."""
    request = Request(
        [Message.user("x"), Message.assistant(ToolCallPart(ToolCall("c", "f", "[1, 2]")))]
    )
    with pytest.raises(UnsupportedRequestError, match="JSON object"):
        _build_body(request, "llama3.2", stream=False)


async def test_inline_image_is_raw_base64(http: HTTPSessionHolder) -> None:
    """Inline bytes and data: URLs become raw base64 strings in the message's `images`."""
    png = b"\x89PNG\r\n\x1a\n-fake-png"
    request = Request(
        Message.user(
            "What is this?",
            ImagePart.from_bytes(png, "image/png"),
            ImagePart.from_url("data:image/gif;base64,R0lGODlhAQABAAAAACw="),
            ImagePart.from_url("data:image/png,%89PNG"),
        )
    )
    body = await generate_body(http, request)
    assert body["messages"] == [
        {
            "role": "user",
            "content": "What is this?",
            "images": [
                base64.b64encode(png).decode(),
                "R0lGODlhAQABAAAAACw=",
                base64.b64encode(b"\x89PNG").decode(),
            ],
        }
    ]


async def test_url_image_is_unsupported(http: HTTPSessionHolder) -> None:
    """An http(s) image URL raises UnsupportedRequestError and sends nothing."""
    request = Request(Message.user("Look", ImagePart.from_url("https://example.com/cat.png")))
    with aioresponses() as mock:
        with pytest.raises(UnsupportedRequestError, match="inline data, not by URL"):
            await provider_for(http).model("llava").generate(request)
        assert not mock.requests


async def test_json_mode_and_schema(http: HTTPSessionHolder) -> None:
    """JSON mode sends `format: "json"`; a schema is sent as the `format` object."""
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    assert (await generate_body(http, "x", json_mode()))["format"] == "json"
    assert (await generate_body(http, "x", json_schema(schema)))["format"] == schema


async def test_key_and_extra_headers_are_sent(http: HTTPSessionHolder) -> None:
    """A key goes out as a Bearer token, extra headers alongside it."""
    provider = provider_for(http, api_key=SECRET, extra_headers={"X-Team": "search"})
    with aioresponses() as mock:
        mock_post(mock, CHAT, payload=reply())
        await provider.model("llama3.2").generate("hi")
        _, headers = sent(mock)
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert headers["X-Team"] == "search"


# --------------------------------------------------------------------------- reply parsing


async def test_text_reply_is_parsed(http: HTTPSessionHolder) -> None:
    """Text, usage, finish reason, model key and request id come from the reply."""
    with aioresponses() as mock:
        mock_post(
            mock,
            CHAT,
            body=fixture("chat_response.json"),
            headers={"X-Request-Id": "req-41"},
        )
        response = await provider_for(http).model("llama3.2").generate("Capital of Norway?")
    assert response.text == "Oslo is the capital of Norway."
    assert response.usage == Usage(26, 9)
    assert response.finish_reason is FinishReason.STOP
    assert response.tool_calls == ()
    assert response.model == "ollama/llama3.2"
    assert response.request_id == "req-41"
    assert response.raw["total_duration"] == 1203000000


async def test_parallel_tool_calls_are_parsed(http: HTTPSessionHolder) -> None:
    """Whole tool calls get `call_N` ids when the server sent none; arguments become text."""
    with aioresponses() as mock:
        mock_post(mock, CHAT, body=fixture("chat_tools_response.json"))
        response = await provider_for(http).model("qwen3").generate("Oslo?", tools(LOOKUP))
    assert response.tool_calls == (
        ToolCall("call_0", "lookup_city", '{"q": "Oslo"}'),
        ToolCall("call_srv_2", "local_time", '{"tz": "Europe/Oslo", "format": "24h"}'),
    )
    assert response.tool_calls[1].parse_arguments() == {"tz": "Europe/Oslo", "format": "24h"}
    # Ollama ends tool calls with done_reason "stop": the calls decide.
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(169, 18)
    assert response.request_id is None


@pytest.mark.parametrize(
    ("done_reason", "expected"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("load", FinishReason.OTHER),
        (None, FinishReason.STOP),
    ],
)
def test_finish_reasons(done_reason: str | None, expected: FinishReason) -> None:
    """done_reason maps to FinishReason; an unknown one is OTHER."""
    body = reply(done_reason=done_reason)
    assert _parse_response(body, "ollama/m", {}).finish_reason is expected


def test_missing_counts_are_zero_usage() -> None:
    """A reply without token counts (a cached prompt) has zero usage, not an error."""
    body = reply()
    del body["prompt_eval_count"], body["eval_count"]
    assert _parse_response(body, "ollama/m", {}).usage == Usage()


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"done": True},
        {"message": {"content": 7}},
        {"message": {"content": "", "tool_calls": [{"function": {}}]}},
    ],
)
def test_malformed_replies_raise_response_format_error(body: Any) -> None:
    """A reply that is not a chat response is a ResponseFormatError, not a KeyError."""
    with pytest.raises(ResponseFormatError) as caught:
        _parse_response(body, "ollama/m", {})
    assert caught.value.key == "ollama/m"


def test_error_object_in_a_reply_is_typed() -> None:
    """An `{"error": ...}` reply raises the mapped error, not a parse failure."""
    with pytest.raises(ModelNotFoundError, match="ollama pull m"):
        _parse_response({"error": 'model "m" not found, try pulling it first'}, "ollama/m", {})


def test_stream_translator_events() -> None:
    """Objects become StreamStart, deltas, numbered tool calls, usage and the end."""
    translator = _StreamTranslator("ollama/qwen3", "req-1")
    call = {"function": {"name": "f", "arguments": {"a": 1}}}
    objects = [
        {"message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"message": {"content": "", "tool_calls": [call, call]}, "done": False},
        {"message": {"content": ""}, "done": True, "done_reason": "stop", "eval_count": 3},
    ]
    events = [event for obj in objects for event in translator.feed(obj)]
    assert translator.done
    assert events == [
        StreamStart(model="ollama/qwen3", request_id="req-1"),
        TextDelta("Hi"),
        ToolCallDelta(0, "call_0", "f", '{"a": 1}'),
        ToolCallDelta(1, "call_1", "f", '{"a": 1}'),
        UsageUpdate(Usage(0, 3)),
        StreamEnd(FinishReason.TOOL_CALLS),
    ]
    assert translator.finish() == []  # the terminal object came: no error


def test_stream_translator_without_done_is_truncated() -> None:
    """Objects that never reach `done: true` leave a truncated stream."""
    translator = _StreamTranslator("ollama/m", None)
    translator.feed({"message": {"content": "Hal"}, "done": False})
    with pytest.raises(StreamTruncatedError, match="done"):
        translator.finish()


# --------------------------------------------------------------------------- a real server


CHAT_PATH = "/api/chat"
TAGS_PATH = "/api/tags"


def ndjson(name: str, *, chunk: int = 11, status: int = 200) -> Handler:
    """A handler that writes fixture `name` as an NDJSON body, `chunk` bytes at a time."""
    return play(fixture(name), chunk=chunk, status=status, content_type="application/x-ndjson")


def error_reply(status: int, error: str, headers: dict[str, str] | None = None) -> Handler:
    """A handler answering `{"error": error}` with `status`."""
    return respond(status, {"error": error}, headers=headers)


async def test_stream_text_is_collected(http: HTTPSessionHolder, server: LocalServer) -> None:
    """A text stream aggregates to the full text, usage and STOP; the body asks to stream."""
    server.routes[CHAT_PATH] = ndjson("chat_text.ndjson")
    model = provider_for(http, server.url).model("llama3.2")
    stream = await model.stream("Tell me about fjords.")
    response = await stream.collect()
    assert response.text == "The fjord is deep ❄️."
    assert response.usage == Usage(21, 7)
    assert response.finish_reason is FinishReason.STOP
    assert response.model == "ollama/llama3.2"
    (request,) = server.requests
    assert request.path == "/api/chat"
    assert request.headers["Accept"] == "application/x-ndjson"
    assert request.json()["stream"] is True


async def test_stream_event_order(http: HTTPSessionHolder, server: LocalServer) -> None:
    """StreamStart comes first, then text deltas, usage, and StreamEnd last."""
    server.routes[CHAT_PATH] = ndjson("chat_length.ndjson", chunk=5)
    model = provider_for(http, server.url).model("llama3.2")
    async with await model.stream("Story?") as stream:
        events = [event async for event in stream]
    assert events == [
        StreamStart(model="ollama/llama3.2", served_model="llama3.2"),
        TextDelta("Once upon"),
        UsageUpdate(Usage(12, 2)),
        StreamEnd(FinishReason.LENGTH),
    ]


async def test_stream_tool_calls_are_assembled(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Whole tool calls across chunks become numbered calls, with usage at the end."""
    server.routes[CHAT_PATH] = ndjson("chat_tools.ndjson", chunk=3)
    model = provider_for(http, server.url).model("qwen3")
    response = await (await model.stream("Cities?", tools(LOOKUP, CLOCK))).collect()
    assert response.tool_calls == (
        ToolCall("call_0", "lookup_city", '{"q": "Bergen"}'),
        ToolCall("call_1", "lookup_city", '{"q": "Tromsø"}'),
        ToolCall("call_srv_7", "local_time", '{"tz": "Europe/Oslo"}'),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(140, 31)
    assert response.text == ""


async def test_stream_cut_before_done_is_truncated(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A body that ends without `done: true` raises StreamTruncatedError after the text."""
    server.routes[CHAT_PATH] = ndjson("chat_truncated.ndjson")
    model = provider_for(http, server.url).model("llama3.2")
    texts = []
    with pytest.raises(StreamTruncatedError):
        async with await model.stream("Go") as stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
    assert "".join(texts) == "Half an answer"


async def test_in_band_error_before_content(http: HTTPSessionHolder, server: LocalServer) -> None:
    """An error line before any delta raises the typed error at the first read."""
    server.routes[CHAT_PATH] = ndjson("chat_error_first.ndjson")
    model = provider_for(http, server.url).model("llama3.2")
    stream = await model.stream("Go")
    with pytest.raises(ServerError, match="model runner has unexpectedly stopped") as caught:
        await stream.collect()
    assert caught.value.key == "ollama/llama3.2"
    assert stream.closed


async def test_in_band_error_after_content(http: HTTPSessionHolder, server: LocalServer) -> None:
    """An error line after a delta raises the typed error once the text was handed out."""
    server.routes[CHAT_PATH] = ndjson("chat_error_mid.ndjson")
    model = provider_for(http, server.url).model("llama3.2")
    seen: list[object] = []
    with pytest.raises(ServerError, match="error was encountered while running"):
        async with await model.stream("Go") as stream:
            async for event in stream:
                seen.append(event)
    assert TextDelta("Sure, ") in seen


async def test_in_band_model_not_found_is_typed(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """An in-band error keeps its meaning: a missing model is ModelNotFoundError."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b'{"error":"model \\"nope\\" not found, try pulling it first"}\n',
            content_type="application/x-ndjson",
        )

    server.routes[CHAT_PATH] = handle
    stream = await provider_for(http, server.url).model("nope").stream("Go")
    with pytest.raises(ModelNotFoundError, match="ollama pull nope"):
        await stream.collect()


async def test_real_server_generate(http: HTTPSessionHolder, server: LocalServer) -> None:
    """generate over a real connection parses the reply and returns the connection."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.json_response(reply("Hei!"))

    server.routes[CHAT_PATH] = handle
    response = await provider_for(http, server.url).model("llama3.2").generate("Hello")
    assert response.text == "Hei!"
    assert server.requests[0].json()["stream"] is False


async def test_leaving_a_stream_early_releases_the_connection(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Breaking out after the first delta, or closing before reading, leaks nothing."""
    server.routes[CHAT_PATH] = ndjson("chat_text.ndjson")
    model = provider_for(http, server.url).model("llama3.2")
    async with await model.stream("Go") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert acquired(http) == 0
    unread = await model.stream("Go")
    assert acquired(http) == 1
    await unread.aclose()
    assert acquired(http) == 0


async def test_cancelling_a_stalled_stream_releases_the_connection(
    http: HTTPSessionHolder,
    server: LocalServer,
) -> None:
    """Cancelling a read that waits on a stalled server closes the connection."""
    first = fixture("chat_text.ndjson").split(b"\n", 1)[0] + b"\n"

    server.routes[CHAT_PATH] = play(
        first, chunk=len(first), content_type="application/x-ndjson", end="stall"
    )
    model = provider_for(http, server.url).model("llama3.2")
    seen: list[object] = []
    with anyio.move_on_after(0.2) as scope:
        async with await model.stream("Go") as stream:
            async for event in stream:
                seen.append(event)
    assert scope.cancelled_caught
    assert TextDelta("The ") in seen
    assert acquired(http) == 0


ERROR_CASES = [
    pytest.param(
        404,
        'model "llama9" not found, try pulling it first',
        None,
        ModelNotFoundError,
        "ollama pull llama9",
        id="model-not-found",
    ),
    pytest.param(
        404,
        "model 'llama9:70b' not found",
        None,
        ModelNotFoundError,
        "ollama pull llama9",
        id="model-not-found-quoted",
    ),
    pytest.param(404, "404 page not found", None, BadRequestError, "base URL", id="wrong-path"),
    pytest.param(
        400,
        "the input length exceeds the context length",
        None,
        ContextLengthError,
        "context length",
        id="context-length",
    ),
    pytest.param(
        400,
        "request blocked by content policy",
        None,
        ContentPolicyError,
        "content policy",
        id="content-policy",
    ),
    pytest.param(
        400,
        "registry.ollama.ai/library/gemma:2b does not support tools",
        None,
        UnsupportedRequestError,
        "does not support tools",
        id="no-tools",
    ),
    pytest.param(401, "unauthorized", None, AuthenticationError, "OLLAMA_API_KEY", id="auth"),
    pytest.param(
        429, "too many requests", {"Retry-After": "7"}, RateLimitError, "too many", id="rate"
    ),
    pytest.param(
        429,
        "you (ana) have reached your weekly usage limit, upgrade for higher limits",
        None,
        QuotaExceededError,
        "weekly usage limit",
        id="quota",
    ),
    pytest.param(
        503,
        "server busy, please try again.  maximum pending requests exceeded",
        None,
        OverloadedError,
        "server busy",
        id="busy",
    ),
    pytest.param(
        500, "llama runner process has terminated", None, ServerError, "terminated", id="500"
    ),
    pytest.param(502, "cloud model unreachable", None, ServerError, "unreachable", id="502"),
    pytest.param(
        500, "model runner: file not found", None, ServerError, "file not found", id="500-nf"
    ),
]


@pytest.mark.parametrize(("status", "error", "headers", "kind", "text"), ERROR_CASES)
@pytest.mark.parametrize("call", ["generate", "stream"])
async def test_http_errors_are_mapped(
    http: HTTPSessionHolder,
    call: str,
    status: int,
    error: str,
    headers: dict[str, str] | None,
    kind: type[ProviderError],
    text: str,
    server: LocalServer,
) -> None:
    """Each error status and body maps to its typed error, raised before any stream."""
    server.routes[CHAT_PATH] = error_reply(status, error, headers)
    model = provider_for(http, server.url).model("llama9")
    with pytest.raises(ProviderError) as caught:
        if call == "generate":
            await model.generate("Go")
        else:
            await model.stream("Go")
    assert type(caught.value) is kind
    assert text in str(caught.value)
    assert caught.value.status == status
    assert caught.value.key == "ollama/llama9"
    if headers:
        assert caught.value.retry_after == 7.0


async def test_list_models(http: HTTPSessionHolder, server: LocalServer) -> None:
    """list_models returns the names from GET /api/tags."""

    async def tags(request: web.Request) -> web.StreamResponse:
        return web.Response(body=fixture("tags.json"), content_type="application/json")

    server.routes[TAGS_PATH] = tags
    names = await provider_for(http, server.url).list_models()
    assert names == ["llama3.2:latest", "qwen3:8b"]
    assert [request.path for request in server.requests] == ["/api/tags"]


async def test_list_models_rejects_a_bad_reply(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A tags reply without a models list is a ResponseFormatError."""

    async def tags(request: web.Request) -> web.StreamResponse:
        return web.json_response({"oops": []})

    server.routes[TAGS_PATH] = tags
    with pytest.raises(ResponseFormatError, match="models list"):
        await provider_for(http, server.url).list_models()


async def test_connection_refused_says_ollama_is_not_running(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A refused connection says Ollama does not seem to be running at the host."""
    url = closed_port_url()
    model = provider_for(http, url).model("llama3.2")
    with pytest.raises(ProviderConnectionError) as caught:
        await model.generate("hi")
    assert f"Ollama does not seem to be running at {url}" in str(caught.value)
    assert "ollama serve" in str(caught.value)
    with pytest.raises(ProviderConnectionError, match="does not seem to be running"):
        await model.stream("hi")


# --------------------------------------------------------------------------- credentials


async def test_cloud_without_a_key_fails_at_call_time(http: HTTPSessionHolder) -> None:
    """ollama.com without a key builds fine; the call raises and names OLLAMA_API_KEY."""
    provider = provider_for(http, "https://ollama.com")
    model = provider.model("gpt-oss:120b")
    with aioresponses() as mock:
        with pytest.raises(AuthenticationError, match="OLLAMA_API_KEY"):
            await model.generate("hi")
        with pytest.raises(AuthenticationError, match="OLLAMA_API_KEY"):
            await model.stream("hi")
        assert not mock.requests


async def test_the_key_never_shows(http: HTTPSessionHolder) -> None:
    """Neither reprs nor a rejected key's error contain the key."""
    provider = provider_for(http, api_key=SECRET)
    model = provider.model("llama3.2")
    with aioresponses() as mock:
        mock_post(mock, CHAT, status=401, payload={"error": "unauthorized"})
        with pytest.raises(AuthenticationError) as caught:
            await model.generate("hi")
    shown = [repr(provider), str(provider), repr(model), str(caught.value), repr(caught.value)]
    assert caught.value.status == 401
    assert "rejected the API key" in str(caught.value)
    assert not [text for text in shown if SECRET in text]


# --------------------------------------------------------------------------- the factory


def context(http: HTTPSessionHolder, **env: str) -> ProviderContext:
    """A provider context whose environment is exactly `env`."""
    return ProviderContext(http=http, clock=ManualClock(), env=env.get)


@pytest.mark.parametrize(
    ("dsn", "env_host", "base_url"),
    [
        ("ollama://", None, DEFAULT_BASE_URL),
        ("ollama://", "gpu-box:8080", "http://gpu-box:8080"),
        ("ollama://127.0.0.1:11434", "ignored", "http://127.0.0.1:11434"),
        ("ollama://gpu-box", None, "http://gpu-box:11434"),
        ("ollama://ollama.com", None, "https://ollama.com"),
        ("ollama+https://llm.example.com/ollama", None, "https://llm.example.com/ollama"),
        ("ollama+http://[::1]:9000", None, "http://[::1]:9000"),
    ],
)
def test_factory_base_url(dsn: str, env_host: str | None, base_url: str) -> None:
    """The DSN's host wins, then OLLAMA_HOST, then the local default."""
    env = {"OLLAMA_HOST": env_host} if env_host else {}
    provider = ollama_factory("local", DSN.parse(dsn), context(HTTPSessionHolder(), **env))
    assert provider.base_url == base_url
    assert provider.name == "local"


@pytest.mark.parametrize(
    ("value", "base_url"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        (":56789", "http://127.0.0.1:56789"),
        ("example.com:56789/", "http://example.com:56789"),
        ('"http://example.com"', "http://example.com"),
        ("https://example.com:8443/base/", "https://example.com:8443/base"),
        ("[::1]:7000", "http://[::1]:7000"),
    ],
)
def test_parse_ollama_host(value: str | None, base_url: str) -> None:
    """OLLAMA_HOST is read as the official clients read it."""
    assert parse_ollama_host(value) == base_url


@pytest.mark.parametrize("value", ["ftp://example.com", "example.com:99999", "host:port"])
def test_parse_ollama_host_rejects_nonsense(value: str) -> None:
    """A bad scheme or port in OLLAMA_HOST is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="OLLAMA_HOST"):
        parse_ollama_host(value)


async def test_factory_key_from_dsn_then_env(http: HTTPSessionHolder) -> None:
    """The DSN credential wins over OLLAMA_API_KEY; either is sent as a Bearer token."""
    for dsn, expected in (("ollama://dsn-key@", "dsn-key"), ("ollama://", "env-key")):
        provider = ollama_factory("o", DSN.parse(dsn), context(http, OLLAMA_API_KEY="env-key"))
        with aioresponses() as mock:
            mock_post(mock, CHAT, payload=reply())
            await provider.model("m").generate("hi")
            _, headers = sent(mock)
        assert headers["Authorization"] == f"Bearer {expected}"
        assert expected not in repr(provider)


def test_factory_timeouts_from_the_query() -> None:
    """Timeout keys in the query set the timeouts; others keep the on-demand defaults."""
    dsn = DSN.parse("ollama://?headers=600&idle=30")
    provider = ollama_factory("o", dsn, context(HTTPSessionHolder()))
    assert provider._timeouts == attrs.evolve(ON_DEMAND_TIMEOUTS, headers=600.0, idle=30.0)
    plain = ollama_factory("o", DSN.parse("ollama://?connect=2"), context(HTTPSessionHolder()))
    # A cold model load may take minutes: more room for the headers than a hosted API.
    assert plain._timeouts == attrs.evolve(ON_DEMAND_TIMEOUTS, connect=2.0)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"idel": "3"}, "ollama provider .o.: unknown DSN query key"),
        ({"idle": "soon"}, "positive number"),
        ({"connect": "0"}, "positive number"),
        ({"headers": "inf"}, "positive number"),
        ({"first_event": "60"}, "split in two"),
    ],
)
def test_factory_rejects_bad_queries(query: dict[str, str], message: str) -> None:
    """Unknown keys and bad numbers are ConfigurationErrors naming the problem."""
    dsn = DSN(scheme="ollama", query=MappingProxyType(query))
    with pytest.raises(ConfigurationError, match=message):
        ollama_factory("o", dsn, context(HTTPSessionHolder()))


def test_model_is_cached_and_needs_no_io() -> None:
    """model() is cached per id and builds without a running loop or a session."""
    holder = HTTPSessionHolder()
    provider = OllamaProvider("ollama", api_key=None, base_url=LOCAL + "/", http=holder)
    assert isinstance(provider, Provider)
    assert isinstance(provider, ModelLister)
    assert isinstance(provider.model("llama3.2"), AsyncModel)
    assert provider.model("llama3.2").capabilities == builtin_capabilities("ollama", "llama3.2")
    assert provider.model("llama3.2") is provider.model("llama3.2")
    assert provider.model("llama3.2") is not provider.model("qwen3")
    assert provider.base_url == LOCAL
    assert repr(provider.model("qwen3")) == "<OllamaModel ollama/qwen3>"
