"""The built-in Anthropic provider: request shapes, reply parsing, streams, errors, factory.

Request and reply shapes are checked with aioresponses; streams and faults run against a
real aiohttp server on 127.0.0.1 that plays the bodies in `tests/fixtures/anthropic/`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
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
    ErrorClass,
    FinishReason,
    HTTPSessionHolder,
    ImagePart,
    ManualClock,
    Message,
    ModelLister,
    ModelNotFoundError,
    OverloadedError,
    Provider,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    Registry,
    Request,
    ResponseFormatError,
    ServerError,
    StreamEnd,
    StreamEvent,
    StreamStart,
    StreamTruncatedError,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    UnsupportedRequestError,
    Usage,
    UsageUpdate,
    classify,
    json_mode,
    json_schema,
    max_tokens,
    tool_choice,
    tools,
)
from majordomo_async._http import Timeouts
from majordomo_async._providers._base import USER_AGENT
from majordomo_async._providers.anthropic import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_TOKENS,
    AnthropicModel,
    AnthropicProvider,
    _build_body,
    _parse_response,
    _StreamTranslator,
    anthropic_factory,
)
from majordomo_async._sse import ServerSentEvent

from .helpers.mocking import CompatResponse
from .helpers.servers import (
    Handler,
    LocalServer,
    acquired_connections,
    play,
    respond,
)

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
KEY = "sk-ant-test-0123456789-SECRET"
MODEL = "claude-test-1"
MESSAGES_URL = f"{DEFAULT_BASE_URL}/v1/messages"
WEATHER = Tool(
    "get_tide",
    "Tide times for a port",
    {"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]},
)


def fixture_text(name: str) -> str:
    """The text of fixture file `name`."""
    return (FIXTURES / name).read_text(encoding="utf-8")


def fixture_json(name: str) -> Any:
    """The decoded JSON of fixture file `name`."""
    return json.loads(fixture_text(name))


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """An Anthropic error body."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message, **extra},
        "request_id": "req_body_1",
    }


# --------------------------------------------------------------------------- fixtures


def anthropic(
    http: HTTPSessionHolder, base_url: str = DEFAULT_BASE_URL, **kwargs: Any
) -> AnthropicProvider:
    """A provider named "anthropic" with the test key."""
    kwargs.setdefault("api_key", KEY)
    return AnthropicProvider("anthropic", base_url=base_url, http=http, **kwargs)


def sse(name: str, *, chunk: int = 23, request_id: str = "req_stream_1") -> Handler:
    """A handler that plays SSE fixture `name` in `chunk`-byte writes."""
    body = fixture_text(name).encode()
    return play(body, chunk=chunk, headers={"request-id": request_id})


def cut_after(name: str, marker: bytes) -> Handler:
    """A handler that plays SSE fixture `name` up to `marker`, then drops the connection."""
    body = fixture_text(name).encode()
    return play(body[: body.index(marker)], chunk=len(body), end="close")


def reply(status: int, body: Any, headers: dict[str, str] | None = None) -> Handler:
    """A handler that answers JSON `body` (or an HTML page, for a str) with `status`."""
    content_type = "text/html" if isinstance(body, str) else "application/json"
    return respond(status, body, content_type=content_type, headers=headers)


def mock_post(mocked: aioresponses, url: str = MESSAGES_URL, **kwargs: Any) -> None:
    """Queue one reply to a POST of `url` (payload=, headers=, exception=, ...)."""
    mocked.post(url, response_class=CompatResponse, **kwargs)


def sent(mocked: aioresponses, url: str = MESSAGES_URL) -> tuple[dict[str, Any], dict[str, str]]:
    """The JSON body and headers of the one request aioresponses saw for `url`."""
    calls = mocked.requests[("POST", URL(url))]
    assert len(calls) == 1
    kwargs = calls[0].kwargs
    return json.loads(kwargs["data"]), dict(kwargs["headers"])


async def generate_body(
    http: HTTPSessionHolder, request: Request | str, *options: Any
) -> dict[str, Any]:
    """The JSON body `generate(request, *options)` sends."""
    with aioresponses() as mocked:
        mock_post(mocked, payload=fixture_json("message_text.json"))
        await anthropic(http).model(MODEL).generate(request, *options)
        body, _ = sent(mocked)
    return body


# --------------------------------------------------------------------------- request shapes


