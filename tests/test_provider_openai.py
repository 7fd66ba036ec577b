"""The built-in `openai` provider: request shapes, reply parsing, streams, errors, factories.

Request and reply shapes use aioresponses; streams and faults run against a real
`aiohttp.web` server on 127.0.0.1 that writes the fixture bodies in small chunks (the
`server` fixture, which fails a test that leaves a connection checked out).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
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
    ErrorClass,
    FinishReason,
    HTTPSessionHolder,
    ImagePart,
    Message,
    ModelLister,
    ModelNotFoundError,
    MonotonicClock,
    OverloadedError,
    Provider,
    ProviderConnectionError,
    ProviderContext,
    ProviderError,
    ProviderTimeoutError,
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
    classify,
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
from majordomo_async._http import Timeouts
from majordomo_async._providers._base import USER_AGENT
from majordomo_async._providers.openai import (
    OPENAI_COMPATIBLE_PRESETS,
    OPENAI_PRESET,
    OpenAIProvider,
    Preset,
    _build_body,
    _finish_reason,
    _parse_response,
    openai_compatible_factory,
    openai_factory,
)
from majordomo_async._providers.openai import _usage as openai_usage

from .helpers.mocking import CompatResponse
from .helpers.servers import (
    Handler,
    LocalServer,
    acquired_connections,
    closed_port_url,
    play,
    respond,
)

FIXTURES = Path(__file__).parent / "fixtures" / "openai"
KEY = "sk-test-0123456789abcdefSECRET"
OPENAI_URL = "https://api.openai.com/v1"
CHAT_URL = f"{OPENAI_URL}/chat/completions"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"


def fixture(name: str) -> bytes:
    """The bytes of a fixture file."""
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    """A JSON fixture, decoded."""
    return json.loads(fixture(name))


def mock_post(mocked: aioresponses, url: str = CHAT_URL, **kwargs: Any) -> None:
    """Answer POSTs to `url` (with a chat completion unless told otherwise)."""
    kwargs.setdefault("payload", fixture_json("chat_text.json"))
    mocked.post(url, response_class=CompatResponse, **kwargs)


def make_provider(
    http: HTTPSessionHolder,
    base_url: str = OPENAI_URL,
    *,
    api_key: str | None = KEY,
    preset: Preset | None = None,
    timeouts: Timeouts | None = None,
) -> OpenAIProvider:
    """A provider named "openai" on `base_url`."""
    return OpenAIProvider(
        "openai", api_key=api_key, base_url=base_url, http=http, timeouts=timeouts, preset=preset
    )


def context(http: HTTPSessionHolder, env: Mapping[str, str] | None = None) -> ProviderContext:
    """A factory context with a fixed environment."""
    return ProviderContext(http=http, clock=MonotonicClock(), env=dict(env or {}).get)


def sent(mocked: aioresponses, url: str = CHAT_URL, method: str = "POST") -> tuple[Any, Any]:
    """(decoded JSON body, headers) of the one request aioresponses saw for `url`."""
    calls = mocked.requests[(method, URL(url))]
    assert len(calls) == 1
    kwargs = calls[0].kwargs
    data = kwargs.get("data")
    return (json.loads(data) if data else None), kwargs["headers"]


async def body_for(request: Request | str, *options: Any, http: HTTPSessionHolder) -> Any:
    """The JSON body `generate()` sends for `request` (replying with a plain answer)."""
    with aioresponses() as mocked:
        mock_post(mocked)
        await make_provider(http).model("gpt-4o-mini").generate(request, *options)
        body, _ = sent(mocked)
    return body


# --------------------------------------------------------------------------- a local server


def sse(body: bytes, *, chunk: int = 7, **kwargs: Any) -> Handler:
    """A handler streaming SSE `body` in `chunk`-byte pieces (see `play`), with a request id."""
    return play(body, chunk=chunk, headers={"x-request-id": "req_s1"}, **kwargs)


def reply(
    status: int, body: bytes, content_type: str = "application/json", **headers: str
) -> Handler:
    """A handler answering `status` with `body` at once, with a request id."""
    return respond(
        status, body, content_type=content_type, headers={"x-request-id": "req_e1", **headers}
    )


async def read_all(stream: Any) -> list[Any]:
    """Every event of `stream`, closing it."""
    async with stream:
        return [event async for event in stream]


# --------------------------------------------------------------------------- request shapes


async def test_plain_text_request_body_and_headers(http: HTTPSessionHolder) -> None:
    """A plain prompt is one user message; the key goes in a Bearer header."""
    with aioresponses() as mocked:
        mock_post(mocked)
        await make_provider(http).model("gpt-4o-mini").generate("Hello")
        body, headers = sent(mocked)
    assert body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
    assert headers == {
        "User-Agent": USER_AGENT,
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
    }


async def test_system_prompt_leads_the_messages(http: HTTPSessionHolder) -> None:
    """`system` becomes a leading system message (not `developer`)."""
    body = await body_for("Hi", system("Be terse."), http=http)
    assert body["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
    ]


async def test_sampling_parameters(http: HTTPSessionHolder) -> None:
    """temperature, top_p, stop and max_tokens (as max_completion_tokens for OpenAI)."""
    body = await body_for(
        "Hi", temperature(0.2), top_p(0.9), max_tokens(64), stop("\n\n", "END"), http=http
    )
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 64,
        "stop": ["\n\n", "END"],
    }


def test_compatible_servers_get_max_tokens_and_mistral_no_stream_options() -> None:
    """Presets send `max_tokens`; Mistral's streams carry no `stream_options`."""
    request = Request("Hi", max_tokens=32)
    groq = _build_body(request, "m", stream=True, preset=OPENAI_COMPATIBLE_PRESETS["groq"])
    mistral = _build_body(request, "m", stream=True, preset=OPENAI_COMPATIBLE_PRESETS["mistral"])
    openai = _build_body(request, "m", stream=True, preset=OPENAI_PRESET)
    assert groq["max_tokens"] == 32 and "max_completion_tokens" not in groq
    assert groq["stream_options"] == {"include_usage": True}
    assert mistral["max_tokens"] == 32 and "stream_options" not in mistral
    assert openai["max_completion_tokens"] == 32 and openai["stream"] is True
    assert openai["stream_options"] == {"include_usage": True}