async def test_plain_prompt_sends_minimal_body_and_auth_headers(http: HTTPSessionHolder) -> None:
    """A bare prompt becomes one user turn with the default max_tokens and both auth headers."""
    with aioresponses() as mocked:
        mock_post(mocked, payload=fixture_json("message_text.json"))
        await anthropic(http).model(MODEL).generate("Hello")
        body, headers = sent(mocked)
    assert body == {
        "model": MODEL,
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": "Hello"}],
    }
    assert headers == {
        "User-Agent": USER_AGENT,
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
    }


async def test_system_prompt_and_sampling_parameters(http: HTTPSessionHolder) -> None:
    """System is top-level; temperature, top_p, max_tokens and stop map to Anthropic's names."""
    request = Request(
        "Name a fjord.",
        system="Be terse.",
        temperature=0.2,
        top_p=0.9,
        max_tokens=256,
        stop=("END", "##"),
    )
    assert await generate_body(http, request) == {
        "model": MODEL,
        "max_tokens": 256,
        "system": "Be terse.",
        "messages": [{"role": "user", "content": "Name a fjord."}],
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END", "##"],
    }


async def test_extra_headers_are_sent_but_never_override_auth(http: HTTPSessionHolder) -> None:
    """Extra headers (anthropic-beta) ride along; they cannot replace the key or version."""
    provider = anthropic(
        http,
        extra_headers={
            "anthropic-beta": "feature-x",
            "X-Api-Key": "other",
            "Anthropic-Version": "1",
            "content-type": "text/plain",
        },
    )
    with aioresponses() as mocked:
        mock_post(mocked, payload=fixture_json("message_text.json"))
        await provider.model(MODEL).generate("Hi")
        _, headers = sent(mocked)
    assert headers == {
        "User-Agent": USER_AGENT,
        "anthropic-beta": "feature-x",
        "x-api-key": KEY,
        "anthropic-version": "2023-06-01",
        "Content-Type": "application/json",
    }


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ("get_tide", {"type": "tool", "name": "get_tide"}),
    ],
)
async def test_tools_and_tool_choice(
    http: HTTPSessionHolder, choice: str, wire: dict[str, str]
) -> None:
    """Tools carry `input_schema`; each tool_choice maps to Anthropic's form."""
    bare = Tool("now")
    body = await generate_body(http, "Tide in Bergen?", tools(WEATHER, bare), tool_choice(choice))
    assert body["tools"] == [
        {
            "name": "get_tide",
            "description": "Tide times for a port",
            "input_schema": {
                "type": "object",
                "properties": {"port": {"type": "string"}},
                "required": ["port"],
            },
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == wire


async def test_tool_results_follow_up_merges_consecutive_results(http: HTTPSessionHolder) -> None:
    """Tool calls replay as tool_use blocks; consecutive results share one user turn, first."""
    history = [
        Message.user("Tides in Bergen and Tromsø?"),
        Message.assistant(
            "Checking both.",
            ToolCallPart(ToolCall("toolu_01", "get_tide", '{"port": "Bergen"}')),
            ToolCallPart(ToolCall("toolu_02", "get_tide", '{"port": "Tromsø"}')),
        ),
        Message.tool_result("toolu_01", '{"high": "06:12"}'),
        Message.tool_result("toolu_02", "port closed", is_error=True),
        Message.user("And in short?"),
    ]
    body = await generate_body(http, Request(history, tools=(WEATHER,)))
    assert body["messages"] == [
        {"role": "user", "content": "Tides in Bergen and Tromsø?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking both."},
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_tide",
                    "input": {"port": "Bergen"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_02",
                    "name": "get_tide",
                    "input": {"port": "Tromsø"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": '{"high": "06:12"}'},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_02",
                    "content": "port closed",
                    "is_error": True,
                },
                {"type": "text", "text": "And in short?"},
            ],
        },
    ]


async def test_plain_user_turns_are_not_merged(http: HTTPSessionHolder) -> None:
    """Only turns next to tool results are merged: two user texts stay two turns."""
    body = await generate_body(http, Request([Message.user("one"), Message.user("two")]))
    assert body["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "user", "content": "two"},
    ]


async def test_inline_url_and_data_url_images(http: HTTPSessionHolder) -> None:
    """Inline bytes and data: URLs become base64 sources; http(s) URLs become url sources."""
    png = b"\x89PNG\r\n\x1a\nfake-image-bytes"
    encoded = base64.b64encode(png).decode()
    message = Message.user(
        ImagePart.from_bytes(png, "image/png"),
        ImagePart.from_url("https://example.test/oslo.jpg"),
        ImagePart.from_url(f"data:image/webp;base64,{encoded}"),
        "Which cities?",
    )
    body = await generate_body(http, Request([message]))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": encoded},
                },
                {
                    "type": "image",
                    "source": {"type": "url", "url": "https://example.test/oslo.jpg"},
                },
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/webp", "data": encoded},
                },
                {"type": "text", "text": "Which cities?"},
            ],
        }
    ]


async def test_percent_encoded_data_url_becomes_a_base64_source(http: HTTPSessionHolder) -> None:
    """A data: URL that carries its bytes percent-encoded is sent as base64 (RFC 2397)."""
    url = "data:IMAGE/PNG,%89PNG%0D%0A"
    body = await generate_body(http, Request([Message.user(ImagePart.from_url(url))]))
    [block] = body["messages"][0]["content"]
    assert block["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": base64.b64encode(b"\x89PNG\r\n").decode(),
    }


async def test_json_schema_goes_to_output_config(http: HTTPSessionHolder) -> None:
    """A JSON schema is sent as output_config.format (structured outputs)."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    body = await generate_body(http, "Capital of Norway?", json_schema(schema, name="city"))
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (Request("Hi").apply(json_mode()), "json_schema"),
        (Request("Hi", temperature=1.5), "temperature"),
        (Request([Message.user(ImagePart.from_bytes(b"BM..", "image/bmp"))]), "image/bmp"),
        (Request([Message.user(ImagePart.from_url("ftp://example.test/a.png"))]), "ftp://"),
        (Request([Message.user(ImagePart.from_url("data:image/png;base64,@@@"))]), "base64"),
        (Request([Message.user(ImagePart.from_url("data:image/png"))]), "no ','"),
        (
            Request([Message.assistant(ToolCallPart(ToolCall("toolu_9", "get_tide", "[1, 2]")))]),
            "toolu_9",
        ),
    ],
)
async def test_requests_anthropic_cannot_take_fail_before_sending(
    http: HTTPSessionHolder, request_: Request, fragment: str
) -> None:
    """JSON mode without schema, temperature > 1, odd images, non-object arguments: no request."""
    with aioresponses() as mocked:
        with pytest.raises(UnsupportedRequestError, match=fragment) as caught:
            await anthropic(http).model(MODEL).generate(request_)
        assert not mocked.requests
    assert caught.value.key == f"anthropic/{MODEL}"
    assert classify(caught.value) is ErrorClass.PERMANENT


def test_stream_flag_only_in_stream_bodies() -> None:
    """`stream: true` is set for streams and absent otherwise."""
    request = Request("Hi")
    assert _build_body(request, MODEL, stream=True)["stream"] is True
    assert "stream" not in _build_body(request, MODEL, stream=False)


# --------------------------------------------------------------------------- reply parsing


async def test_text_reply_usage_and_request_id(http: HTTPSessionHolder) -> None:
    """Text blocks join, thinking is kept apart, cache tokens count as input, request-id is kept."""
    with aioresponses() as mocked:
        mock_post(
            mocked, payload=fixture_json("message_text.json"), headers={"request-id": "req_011"}
        )
        response = await anthropic(http).model(MODEL).generate("Capital of Norway?")
    assert response.text == "Oslo is the capital."
    assert response.tool_calls == ()
    assert response.finish_reason is FinishReason.STOP
    # Cache counts are part of the input total, and reported apart too (a deliberate
    # change: they used to be folded into input_tokens only).
    assert response.usage == Usage(
        input_tokens=21 + 4 + 100, output_tokens=6, cached_input_tokens=100, cache_write_tokens=4
    )
    assert response.reasoning == "Short answer."
    assert response.model == f"anthropic/{MODEL}"
    assert response.served_model == MODEL
    assert response.request_id == "req_011"
    assert response.raw["id"] == "msg_01Text"


async def test_parallel_tool_calls_in_reply(http: HTTPSessionHolder) -> None:
    """Every tool_use block becomes a ToolCall whose arguments are JSON text."""
    with aioresponses() as mocked:
        mock_post(mocked, payload=fixture_json("message_tools.json"))
        response = await anthropic(http).model(MODEL).generate("Tides?", tools(WEATHER))
    assert response.text == "Checking both ports."
    assert [(call.id, call.name) for call in response.tool_calls] == [
        ("toolu_01", "get_tide"),
        ("toolu_02", "get_tide"),
    ]
    assert [call.parse_arguments() for call in response.tool_calls] == [
        {"port": "Bergen"},
        {"port": "Tromsø", "days": 2},
    ]
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(410, 35)


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("tool_use", FinishReason.TOOL_CALLS),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_stop_reasons_are_normalised(stop_reason: str | None, finish: FinishReason) -> None:
    """Each Anthropic stop_reason maps to one FinishReason."""
    body: dict[str, Any] = {"type": "message", "content": [], "stop_reason": stop_reason}
    assert _parse_response(body, "anthropic/m", {}).finish_reason is finish


@pytest.mark.parametrize("body", [[], {"type": "message"}, {"content": "text"}, None])
def test_reply_that_is_not_a_message_is_a_format_error(body: Any) -> None:
    """A reply without a content list raises ResponseFormatError, not a KeyError."""
    with pytest.raises(ResponseFormatError, match="content list") as caught:
        _parse_response(body, "anthropic/m", {"request-id": "req_x"})
    assert caught.value.request_id == "req_x"


def test_error_object_with_success_status_is_typed() -> None:
    """An error body that came with a 200 (a proxy's doing) raises the typed error."""
    with pytest.raises(OverloadedError):
        _parse_response(error_body("overloaded_error", "Overloaded"), "anthropic/m", {})


# --------------------------------------------------------------------------- streams


async def test_text_stream_collects_text_usage_and_finish(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A streamed answer aggregates text, cumulative usage, the finish reason and request id."""
    server.handler = sse("text_stream.sse", chunk=5)
    stream = await anthropic(http, server.url).model(MODEL).stream("Fjords?")
    response = await stream.collect()
    assert response.text == "Fjords are long, narrow sea inlets. ✓"
    assert response.usage == Usage(
        input_tokens=12 + 3 + 5, output_tokens=9, cached_input_tokens=5, cache_write_tokens=3
    )
    assert response.finish_reason is FinishReason.STOP
    assert response.request_id == "req_stream_1"
    assert response.model == f"anthropic/{MODEL}"
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.json()["stream"] is True


async def test_stream_event_sequence(http: HTTPSessionHolder, server: LocalServer) -> None:
    """StreamStart comes first with the request id, usage follows, StreamEnd comes last."""
    server.handler = sse("text_stream.sse")
    events: list[StreamEvent] = []
    async with await anthropic(http, server.url).model(MODEL).stream("Fjords?") as stream:
        events.extend([event async for event in stream])
    assert events[0] == StreamStart(
        model=f"anthropic/{MODEL}", request_id="req_stream_1", served_model=MODEL
    )
    assert events[1] == UsageUpdate(Usage(20, 1, cached_input_tokens=5, cache_write_tokens=3))
    assert [type(event) for event in events[2:]] == [
        TextDelta,
        TextDelta,
        TextDelta,
        UsageUpdate,
        StreamEnd,
    ]
    assert events[-1] == StreamEnd(FinishReason.STOP)


async def test_tool_call_deltas_assemble_into_calls(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """input_json_delta pieces join per call; a call with no pieces gets "{}" arguments."""
    server.handler = sse("tool_stream.sse", chunk=11)
    events: list[StreamEvent] = []
    async with (
        await anthropic(http, server.url).model(MODEL).stream("Tides?", tools(WEATHER)) as stream
    ):
        events.extend([event async for event in stream])
        response = stream.response
    starts = [event for event in events if isinstance(event, ToolCallDelta) and event.id]
    assert starts == [
        ToolCallDelta(0, "toolu_A1", "get_tide"),
        ToolCallDelta(1, "toolu_B2", "get_tide"),
        ToolCallDelta(2, "toolu_C3", "now"),
    ]
    assert response.text == "Looking up both."
    assert response.tool_calls == (
        ToolCall("toolu_A1", "get_tide", '{"port": "Bergen"}'),
        ToolCall("toolu_B2", "get_tide", '{"port": "Tromsø"}'),
        ToolCall("toolu_C3", "now", "{}"),
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.usage == Usage(80, 61)


async def test_stream_ending_before_message_stop_is_truncated(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A body that ends cleanly without message_stop raises StreamTruncatedError after the text."""
    server.handler = sse("truncated_stream.sse")
    texts: list[str] = []
    stream = await anthropic(http, server.url).model(MODEL).stream("Go on")
    with pytest.raises(StreamTruncatedError, match="message_stop") as caught:
        async with stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
    assert "".join(texts) == "This answer stops in the mid"
    assert caught.value.key == f"anthropic/{MODEL}"
    assert classify(caught.value) is ErrorClass.TRANSIENT


async def test_connection_dropped_mid_stream_is_truncated(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A connection cut in the middle of the body raises StreamTruncatedError."""
    server.handler = cut_after("text_stream.sse", b"event: content_block_stop")
    stream = await anthropic(http, server.url).model(MODEL).stream("Fjords?")
    with pytest.raises(StreamTruncatedError):
        await stream.collect()


async def test_in_band_error_before_first_delta(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """An overloaded_error event before any content raises OverloadedError after the preamble."""
    server.handler = sse("error_before_content.sse")
    seen: list[type] = []
    stream = await anthropic(http, server.url).model(MODEL).stream("Hi")
    with pytest.raises(OverloadedError, match="Overloaded") as caught:
        async with stream:
            async for event in stream:
                seen.append(type(event))
    assert seen == [StreamStart, UsageUpdate]
    assert caught.value.code == "overloaded_error"
    assert caught.value.request_id == "req_stream_1"
    assert classify(caught.value) is ErrorClass.TRANSIENT


async def test_in_band_error_after_content(http: HTTPSessionHolder, server: LocalServer) -> None:
    """An error event after text was delivered raises its typed error (content policy here)."""
    server.handler = sse("error_after_content.sse")
    texts: list[str] = []
    stream = await anthropic(http, server.url).model(MODEL).stream("Hi")
    with pytest.raises(ContentPolicyError, match="content filtering") as caught:
        async with stream:
            async for event in stream:
                if isinstance(event, TextDelta):
                    texts.append(event.text)
    assert texts == ["Half an answer"]
    assert classify(caught.value) is ErrorClass.PERMANENT


@pytest.mark.parametrize(
    ("error_type", "expected"),
    [
        ("rate_limit_error", RateLimitError),
        ("api_error", ServerError),
        ("timeout_error", ServerError),
        ("billing_error", QuotaExceededError),
        ("brand_new_error", ServerError),
    ],
)
def test_in_band_error_types(error_type: str, expected: type[ProviderError]) -> None:
    """In-band errors are typed by error.type; an in-band rate limit is not taken for a quota."""
    translator = _StreamTranslator(key="anthropic/m", request_id=None)
    data = json.dumps({"type": "error", "error": {"type": error_type, "message": "boom"}})
    with pytest.raises(ProviderError) as caught:
        translator.feed(ServerSentEvent("error", data))
    assert type(caught.value) is expected


def test_events_without_event_lines_and_unknown_events() -> None:
    """Without `event:` lines the JSON type is used; unknown events are skipped unread."""
    translator = _StreamTranslator(key="anthropic/m", request_id=None)
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "hi"},
    }
    assert translator.feed(ServerSentEvent(data=json.dumps(delta))) == [TextDelta("hi")]
    assert translator.feed(ServerSentEvent("brand_new", "not json at all")) == []
    assert translator.feed(ServerSentEvent("message_stop", '{"type":"message_stop"}')) == [
        StreamEnd(FinishReason.OTHER)
    ]
    assert translator.done


def test_undecodable_event_data_is_a_format_error() -> None:
    """A known event whose data is not a JSON object raises ResponseFormatError."""
    translator = _StreamTranslator(key="anthropic/m", request_id="req_1")
    with pytest.raises(ResponseFormatError, match="not JSON"):
        translator.feed(ServerSentEvent("content_block_delta", "{oops"))
    with pytest.raises(ResponseFormatError, match="not a JSON object"):
        translator.feed(ServerSentEvent("message_delta", "[1]"))


async def test_stream_closed_before_reading_releases_the_connection(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Closing a stream that was never read still gives its connection back."""
    server.handler = sse("text_stream.sse")
    stream = await anthropic(http, server.url).model(MODEL).stream("Fjords?")
    await stream.aclose()
    assert acquired_connections(http.get()) == 0


async def test_breaking_out_early_releases_the_connection(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Leaving `async with` after the first text delta closes the stream's connection."""
    server.handler = sse("text_stream.sse")
    async with await anthropic(http, server.url).model(MODEL).stream("Fjords?") as stream:
        async for event in stream:
            if isinstance(event, TextDelta):
                break
    assert stream.closed
    assert acquired_connections(http.get()) == 0


# --------------------------------------------------------------------------- HTTP errors

ERROR_CASES = [
    pytest.param(
        404,
        error_body("not_found_error", f"model: {MODEL}"),
        {},
        ModelNotFoundError,
        id="model-not-found",
    ),
    pytest.param(
        404, error_body("not_found_error", "Not Found"), {}, BadRequestError, id="wrong-path"
    ),
    pytest.param(
        400,
        error_body("invalid_request_error", "prompt is too long: 208656 tokens > 200000 maximum"),
        {},
        ContextLengthError,
        id="prompt-too-long",
    ),
    pytest.param(
        400,
        error_body(
            "invalid_request_error",
            "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000",
        ),
        {},
        ContextLengthError,
        id="context-limit",
    ),
    pytest.param(
        400,
        error_body("invalid_request_error", "Output blocked by content filtering policy"),
        {},
        ContentPolicyError,
        id="content-policy",
    ),
    pytest.param(
        401,
        error_body("authentication_error", "invalid x-api-key"),
        {},
        AuthenticationError,
        id="auth",
    ),
    pytest.param(
        403,
        error_body("permission_error", "no access to this resource"),
        {},
        AuthenticationError,
        id="permission",
    ),
    pytest.param(
        429,
        error_body("rate_limit_error", "This request would exceed your rate limit."),
        {"retry-after": "20"},
        RateLimitError,
        id="rate-limit-retry-after",
    ),
    pytest.param(
        429,
        error_body("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
        {},
        RateLimitError,
        id="rate-limit-headers-dropped-by-a-gateway",
    ),
    pytest.param(
        429,
        error_body("rate_limit_error", "You have reached your monthly spend limit."),
        {},
        QuotaExceededError,
        id="spend-cap-no-retry-after",
    ),
    pytest.param(
        429,
        error_body(
            "rate_limit_error",
            "Spend limit",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        {"retry-after": "3600"},
        QuotaExceededError,
        id="spend-limit-code",
    ),
    pytest.param(
        402,
        error_body("billing_error", "payment method declined"),
        {},
        QuotaExceededError,
        id="billing",
    ),
    pytest.param(
        400,
        error_body(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. "
            "Please go to Plans & Billing to upgrade or purchase credits.",
        ),
        {},
        QuotaExceededError,
        id="credit-balance",
    ),
    pytest.param(
        400,
        error_body(
            "invalid_request_error",
            "You have reached your specified API usage limits. "
            "You will regain access on 2026-04-01 at 00:00 UTC.",
        ),
        {},
        QuotaExceededError,
        id="usage-limit",
    ),
    pytest.param(
        413,
        error_body("request_too_large", "Request exceeds the maximum size"),
        {},
        BadRequestError,
        id="too-large",
    ),
    pytest.param(
        529, error_body("overloaded_error", "Overloaded"), {}, OverloadedError, id="overloaded"
    ),
    pytest.param(
        500, error_body("api_error", "Internal server error"), {}, ServerError, id="api-error"
    ),
    pytest.param(
        502,
        "<html><head><title>502 Bad Gateway</title></head></html>",
        {},
        ServerError,
        id="proxy-html",
    ),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize(("status", "body", "headers", "expected"), ERROR_CASES)
async def test_http_errors_are_mapped(
    http: HTTPSessionHolder,
    server: LocalServer,
    streaming: bool,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected: type[ProviderError],
) -> None:
    """Each error reply raises its typed error, before any stream event, with its fields."""
    server.handler = reply(status, body, {"request-id": "req_hdr_1", **headers})
    model = anthropic(http, server.url).model(MODEL)
    with pytest.raises(ProviderError) as caught:
        if streaming:
            await model.stream("Hi")
        else:
            await model.generate("Hi")
    error = caught.value
    assert type(error) is expected
    assert error.status == status
    assert error.key == f"anthropic/{MODEL}"
    assert error.request_id == "req_hdr_1"
    if isinstance(body, dict):
        assert error.code == body["error"]["type"]
        assert body["error"]["message"] in str(error)
    if "retry-after" in headers:
        assert error.retry_after == float(headers["retry-after"])
    assert KEY not in str(error)


async def test_request_id_falls_back_to_the_error_body(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Without a request-id header, the error body's request_id is used."""
    server.handler = reply(529, error_body("overloaded_error", "Overloaded"))
    with pytest.raises(OverloadedError) as caught:
        await anthropic(http, server.url).model(MODEL).generate("Hi")
    assert caught.value.request_id == "req_body_1"


async def test_should_retry_header_wins(http: HTTPSessionHolder, server: LocalServer) -> None:
    """`x-should-retry` beats the no-retry-after quota rule, and the status rules too."""
    server.handler = reply(
        429, error_body("rate_limit_error", "slow down"), {"x-should-retry": "true"}
    )
    with pytest.raises(RateLimitError) as caught:
        await anthropic(http, server.url).model(MODEL).generate("Hi")
    assert type(caught.value) is RateLimitError
    assert classify(caught.value) is ErrorClass.TRANSIENT
    server.handler = reply(529, error_body("overloaded_error", "busy"), {"x-should-retry": "false"})
    with pytest.raises(OverloadedError) as overloaded:
        await anthropic(http, server.url).model(MODEL).generate("Hi")
    assert classify(overloaded.value) is ErrorClass.PERMANENT


# --------------------------------------------------------------------------- list_models, keys


async def test_list_models_follows_pages(http: HTTPSessionHolder, server: LocalServer) -> None:
    """list_models reads every page (after_id = last_id) and returns the ids in order."""

    async def handle(request: web.Request) -> web.StreamResponse:
        page = "models_page2.json" if request.query.get("after_id") else "models_page1.json"
        return web.json_response(fixture_json(page))

    server.handler = handle
    assert await anthropic(http, server.url).list_models() == [
        "claude-test-2",
        "claude-test-1",
        "claude-test-0",
    ]
    assert [(request.method, request.path, request.query) for request in server.requests] == [
        ("GET", "/v1/models", "limit=1000"),
        ("GET", "/v1/models", "limit=1000&after_id=claude-test-1"),
    ]
    assert all(request.headers["x-api-key"] == KEY for request in server.requests)


async def test_list_models_error_is_typed(http: HTTPSessionHolder, server: LocalServer) -> None:
    """A refused key on /v1/models raises AuthenticationError."""
    server.handler = reply(401, error_body("authentication_error", "invalid x-api-key"))
    with pytest.raises(AuthenticationError):
        await anthropic(http, server.url).list_models()


async def test_missing_key_fails_the_call_not_the_construction(http: HTTPSessionHolder) -> None:
    """Without a key the provider builds; every call raises AuthenticationError naming the var."""
    provider = anthropic(http, api_key=None)
    model = provider.model(MODEL)
    with aioresponses() as mocked:
        for call in (model.generate("Hi"), model.stream("Hi"), provider.list_models()):
            with pytest.raises(AuthenticationError, match="ANTHROPIC_API_KEY"):
                await call
        assert not mocked.requests


async def test_key_never_shown(http: HTTPSessionHolder, server: LocalServer) -> None:
    """No repr and no error message contains the API key."""
    provider = anthropic(http, server.url)
    model = provider.model(MODEL)
    server.handler = reply(401, error_body("authentication_error", "invalid x-api-key"))
    with pytest.raises(AuthenticationError) as caught:
        await model.generate("Hi")
    texts = [repr(provider), str(provider), repr(model), str(caught.value), repr(caught.value)]
    assert all(KEY not in text for text in texts)
    assert "api_key=set" in repr(provider)


def test_provider_and_model_protocols(http: HTTPSessionHolder) -> None:
    """The provider is a Provider and ModelLister; models are cached AsyncModels."""
    provider = anthropic(http)
    assert isinstance(provider, Provider)
    assert isinstance(provider, ModelLister)
    model = provider.model(MODEL)
    assert isinstance(model, AsyncModel)
    assert isinstance(model, AnthropicModel)
    assert provider.model(MODEL) is model
    assert provider.model("claude-other") is not model


# --------------------------------------------------------------------------- factory


def context(http: HTTPSessionHolder, env: dict[str, str]) -> ProviderContext:
    """A provider context over `env`."""
    return ProviderContext(http=http, clock=ManualClock(), env=env.get)


def test_factory_takes_the_key_from_the_dsn_first(http: HTTPSessionHolder) -> None:
    """The DSN's credential beats ANTHROPIC_API_KEY; no host means the public API."""
    provider = anthropic_factory(
        "anthropic",
        DSN.parse(f"anthropic://{KEY}@"),
        context(http, {"ANTHROPIC_API_KEY": "env-key"}),
    )
    assert provider._api_key == KEY
    assert provider.base_url == DEFAULT_BASE_URL
    assert provider.name == "anthropic"


def test_factory_falls_back_to_the_env(http: HTTPSessionHolder) -> None:
    """Without a credential in the DSN, ANTHROPIC_API_KEY is used; without either, no key."""
    dsn = DSN.parse("anthropic://")
    assert (
        anthropic_factory("a", dsn, context(http, {"ANTHROPIC_API_KEY": "env-key"}))._api_key
        == "env-key"
    )
    assert anthropic_factory("a", dsn, context(http, {}))._api_key is None


@pytest.mark.parametrize(
    ("dsn", "base_url"),
    [
        ("anthropic+http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("anthropic://proxy.example.test/anthropic", "https://proxy.example.test/anthropic"),
        ("anthropic://proxy.example.test/v1", "https://proxy.example.test"),
    ],
)
def test_factory_base_url(http: HTTPSessionHolder, dsn: str, base_url: str) -> None:
    """A DSN host sets the base URL; a trailing /v1 is not doubled."""
    assert anthropic_factory("a", DSN.parse(dsn), context(http, {})).base_url == base_url


async def test_factory_timeouts_and_max_tokens(http: HTTPSessionHolder) -> None:
    """Query keys set the timeouts and the default max_tokens."""
    provider = anthropic_factory(
        "a",
        DSN.parse(f"anthropic://{KEY}@?connect=2&headers=30.5&idle=7&max_tokens=512"),
        context(http, {}),
    )
    assert provider._timeouts == Timeouts(connect=2.0, headers=30.5, idle=7.0)
    with aioresponses() as mocked:
        mock_post(mocked, payload=fixture_json("message_text.json"))
        await provider.model(MODEL).generate("Hi")
        body, _ = sent(mocked)
        assert body["max_tokens"] == 512
        mock_post(mocked, payload=fixture_json("message_text.json"))
        await provider.model(MODEL).generate("Hi", max_tokens(64))
        assert (
            json.loads(mocked.requests[("POST", URL(MESSAGES_URL))][1].kwargs["data"])["max_tokens"]
            == 64
        )


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("colour=blue", "unknown DSN query key"),
        ("idle=-1", "idle"),
        ("connect=soon", "connect"),
        ("max_tokens=0", "max_tokens"),
    ],
)
def test_factory_rejects_bad_query(http: HTTPSessionHolder, query: str, fragment: str) -> None:
    """Unknown keys and bad values raise ConfigurationError without showing the key."""
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        anthropic_factory("a", DSN.parse(f"anthropic://{KEY}@?{query}"), context(http, {}))
    assert KEY not in str(caught.value)


async def test_transport_failure_is_a_connection_error(http: HTTPSessionHolder) -> None:
    """A refused connection raises a transient ProviderError (the shared transport mapping)."""
    with aioresponses() as mocked:
        mock_post(mocked, exception=aiohttp.ClientConnectionError("refused"))
        with pytest.raises(ProviderError) as caught:
            await anthropic(http).model(MODEL).generate("Hi")
    assert classify(caught.value) is ErrorClass.TRANSIENT


# --------------------------------------------------------------------------- in a chain


async def test_chain_fails_over_on_in_band_error_before_content(
    http: HTTPSessionHolder, server: LocalServer, registry: Registry
) -> None:
    """An error event before the first delta still fails the chain over to the next target."""
    server.handler = sse("error_before_content.sse")
    registry.register_provider(anthropic(http, server.url))
    chain = registry.parse(f"anthropic/{MODEL},fake/backup?reply=fallback")
    response = await (await chain.stream("Hi")).collect()
    assert response.text == "fallback"
    assert response.model == "fake/backup?reply=fallback"
    assert {failure.key for failure in response.failed_attempts} == {f"anthropic/{MODEL}"}
    assert all(isinstance(failure.error, OverloadedError) for failure in response.failed_attempts)


async def test_chain_delivers_anthropic_stream(
    http: HTTPSessionHolder, server: LocalServer, registry: Registry
) -> None:
    """Through a chain, the Anthropic stream is established and read to the end."""
    server.handler = sse("text_stream.sse")
    registry.register_provider(anthropic(http, server.url))
    response = await (await registry.parse(f"anthropic/{MODEL}").stream("Fjords?")).collect()
    assert response.text == "Fjords are long, narrow sea inlets. ✓"
    assert response.model == f"anthropic/{MODEL}"
    assert response.failed_attempts == ()