WEATHER = Tool(
    "weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("weather", {"type": "function", "function": {"name": "weather"}}),
    ],
)
async def test_tools_and_tool_choice(http: HTTPSessionHolder, choice: str, wire: Any) -> None:
    """Tools are function definitions; a tool name forces that function."""
    body = await body_for("Weather?", tools(WEATHER), tool_choice(choice), http=http)
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "Current weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    assert body["tool_choice"] == wire


async def test_tool_results_follow_up(http: HTTPSessionHolder) -> None:
    """Assistant tool calls replay as `tool_calls`; each result is its own tool message."""
    first = ToolCall("call_wx1", "weather", '{"city": "Bergen"}')
    second = ToolCall("call_tm2", "local_time", '{"tz": "Europe/Oslo"}')
    request = Request(
        [
            Message.user("Weather and time in Bergen?"),
            Message.assistant("Checking.", ToolCallPart(first), ToolCallPart(second)),
            Message(
                "tool",
                [ToolResultPart("call_wx1", '{"c": 9}'), ToolResultPart("call_tm2", "14:05")],
            ),
            Message.assistant(ToolCallPart(first)),
            Message.tool_result("call_wx1", "timeout", is_error=True),
        ]
    )
    body = await body_for(request, http=http)
    call_1 = {
        "id": "call_wx1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Bergen"}'},
    }
    call_2 = {
        "id": "call_tm2",
        "type": "function",
        "function": {"name": "local_time", "arguments": '{"tz": "Europe/Oslo"}'},
    }
    assert body["messages"] == [
        {"role": "user", "content": "Weather and time in Bergen?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [call_1, call_2]},
        {"role": "tool", "tool_call_id": "call_wx1", "content": '{"c": 9}'},
        {"role": "tool", "tool_call_id": "call_tm2", "content": "14:05"},
        {"role": "assistant", "content": None, "tool_calls": [call_1]},
        {"role": "tool", "tool_call_id": "call_wx1", "content": "timeout"},
    ]


async def test_inline_and_url_images(http: HTTPSessionHolder) -> None:
    """Inline bytes become a base64 data: URL; a URL image is sent as given."""
    request = Message.user(
        "Compare these.",
        ImagePart.from_bytes(b"\x89PNG\r\n", "image/png"),
        ImagePart.from_url("https://example.com/cat.jpg"),
    )
    body = await body_for(Request([request]), http=http)
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


async def test_json_mode_and_json_schema(http: HTTPSessionHolder) -> None:
    """JSONMode is `json_object`; JSONSchema is `json_schema` with name, schema, strict."""
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    plain = await body_for("JSON please", json_mode(), http=http)
    shaped = await body_for("JSON please", json_schema(schema, name="answer"), http=http)
    assert plain["response_format"] == {"type": "json_object"}
    assert shaped["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    "message",
    [
        Message.assistant(ImagePart.from_url("https://example.com/a.png")),
        Message.user(ToolCallPart(ToolCall("c1", "f"))),
        Message("tool", ["just text"]),
    ],
)
async def test_parts_the_wire_cannot_carry(http: HTTPSessionHolder, message: Message) -> None:
    """A part in a place this wire format has no field for raises UnsupportedRequestError."""
    with aioresponses() as mocked, pytest.raises(UnsupportedRequestError) as caught:
        await make_provider(http).model("gpt-4o-mini").generate(Request([message]))
    assert not mocked.requests
    assert caught.value.provider == "openai" and caught.value.model == "gpt-4o-mini"


# --------------------------------------------------------------------------- reply parsing


async def test_text_reply_usage_finish_and_request_id(http: HTTPSessionHolder) -> None:
    """Text, usage, finish reason, request id and model key come from the reply."""
    with aioresponses() as mocked:
        mock_post(mocked, headers={"x-request-id": "req_9"})
        response = await make_provider(http).model("gpt-4o-mini").generate("Capital of Norway?")
    assert response.text == "Oslo is the capital of Norway."
    assert response.usage == Usage(21, 8)
    assert response.finish_reason is FinishReason.STOP
    assert response.request_id == "req_9"
    assert response.model == "openai/gpt-4o-mini"
    assert response.tool_calls == ()
    assert response.raw["id"] == "chatcmpl-a1"


def test_parallel_tool_calls_are_parsed() -> None:
    """Each tool call keeps its id, name and JSON-text arguments, in order."""
    response = _parse_response(fixture_json("chat_tools.json"), "openai/gpt-4o-mini", {})
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.text == ""
    assert response.tool_calls == (
        ToolCall("call_wx1", "weather", '{"city": "Bergen"}'),
        ToolCall("call_tm2", "local_time", '{"tz": "Europe/Oslo"}'),
    )
    assert response.tool_calls[1].parse_arguments() == {"tz": "Europe/Oslo"}
    assert response.usage == Usage(87, 39)


def test_refusal_keeps_the_wire_finish_and_is_reported() -> None:
    """A declined structured-output request keeps the wire's finish reason ("stop"), with
    no text; the refusal text is `Response.refusal` (it no longer means CONTENT_FILTER)."""
    response = _parse_response(fixture_json("chat_refusal.json"), "openai/gpt-4o", {})
    assert response.finish_reason is FinishReason.STOP
    assert response.refusal == "I can't help with that request."
    assert response.text == ""


@pytest.mark.parametrize(
    ("wire", "ours"),
    [
        ("stop", FinishReason.STOP),
        (None, FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("model_length", FinishReason.LENGTH),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("function_call", FinishReason.TOOL_CALLS),
        ("content_filter", FinishReason.CONTENT_FILTER),
        ("eos_token", FinishReason.OTHER),
    ],
)
def test_finish_reasons_are_normalised(wire: str | None, ours: FinishReason) -> None:
    """Every documented finish reason maps to ours; an unknown one is OTHER."""
    assert _finish_reason(wire) is ours


@pytest.mark.parametrize(
    "body", [[], {"choices": []}, {"choices": [{"index": 0}]}, {"choices": "x"}, "text"]
)
def test_malformed_replies_raise_response_format_error(body: Any) -> None:
    """A reply that is not a chat completion is a ResponseFormatError, not a KeyError."""
    with pytest.raises(ResponseFormatError, match="unexpected chat completion reply"):
        _parse_response(body, "openai/gpt-4o-mini", {})


def test_an_error_body_with_status_200_is_raised() -> None:
    """OpenRouter reports late failures as HTTP 200 with an error body: it is raised."""
    body = {"error": {"code": 502, "message": "Upstream provider returned an invalid response"}}
    with pytest.raises(ServerError) as caught:
        _parse_response(body, "openrouter/x/y", {"x-request-id": "req_7"})
    assert caught.value.status == 502 and caught.value.request_id == "req_7"


# --------------------------------------------------------------------------- streams


async def test_text_stream_collects_text_usage_and_finish(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Chunked SSE (multi-byte characters split) aggregates into the full answer."""
    server.routes[CHAT_PATH] = sse(fixture("text_stream.sse"))
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("gpt-4o-mini").stream("Greet me")
    response = await stream.collect()
    assert response.text == "Hej från Malmö!"
    assert response.usage == Usage(11, 4)
    assert response.finish_reason is FinishReason.STOP
    assert response.request_id == "req_s1"
    assert response.model == "openai/gpt-4o-mini"
    assert server.requests[0].json()["stream"] is True
    assert server.requests[0].json()["stream_options"] == {"include_usage": True}
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_stream_event_order(http: HTTPSessionHolder, server: LocalServer) -> None:
    """StreamStart first, deltas, usage, and StreamEnd last (only at `[DONE]`)."""
    server.routes[CHAT_PATH] = sse(fixture("text_stream.sse"), chunk=64)
    base = server.url + "/v1"
    events = await read_all(await make_provider(http, base).model("m").stream("Hi"))
    assert events == [
        StreamStart("openai/m", "req_s1", served_model="gpt-4o-mini-2024-07-18"),
        TextDelta("Hej"),
        TextDelta(" från"),
        TextDelta(" Malmö!"),
        UsageUpdate(Usage(11, 4)),
        StreamEnd(FinishReason.STOP),
    ]


async def test_tool_call_deltas_assemble_into_calls(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Fragments keyed by index form two complete parallel tool calls."""
    server.routes[CHAT_PATH] = sse(fixture("tool_stream.sse"), chunk=11)
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("gpt-4o-mini").stream("Bergen?")
    events = await read_all(stream)
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(0, "call_wx1", "weather", "")
    assert deltas[1] == ToolCallDelta(0, None, None, '{"city":')
    response = stream.response
    assert response.tool_calls == (
        ToolCall("call_wx1", "weather", '{"city": "Bergen"}'),
        ToolCall("call_tm2", "local_time", '{"tz": "Europe/Oslo"}'),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(87, 39)


async def test_stream_cut_before_done_is_truncated(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A body that ends cleanly without `data: [DONE]` raises StreamTruncatedError."""
    server.routes[CHAT_PATH] = sse(fixture("truncated_stream.sse"))
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Tell a story")
    seen: list[Any] = []
    with pytest.raises(StreamTruncatedError, match=r"\[DONE\]"):
        async with stream:
            async for event in stream:
                seen.append(event)
    assert TextDelta("Once upon") in seen
    assert classify(StreamTruncatedError("x")) is ErrorClass.TRANSIENT


async def test_in_band_error_before_the_first_delta(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """An error event before any content raises the mapped error and no content."""
    server.routes[CHAT_PATH] = sse(fixture("error_before_delta.sse"))
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Hi")
    seen: list[Any] = []
    with pytest.raises(ServerError, match="had an error") as caught:
        async with stream:
            async for event in stream:
                seen.append(event)
    assert seen == []
    assert caught.value.code == "server_error" and caught.value.status is None
    assert caught.value.request_id == "req_s1"


async def test_in_band_error_after_a_delta(http: HTTPSessionHolder, server: LocalServer) -> None:
    """An error event after content raises the error its status names, after the text."""
    server.routes[CHAT_PATH] = sse(fixture("error_after_delta.sse"))
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Hi")
    seen: list[Any] = []
    with pytest.raises(ServerError, match="invalid response") as caught:
        async with stream:
            async for event in stream:
                seen.append(event)
    assert TextDelta("The first") in seen
    assert caught.value.status == 502


async def test_in_band_context_error_is_typed(http: HTTPSessionHolder, server: LocalServer) -> None:
    """llama.cpp's in-band `exceed_context_size_error` is a ContextLengthError."""
    server.routes[CHAT_PATH] = sse(fixture("context_in_band.sse"))
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Hi")
    with pytest.raises(ContextLengthError) as caught:
        await stream.collect()
    assert caught.value.status == 400 and caught.value.code == "exceed_context_size_error"


async def test_json_error_instead_of_a_stream(http: HTTPSessionHolder, server: LocalServer) -> None:
    """A 200 JSON error body where a stream was expected raises the mapped error."""
    body = json.dumps({"error": {"code": 429, "message": "slow down"}}).encode()
    server.routes[CHAT_PATH] = reply(200, body)
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Hi")
    with pytest.raises(RateLimitError, match="slow down"):
        await stream.collect()


async def test_breaking_out_early_releases_the_connection(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Leaving a stream after the first delta closes its connection (checked at teardown)."""
    server.routes[CHAT_PATH] = sse(fixture("text_stream.sse"), end="stall")
    base = server.url + "/v1"
    async with await make_provider(http, base).model("m").stream("Hi") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert stream.closed


async def test_a_stream_closed_unread_releases_the_connection(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A stream closed before it is iterated still gives its connection back."""
    server.routes[CHAT_PATH] = sse(fixture("text_stream.sse"), end="stall")
    base = server.url + "/v1"
    stream = await make_provider(http, base).model("m").stream("Hi")
    await stream.aclose()
    assert acquired_connections(http.get()) == 0


async def test_a_stalled_stream_times_out(http: HTTPSessionHolder, server: LocalServer) -> None:
    """A stream that goes silent past the idle limit raises ProviderTimeoutError."""
    server.routes[CHAT_PATH] = sse(fixture("truncated_stream.sse"), end="stall")
    base = server.url + "/v1"
    provider = make_provider(http, base, timeouts=Timeouts(idle=0.2))
    stream = await provider.model("m").stream("Hi")
    with pytest.raises(ProviderTimeoutError):
        await stream.collect()


async def test_a_finished_stream_returns_its_connection_to_the_pool(
    http: HTTPSessionHolder,
    server: LocalServer,
) -> None:
    """After `[DONE]` the rest of the body is read, so the next call reuses the connection."""
    # The body's end comes a moment after `[DONE]`, in a packet of its own.
    server.routes[CHAT_PATH] = sse(fixture("text_stream.sse"), chunk=4096, end_after=0.05)
    base = server.url + "/v1"
    model = make_provider(http, base).model("m")
    await (await model.stream("one")).collect()
    await (await model.stream("two")).collect()
    assert server.requests[0].peer is not None
    assert server.requests[0].peer == server.requests[1].peer


# --------------------------------------------------------------------------- HTTP errors


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "code", "retry_after"),
    [
        (404, "error_model_not_found.json", {}, ModelNotFoundError, "model_not_found", None),
        (400, "error_context_length.json", {}, ContextLengthError, "context_length_exceeded", None),
        (400, "error_invalid_prompt.json", {}, ContentPolicyError, "invalid_prompt", None),
        (401, "error_invalid_api_key.json", {}, AuthenticationError, "invalid_api_key", None),
        (
            429,
            "error_rate_limit.json",
            {"Retry-After": "7"},
            RateLimitError,
            "rate_limit_exceeded",
            7.0,
        ),
        (
            429,
            "error_rate_limit.json",
            {"retry-after-ms": "250", "Retry-After": "1"},
            RateLimitError,
            "rate_limit_exceeded",
            0.25,
        ),
        (429, "error_insufficient_quota.json", {}, QuotaExceededError, "insufficient_quota", None),
        (503, "error_overloaded.json", {}, OverloadedError, "server_is_overloaded", None),
        (500, "error_server.json", {}, ServerError, "server_error", None),
        (404, "error_wrong_path.json", {}, BadRequestError, None, None),
        (400, "error_deepseek_model.json", {}, ModelNotFoundError, "invalid_request_error", None),
        (422, "error_mistral_422.json", {}, BadRequestError, "invalid_request_error", None),
        (403, "error_openrouter_moderation.json", {}, ContentPolicyError, None, None),
        (402, "error_openrouter_credits.json", {}, QuotaExceededError, None, None),
        (498, "error_server.json", {}, OverloadedError, "server_error", None),
    ],
)
async def test_http_errors_are_mapped(
    http: HTTPSessionHolder,
    status: int,
    body: str,
    headers: dict[str, str],
    error: type[ProviderError],
    code: str | None,
    retry_after: float | None,
    server: LocalServer,
) -> None:
    """Each documented error reply becomes its typed error with code, retry hint, request id."""
    server.routes[CHAT_PATH] = reply(status, fixture(body), **headers)
    base = server.url + "/v1"
    with pytest.raises(ProviderError) as caught:
        await make_provider(http, base).model("gpt-9-turbo").generate("Hi")
    exc = caught.value
    assert type(exc) is error
    assert (exc.status, exc.code, exc.retry_after) == (status, code, retry_after)
    assert exc.request_id == "req_e1"
    assert (exc.provider, exc.model) == ("openai", "gpt-9-turbo")


async def test_error_classes_drive_the_retry_policy(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A rate limit is transient; an exhausted quota and a missing model are permanent."""
    server.routes.update(
        {
            CHAT_PATH: reply(429, fixture("error_insufficient_quota.json")),
            MODELS_PATH: reply(429, fixture("error_rate_limit.json")),
        }
    )
    base = server.url + "/v1"
    provider = make_provider(http, base)
    with pytest.raises(QuotaExceededError) as quota:
        await provider.model("m").generate("Hi")
    with pytest.raises(RateLimitError) as limited:
        await provider.list_models()
    assert classify(quota.value) is ErrorClass.PERMANENT
    assert classify(limited.value) is ErrorClass.TRANSIENT


async def test_an_html_gateway_page_is_summarised(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A proxy's HTML 502 page is a ServerError quoting its title, not the whole page."""
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    server.routes[CHAT_PATH] = reply(502, page, content_type="text/html")
    base = server.url + "/v1"
    with pytest.raises(ServerError, match="502 Bad Gateway"):
        await make_provider(http, base).model("m").generate("Hi")


async def test_stream_http_errors_raise_before_any_event(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """An error status on a streaming call raises from `stream()` itself."""
    server.routes[CHAT_PATH] = reply(404, fixture("error_model_not_found.json"))
    base = server.url + "/v1"
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        await make_provider(http, base).model("gpt-9-turbo").stream("Hi")


# --------------------------------------------------------------------------- models


async def test_list_models(http: HTTPSessionHolder, server: LocalServer) -> None:
    """`list_models` returns the ids of `GET /models`, with the key sent."""
    server.routes[MODELS_PATH] = reply(200, fixture("models.json"))
    base = server.url + "/v1"
    ids = await make_provider(http, base).list_models()
    assert ids == ["gpt-4o-mini", "gpt-4o"]
    assert (server.requests[0].method, server.requests[0].path) == ("GET", "/v1/models")
    assert server.requests[0].headers["Authorization"] == f"Bearer {KEY}"


async def test_list_models_accepts_a_bare_list(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A server that answers `/models` with a bare JSON array still lists its ids."""
    server.routes[MODELS_PATH] = reply(200, fixture("models_bare_list.json"))
    base = server.url + "/v1"
    ids = await make_provider(http, base).list_models()
    assert ids == ["meta-llama/Llama-3.3-70B-Instruct-Turbo", "Qwen/Qwen2.5-72B-Instruct-Turbo"]


# --------------------------------------------------------------------------- keys


async def test_a_missing_key_fails_the_call_not_construction(http: HTTPSessionHolder) -> None:
    """Without a key the call raises AuthenticationError naming OPENAI_API_KEY, sending nothing."""
    provider = openai_factory("openai", DSN.parse("openai://"), context(http))
    model = provider.model("gpt-4o-mini")
    with aioresponses() as mocked:
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            await model.generate("Hi")
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            await model.stream("Hi")
        with pytest.raises(AuthenticationError, match="OPENAI_API_KEY"):
            await provider.list_models()
        assert not mocked.requests


async def test_the_key_never_appears_in_errors_or_reprs(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Even a server echoing the key back cannot put it in an error; reprs never show it."""
    echo = json.dumps({"error": {"message": f"bad key {KEY}", "code": "invalid_api_key"}})
    stream_echo = f'data: {{"error": {{"message": "bad key {KEY}"}}}}\n\n'.encode()
    server.routes.update(
        {
            CHAT_PATH: reply(401, echo.encode()),
            MODELS_PATH: reply(200, json.dumps({"error": {"message": KEY}}).encode()),
        }
    )
    errors: list[BaseException] = []
    base = server.url + "/v1"
    provider = make_provider(http, base)
    with pytest.raises(AuthenticationError) as caught:
        await provider.model("m").generate("Hi")
    errors.append(caught.value)
    server.routes[CHAT_PATH] = sse(stream_echo)
    stream = await make_provider(http, base).model("m").stream("Hi")
    with pytest.raises(ServerError) as in_band:
        await stream.collect()
    errors.append(in_band.value)
    refused = make_provider(http, f"{closed_port_url()}/v1")
    with pytest.raises(ProviderConnectionError) as connection:
        await refused.model("m").generate("Hi")
    errors.append(connection.value)
    texts = [repr(provider), repr(provider.model("m")), str(provider.__slots__)]
    for error in errors:
        cause: BaseException | None = error
        while cause is not None:
            texts += [str(cause), repr(cause)]
            cause = cause.__cause__
    assert all(KEY not in text for text in texts), [t for t in texts if KEY in t]
    assert "***" in str(errors[0])


# --------------------------------------------------------------------------- factories


async def test_openai_dsn_key_base_url_and_env(http: HTTPSessionHolder) -> None:
    """The DSN's key wins over OPENAI_API_KEY; the env key is used when the DSN has none."""
    env = {"OPENAI_API_KEY": "sk-from-env"}
    from_dsn = openai_factory(
        "openai", DSN.parse("openai://sk-from-dsn@api.openai.com/v1"), context(http, env)
    )
    from_env = openai_factory("openai", DSN.parse("openai://"), context(http, env))
    assert from_dsn.base_url == from_env.base_url == OPENAI_URL
    with aioresponses() as mocked:
        mock_post(mocked, repeat=True)
        await from_dsn.model("m").generate("Hi")
        await from_env.model("m").generate("Hi")
        calls = mocked.requests[("POST", URL(CHAT_URL))]
    assert [call.kwargs["headers"]["Authorization"] for call in calls] == [
        "Bearer sk-from-dsn",
        "Bearer sk-from-env",
    ]


async def test_generic_compatible_dsn(http: HTTPSessionHolder, server: LocalServer) -> None:
    """`openai+http://host:port/v1` talks plain HTTP and never borrows OPENAI_API_KEY."""
    env = {"OPENAI_API_KEY": "sk-openai-only"}
    server.routes[CHAT_PATH] = reply(200, fixture("chat_text.json"))
    base = server.url + "/v1"
    host_port = base.removeprefix("http://").removesuffix("/v1")
    provider = openai_factory(
        "local", DSN.parse(f"openai+http://{host_port}/v1"), context(http, env)
    )
    response = await provider.model("qwen").generate("Hi", max_tokens(8))
    assert provider.base_url == base
    assert "Authorization" not in server.requests[0].headers
    assert server.requests[0].json()["max_tokens"] == 8
    assert response.model == "local/qwen"
    bare = openai_factory("local", DSN.parse("openai+https://llm.internal"), context(http))
    assert bare.base_url == "https://llm.internal/v1"
    with pytest.raises(ConfigurationError, match="needs the server's address"):
        openai_factory("local", DSN.parse("openai+http://"), context(http))


def test_dsn_query_timeouts_and_headers(http: HTTPSessionHolder) -> None:
    """`connect`, `headers`, `idle`, `organization` and `project` come from the query."""
    dsn = DSN.parse("openai://k@api.openai.com/v1?connect=2&headers=30&idle=15&project=p1")
    provider = openai_factory("openai", dsn, context(http))
    assert provider.timeouts == Timeouts(connect=2.0, headers=30.0, idle=15.0)
    assert provider._headers("m")["OpenAI-Project"] == "p1"


@pytest.mark.parametrize(
    ("query", "message"),
    [("idle=-1", "'idle' needs a number"), ("idle=soon", "'idle' needs"), ("retries=3", "unknown")],
)
def test_bad_dsn_queries_are_configuration_errors(
    http: HTTPSessionHolder, query: str, message: str
) -> None:
    """A bad or unknown query key is a ConfigurationError naming it."""
    with pytest.raises(ConfigurationError, match=message):
        openai_factory("openai", DSN.parse(f"openai://?{query}"), context(http))


def test_the_preset_table() -> None:
    """Every documented server has a preset; local ones are plain HTTP and need no key."""
    assert set(OPENAI_COMPATIBLE_PRESETS) == {
        "groq",
        "deepseek",
        "openrouter",
        "together",
        "mistral",
        "xai",
        "fireworks",
        "vllm",
        "llamacpp",
        "lmstudio",
    }
    for name in ("vllm", "llamacpp", "lmstudio"):
        preset = OPENAI_COMPATIBLE_PRESETS[name]
        assert preset.base_url.startswith("http://127.0.0.1:") and not preset.requires_key
    for name in ("groq", "deepseek", "openrouter", "together", "mistral", "xai", "fireworks"):
        preset = OPENAI_COMPATIBLE_PRESETS[name]
        assert preset.base_url.startswith("https://") and preset.requires_key
        assert preset.env_vars == (f"{name.upper()}_API_KEY",)


def build(preset: str, dsn: str, http: HTTPSessionHolder, **env: str) -> OpenAIProvider:
    """The provider a preset's scheme factory builds for `dsn`."""
    provider = openai_compatible_factory(preset)(preset, DSN.parse(dsn), context(http, env))
    assert isinstance(provider, OpenAIProvider)
    return provider


async def test_preset_factories(http: HTTPSessionHolder) -> None:
    """A preset's factory uses its base URL and key variable, or the DSN's host."""
    groq = build("groq", "groq://", http, GROQ_API_KEY="gsk-1")
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert groq._headers("m")["Authorization"] == "Bearer gsk-1"
    assert build("groq", "groq://gsk-2@", http)._headers("m")["Authorization"] == "Bearer gsk-2"
    vllm = build("vllm", "vllm://gpu-box:9000", http)
    assert vllm.base_url == "http://gpu-box:9000/v1"
    assert vllm._headers("m") == {"User-Agent": USER_AGENT, "Content-Type": "application/json"}
    assert build("vllm", "vllm+https://gpu-box/api/v1", http).base_url == "https://gpu-box/api/v1"
    assert build("deepseek", "deepseek://k@eu.deepseek.example", http).base_url == (
        "https://eu.deepseek.example"
    )
    keyless = build("mistral", "mistral://", http)
    with pytest.raises(AuthenticationError, match="MISTRAL_API_KEY"):
        await keyless.model("mistral-small-latest").generate("Hi")
    with pytest.raises(ConfigurationError, match="known: groq"):
        openai_compatible_factory("nope")


def test_provider_and_models_satisfy_the_protocols(http: HTTPSessionHolder) -> None:
    """The provider is a Provider and ModelLister; models are cached AsyncModels."""
    provider = make_provider(http)
    model = provider.model("gpt-4o-mini")
    assert isinstance(provider, Provider) and isinstance(provider, ModelLister)
    assert isinstance(model, AsyncModel)
    assert provider.model("gpt-4o-mini") is model
    assert model.capabilities == builtin_capabilities("openai", "gpt-4o-mini")
    assert http._session is None  # construction and model() did no I/O


def test_a_dsn_with_the_root_path_addresses_a_server_mounted_at_the_root() -> None:
    """`openai+http://host:8000/` is the root: no `/v1` added; without a path, `/v1`."""
    context = ProviderContext(http=HTTPSessionHolder(), clock=MonotonicClock(), env=lambda _: None)
    root = openai_factory("p", DSN.parse("openai+http://127.0.0.1:8000/"), context)
    assert root.base_url == "http://127.0.0.1:8000"
    bare = openai_factory("p", DSN.parse("openai+http://127.0.0.1:8000"), context)
    assert bare.base_url == "http://127.0.0.1:8000/v1"
    groq = openai_compatible_factory("vllm")("p", DSN.parse("vllm://gpu-box:8000/"), context)
    assert groq.base_url == "http://gpu-box:8000"


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (None, None),
        ([1, 2], None),
        ({"prompt_tokens": 12, "completion_tokens": 5}, Usage(12, 5)),
        (  # OpenAI: cached and reasoning counts are parts of the totals
            {
                "prompt_tokens": 2006,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 256},
            },
            Usage(2006, 300, cached_input_tokens=1920, reasoning_tokens=256),
        ),
        (  # DeepSeek: cache hits at the top level, details absent or zero
            {"prompt_tokens": 90, "completion_tokens": 3, "prompt_cache_hit_tokens": 64},
            Usage(90, 3, cached_input_tokens=64),
        ),
        (
            {
                "prompt_tokens": 90,
                "completion_tokens": 3,
                "prompt_tokens_details": {"cached_tokens": 0},
                "prompt_cache_hit_tokens": 64,
            },
            Usage(90, 3, cached_input_tokens=64),
        ),
        (  # a server's cache writes (OpenRouter)
            {
                "prompt_tokens": 10,
                "completion_tokens": 1,
                "prompt_tokens_details": {"cache_write_tokens": 7},
            },
            Usage(10, 1, cache_write_tokens=7),
        ),
        (  # odd values count as nothing: bools, negatives, strings, floats, null details
            {
                "prompt_tokens": True,
                "completion_tokens": -4,
                "prompt_tokens_details": None,
                "completion_tokens_details": {"reasoning_tokens": "12"},
                "prompt_cache_hit_tokens": 2.5,
            },
            Usage(0, 0),
        ),
    ],
)
def test_usage_reads_every_count_a_compatible_server_sends(
    usage: object, expected: Usage | None
) -> None:
    assert openai_usage(usage) == expected
