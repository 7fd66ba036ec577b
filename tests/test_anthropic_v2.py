"""The Anthropic provider's extended thinking, prompt caching, usage detail, served model,
tool-call finish rule and 429 variants, against a real aiohttp server on 127.0.0.1.

Bodies are shaped as the Messages API writes them (compact JSON, `event:` + `data:`
frames, `ping`s, `cache_creation` breakdowns, `service_tier`); every stream is also
replayed one byte per write, so that no frame, JSON value or UTF-8 sequence is assumed
to arrive whole.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from majordomo_async import (
    ErrorClass,
    FinishReason,
    HTTPSessionHolder,
    Message,
    ProviderError,
    QuotaExceededError,
    RateLimitError,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
    StreamEnd,
    StreamEvent,
    StreamStart,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    Usage,
    UsageUpdate,
    cache,
    classify,
    max_tokens,
    reasoning,
    temperature,
    tool_choice,
    tools,
    top_p,
)
from majordomo_async._providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicProvider,
    _StreamTranslator,
)
from majordomo_async._sse import ServerSentEvent

from .helpers.servers import Handler, LocalServer, play, respond

KEY = "sk-ant-test-v2-0123456789"
MODEL = "claude-sonnet-4-5"
SERVED = "claude-sonnet-4-5-20250929"
TIDE = Tool(
    "get_tide",
    "Tide times for a port",
    {"type": "object", "properties": {"port": {"type": "string"}}, "required": ["port"]},
)
NOW = Tool("now", "The current time", {"type": "object", "properties": {}})

# Opaque values as the API returns them (base64 text); only their passage is checked.
SIGNATURE = (
    "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds0Z6Hq+d2mxdKoVGlv0IQGcs"
    "3ZhWy0nbmjtZ8Zl8bYBk3N2yrnUZ1lKyjJnh7sU9Q4eI2GcQ=="
)
REDACTED = (
    "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmK"
    "DxH4mPnZ5sQ7vB5URjAvu2Mf0WYbqHv1KnBg"
)
THOUGHT_1 = "The user wants Bergen's tide. "
THOUGHT_2 = "I should call get_tide with port=Bergen — høyvann first."
CALL_ID = "toolu_01A09q90qw90lq917835lq9"

BYTE_BY_BYTE = pytest.mark.parametrize("chunk", [1, 31], ids=["byte-by-byte", "31-bytes"])


# --------------------------------------------------------------------------- helpers


def provider(http: HTTPSessionHolder, server: LocalServer, **kwargs: Any) -> AnthropicProvider:
    """The provider under test, pointed at the local server."""
    return AnthropicProvider("anthropic", api_key=KEY, base_url=server.url, http=http, **kwargs)


def compact(value: Any) -> str:
    """JSON as the API writes it: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def sse(*events: dict[str, Any]) -> bytes:
    """An SSE body: one `event:` + `data:` frame per event, named by its `type`."""
    return "".join(f"event: {e['type']}\ndata: {compact(e)}\n\n" for e in events).encode()


PING = {"type": "ping"}


def message_start(usage: dict[str, Any], model: str | None = SERVED) -> dict[str, Any]:
    """The first event of a stream (its `model` is left out when None)."""
    message: dict[str, Any] = {
        "id": "msg_01StreamV2",
        "type": "message",
        "role": "assistant",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    if model is not None:
        message["model"] = model
    return {"type": "message_start", "message": message}


def block_start(index: int, block: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": index, "delta": delta}


def block_stop(index: int) -> dict[str, Any]:
    return {"type": "content_block_stop", "index": index}


def message_delta(stop_reason: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage,
    }


MESSAGE_STOP = {"type": "message_stop"}


def start_usage(
    input_tokens: int = 412, *, cache_write: int = 0, cache_read: int = 0
) -> dict[str, Any]:
    """`message_start.message.usage` as the API sends it."""
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_write,
            "ephemeral_1h_input_tokens": 0,
        },
        "output_tokens": 1,
        "service_tier": "standard",
    }


def thinking_tool_stream(*, stop_reason: str = "tool_use") -> bytes:
    """A thinking block (two pieces, then its signature), a redacted block, text, a call."""
    return sse(
        message_start(start_usage()),
        block_start(0, {"type": "thinking", "thinking": "", "signature": ""}),
        PING,
        block_delta(0, {"type": "thinking_delta", "thinking": THOUGHT_1}),
        block_delta(0, {"type": "thinking_delta", "thinking": THOUGHT_2}),
        block_delta(0, {"type": "signature_delta", "signature": SIGNATURE}),
        block_stop(0),
        block_start(1, {"type": "redacted_thinking", "data": REDACTED}),
        block_stop(1),
        block_start(2, {"type": "text", "text": ""}),
        block_delta(2, {"type": "text_delta", "text": "Let me look that up."}),
        block_stop(2),
        block_start(3, {"type": "tool_use", "id": CALL_ID, "name": "get_tide", "input": {}}),
        block_delta(3, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(3, {"type": "input_json_delta", "partial_json": '{"port": "Ber'}),
        block_delta(3, {"type": "input_json_delta", "partial_json": 'gen"}'}),
        block_stop(3),
        message_delta(stop_reason, {"output_tokens": 187}),
        MESSAGE_STOP,
    )


def thinking_tool_message(*, stop_reason: str = "tool_use") -> dict[str, Any]:
    """The same answer as one `/v1/messages` reply."""
    return {
        "model": SERVED,
        "id": "msg_01ThinkTool",
        "type": "message",
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": THOUGHT_1 + THOUGHT_2, "signature": SIGNATURE},
            {"type": "redacted_thinking", "data": REDACTED},
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": CALL_ID, "name": "get_tide", "input": {"port": "Bergen"}},
        ],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": start_usage() | {"output_tokens": 187},
    }


def stream_handler(body: bytes, chunk: int) -> Handler:
    return play(body, chunk=chunk, headers={"request-id": "req_v2_stream"})


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    return respond(status, body, headers={"request-id": "req_v2", **(headers or {})})


async def stream_all(model: Any, request: Request | str) -> tuple[list[StreamEvent], Response]:
    """Every event of a stream, and its aggregated response."""
    async with await model.stream(request) as stream:
        events = [event async for event in stream]
    return events, stream.response


def sent(server: LocalServer, index: int = -1) -> dict[str, Any]:
    """The JSON body of a request the server received."""
    body = server.requests[index].json()
    assert isinstance(body, dict)
    return body


EXPECTED_PARTS = (
    ReasoningPart(THOUGHT_1 + THOUGHT_2, signature=SIGNATURE, provider="anthropic"),
    ReasoningPart(redacted=REDACTED, provider="anthropic"),
)
EXPECTED_CALL = ToolCall(CALL_ID, "get_tide", '{"port": "Bergen"}')


# --------------------------------------------------------------------------- thinking: replies


async def test_thinking_reply_becomes_reasoning_and_parts(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """thinking and redacted_thinking blocks, in order, become reasoning parts; the text
    and the call are unchanged; the served model is the reply's `model`."""
    server.handler = reply(thinking_tool_message())
    request = Request("Tide in Bergen?").apply(tools(TIDE), reasoning("medium"))
    response = await provider(http, server).model(MODEL).generate(request)
    assert response.reasoning == THOUGHT_1 + THOUGHT_2
    assert response.reasoning_parts == EXPECTED_PARTS
    assert response.text == "Let me look that up."
    assert response.tool_calls == (EXPECTED_CALL,)
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert response.served_model == SERVED
    assert response.model == f"anthropic/{MODEL}"
    # Response.message carries the blocks first, ready to be sent back.
    assert response.message.parts[:2] == EXPECTED_PARTS


@BYTE_BY_BYTE
async def test_thinking_stream_gives_reasoning_deltas_per_block(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """thinking_delta pieces, the signature_delta and a redacted block become
    ReasoningDeltas indexed by content block, before the text and the call."""
    server.handler = stream_handler(thinking_tool_stream(), chunk)
    request = Request("Tide in Bergen?").apply(tools(TIDE), reasoning("medium"))
    events, response = await stream_all(provider(http, server).model(MODEL), request)
    content = [e for e in events if isinstance(e, ReasoningDelta | TextDelta | ToolCallDelta)]
    assert content == [
        ReasoningDelta(THOUGHT_1, index=0, provider="anthropic"),
        ReasoningDelta(THOUGHT_2, index=0, provider="anthropic"),
        ReasoningDelta(index=0, signature=SIGNATURE, provider="anthropic"),
        ReasoningDelta(index=1, redacted=REDACTED, provider="anthropic"),
        TextDelta("Let me look that up."),
        ToolCallDelta(0, id=CALL_ID, name="get_tide"),
        ToolCallDelta(0, arguments='{"port": "Ber'),
        ToolCallDelta(0, arguments='gen"}'),
    ]
    assert events[0] == StreamStart(
        model=f"anthropic/{MODEL}", request_id="req_v2_stream", served_model=SERVED
    )
    assert events[-1] == StreamEnd(FinishReason.TOOL_CALLS)
    assert response.reasoning == THOUGHT_1 + THOUGHT_2
    assert response.reasoning_parts == EXPECTED_PARTS
    assert response.tool_calls == (EXPECTED_CALL,)
    assert response.served_model == SERVED


async def test_stream_and_generate_give_the_same_answer(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """The streamed and the one-piece reply of the same answer aggregate identically."""
    server.routes["/v1/messages"] = reply(thinking_tool_message())
    model = provider(http, server).model(MODEL)
    generated = await model.generate("Tide?")
    server.routes["/v1/messages"] = stream_handler(thinking_tool_stream(), 64)
    _, streamed = await stream_all(model, "Tide?")
    for field in ("text", "tool_calls", "finish_reason", "usage", "reasoning"):
        assert getattr(streamed, field) == getattr(generated, field), field
    assert streamed.reasoning_parts == generated.reasoning_parts
    assert streamed.served_model == generated.served_model == SERVED


def test_stream_thinking_start_with_text_and_an_empty_thinking_block() -> None:
    """A thinking block's start text counts; an empty start commits nothing."""
    translator = _StreamTranslator(key="anthropic/m", request_id=None)

    def feed(event: dict[str, Any]) -> list[StreamEvent]:
        return translator.feed(ServerSentEvent(event["type"], compact(event)))

    assert feed(block_start(0, {"type": "thinking", "thinking": "", "signature": ""})) == []
    assert feed(block_start(2, {"type": "thinking", "thinking": "Hm.", "signature": ""})) == [
        ReasoningDelta("Hm.", index=2, provider="anthropic")
    ]
    assert feed(block_delta(2, {"type": "thinking_delta", "thinking": ""})) == []
    assert feed(block_start(3, {"type": "redacted_thinking", "data": ""})) == []


# --------------------------------------------------------------------------- thinking: requests


@pytest.mark.parametrize(
    ("options", "provider_default", "thinking", "sent_max_tokens"),
    [
        pytest.param(
            (reasoning("high"),),
            DEFAULT_MAX_TOKENS,
            {"type": "enabled", "budget_tokens": 24576},
            24576 + DEFAULT_MAX_TOKENS,
            id="effort-plus-default",
        ),
        pytest.param(
            (reasoning("minimal"), max_tokens(300)),
            DEFAULT_MAX_TOKENS,
            {"type": "enabled", "budget_tokens": 1024},
            1024 + 300,
            id="minimal-plus-max-tokens",
        ),
        pytest.param(
            (reasoning(budget_tokens=500), max_tokens(1000)),
            DEFAULT_MAX_TOKENS,
            {"type": "enabled", "budget_tokens": 1024},
            1024 + 1000,
            id="budget-raised-to-1024",
        ),
        pytest.param(
            (reasoning(budget_tokens=5000),),
            8192,
            {"type": "enabled", "budget_tokens": 5000},
            5000 + 8192,
            id="budget-plus-provider-default",
        ),
        pytest.param((reasoning("none"),), DEFAULT_MAX_TOKENS, None, DEFAULT_MAX_TOKENS, id="none"),
        pytest.param(
            (reasoning(budget_tokens=0), max_tokens(50)), DEFAULT_MAX_TOKENS, None, 50, id="zero"
        ),
        pytest.param((), DEFAULT_MAX_TOKENS, None, DEFAULT_MAX_TOKENS, id="no-reasoning"),
    ],
)
async def test_thinking_budget_and_max_tokens(
    http: HTTPSessionHolder,
    server: LocalServer,
    options: tuple[Any, ...],
    provider_default: int,
    thinking: dict[str, Any] | None,
    sent_max_tokens: int,
) -> None:
    """The budget is `reasoning.tokens(minimum=1024)`; `max_tokens` is the budget plus the
    request's max_tokens (or the provider's default), so it always exceeds the budget."""
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    model = provider(http, server, default_max_tokens=provider_default).model(MODEL)
    await model.generate(Request("Hi").apply(*options))
    body = sent(server)
    assert body.get("thinking") == thinking
    assert body["max_tokens"] == sent_max_tokens
    if thinking is not None:
        assert body["max_tokens"] > thinking["budget_tokens"]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param(
            (temperature(0.3), top_p(0.5)), {"top_p": 0.95}, id="temperature-dropped-top-p-raised"
        ),
        pytest.param((temperature(1.0), top_p(0.98)), {"top_p": 0.98}, id="top-p-in-range-kept"),
        pytest.param((top_p(1.0),), {"top_p": 1.0}, id="top-p-one"),
    ],
)
async def test_sampling_with_thinking_is_never_sent_raw(
    http: HTTPSessionHolder, server: LocalServer, options: tuple[Any, ...], expected: dict[str, Any]
) -> None:
    """With thinking, temperature is left out and top_p is kept within [0.95, 1]."""
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    await (
        provider(http, server)
        .model(MODEL)
        .generate(Request("Hi").apply(reasoning("low"), *options))
    )
    body = sent(server)
    assert "temperature" not in body
    assert {k: body[k] for k in ("top_p",) if k in body} == expected
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


async def test_sampling_without_thinking_is_sent_as_asked(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Without thinking (or with reasoning("none")) temperature and top_p go as they are."""
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    model = provider(http, server).model(MODEL)
    await model.generate(Request("Hi").apply(temperature(0.3), top_p(0.5)))
    await model.generate(Request("Hi").apply(reasoning("none"), temperature(0.3), top_p(0.5)))
    for index in (0, 1):
        body = sent(server, index)
        assert (body["temperature"], body["top_p"]) == (0.3, 0.5)
        assert "thinking" not in body


@pytest.mark.parametrize(
    ("choice", "thinks"),
    [("auto", True), ("none", True), ("required", False), ("get_tide", False)],
)
async def test_a_forced_tool_is_sent_without_thinking(
    http: HTTPSessionHolder, server: LocalServer, choice: str, thinks: bool
) -> None:
    """The API refuses thinking with a forced tool choice: such a request goes without it."""
    server.handler = reply(thinking_tool_message())
    request = Request("Tide?").apply(tools(TIDE), tool_choice(choice), reasoning("high"))
    await provider(http, server).model(MODEL).generate(request)
    body = sent(server)
    assert ("thinking" in body) is thinks
    assert body["max_tokens"] == (24576 if thinks else 0) + DEFAULT_MAX_TOKENS


# --------------------------------------------------------------------------- thinking: round trip


TOOL_RESULT = '{"high_water": "14:32", "height_m": 1.2}'

SECOND_TURN_MESSAGES = [
    {"role": "user", "content": "Tide in Bergen?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": THOUGHT_1 + THOUGHT_2, "signature": SIGNATURE},
            {"type": "redacted_thinking", "data": REDACTED},
            {"type": "text", "text": "Let me look that up."},
            {"type": "tool_use", "id": CALL_ID, "name": "get_tide", "input": {"port": "Bergen"}},
        ],
    },
    {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": CALL_ID, "content": TOOL_RESULT}],
    },
]


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
async def test_thinking_blocks_go_back_first_in_a_tool_conversation(
    http: HTTPSessionHolder, server: LocalServer, streaming: bool
) -> None:
    """The answer's message, appended to the history, sends its thinking blocks back
    first in its turn, exactly as received, then the text and the call."""
    model = provider(http, server).model(MODEL)
    first = Request("Tide in Bergen?").apply(tools(TIDE), reasoning("medium"))
    if streaming:
        server.handler = stream_handler(thinking_tool_stream(), 1)
        _, response = await stream_all(model, first)
    else:
        server.handler = reply(thinking_tool_message())
        response = await model.generate(first)
    history = (*first.messages, response.message, Message.tool_result(CALL_ID, TOOL_RESULT))
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    await model.generate(Request(history).apply(tools(TIDE), reasoning("medium")))
    body = sent(server)
    assert body["messages"] == SECOND_TURN_MESSAGES
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}


async def test_reasoning_parts_are_sent_first_and_foreign_ones_dropped(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Anthropic parts lead their turn wherever the caller put them; parts of other
    families, unsigned parts, and reasoning in a user turn are dropped silently."""
    thought = ReasoningPart("Plan.", signature="sig-1", provider="anthropic")
    history = [
        Message.user("Hi"),
        Message.assistant(
            "Hello.",
            ReasoningPart("gemini thought", signature="g-sig", provider="gemini"),
            thought,
            ReasoningPart("openai summary", provider="openai"),
            ReasoningPart("cut short, never signed", provider="anthropic"),
        ),
        Message.user(ReasoningPart("stray", signature="s", provider="anthropic"), "And now?"),
        Message.assistant(ReasoningPart("only gemini", signature="g", provider="gemini"), "Sure."),
    ]
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    await provider(http, server).model(MODEL).generate(Request(history))
    assert sent(server)["messages"] == [
        {"role": "user", "content": "Hi"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Plan.", "signature": "sig-1"},
                {"type": "text", "text": "Hello."},
            ],
        },
        {"role": "user", "content": "And now?"},
        {"role": "assistant", "content": "Sure."},
    ]


# --------------------------------------------------------------------------- prompt caching

EPHEMERAL = {"type": "ephemeral"}


async def generate_body(
    http: HTTPSessionHolder, server: LocalServer, request: Request
) -> dict[str, Any]:
    """The body one generate of `request` sends."""
    server.handler = reply(thinking_tool_message(stop_reason="end_turn"))
    await provider(http, server).model(MODEL).generate(request)
    return sent(server)


async def test_cache_system_sends_the_system_as_a_marked_block(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """cache(system=True): the system prompt becomes one text block with cache_control."""
    body = await generate_body(
        http, server, Request("Hi", system="Be terse.").apply(cache(system=True))
    )
    assert body["system"] == [{"type": "text", "text": "Be terse.", "cache_control": EPHEMERAL}]
    assert body["messages"] == [{"role": "user", "content": "Hi"}]


async def test_no_marks_and_marks_without_targets_change_nothing(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """Without breakpoints the system stays a string; a mark with nothing to mark is a no-op."""
    body = await generate_body(http, server, Request("Hi", system="Be terse.").apply(tools(TIDE)))
    assert body["system"] == "Be terse."
    assert "cache_control" not in json.dumps(body)
    body = await generate_body(http, server, Request("Hi").apply(cache(system=True, tools=True)))
    assert "system" not in body and "tools" not in body
    assert "cache_control" not in json.dumps(body)


async def test_cache_tools_marks_the_last_tool(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """cache(tools=True): cache_control on the last tool definition only."""
    body = await generate_body(
        http, server, Request("Hi").apply(tools(TIDE, NOW), cache(tools=True))
    )
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][1] == {
        "name": "now",
        "description": "The current time",
        "input_schema": {"type": "object", "properties": {}},
        "cache_control": EPHEMERAL,
    }


async def test_message_breakpoints_mark_each_message_s_last_block(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """A user text keeps the block form for its mark; an assistant turn is marked on its
    last block (never a thinking block); a tool result merged into a user turn is marked
    on itself, not on the text that joins it."""
    thought = ReasoningPart("Plan.", signature="sig-1", provider="anthropic")
    history = [
        Message("user", "A long document…", cache_breakpoint=True),
        Message(
            "assistant",
            (
                thought,
                "Checking.",
                ToolCallPart(ToolCall(CALL_ID, "get_tide", '{"port":"Bergen"}')),
            ),
            cache_breakpoint=True,
        ),
        Message("tool", Message.tool_result(CALL_ID, TOOL_RESULT).parts, cache_breakpoint=True),
        Message.user("Thanks."),
        Message("assistant", (thought,), cache_breakpoint=True),  # nothing it may mark
    ]
    body = await generate_body(http, server, Request(history))
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "A long document…", "cache_control": EPHEMERAL}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Plan.", "signature": "sig-1"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": CALL_ID,
                    "name": "get_tide",
                    "input": {"port": "Bergen"},
                    "cache_control": EPHEMERAL,
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": CALL_ID,
                    "content": TOOL_RESULT,
                    "cache_control": EPHEMERAL,
                },
                {"type": "text", "text": "Thanks."},
            ],
        },
        {
            "role": "assistant",
            "content": [{"type": "thinking", "thinking": "Plan.", "signature": "sig-1"}],
        },
    ]


def marked(body: dict[str, Any]) -> list[str]:
    """Where the body carries cache_control: "tools", "system", or "message N"."""
    places: list[str] = []
    if any("cache_control" in tool for tool in body.get("tools", [])):
        places.append("tools")
    if isinstance(body.get("system"), list) and "cache_control" in body["system"][0]:
        places.append("system")
    for number, turn in enumerate(body["messages"]):
        content = turn["content"]
        if isinstance(content, list) and any("cache_control" in block for block in content):
            places.append(f"message {number}")
    return places


@pytest.mark.parametrize(
    ("message_marks", "expected"),
    [
        pytest.param(2, ["tools", "system", "message 0", "message 2"], id="four-kept"),
        pytest.param(3, ["system", "message 0", "message 2", "message 4"], id="tools-dropped"),
        pytest.param(5, ["message 2", "message 4", "message 6", "message 8"], id="last-four"),
    ],
)
async def test_at_most_four_breakpoints_the_last_ones_kept(
    http: HTTPSessionHolder, server: LocalServer, message_marks: int, expected: list[str]
) -> None:
    """Marks beyond the API's 4 are dropped from the front: tools, system, then messages."""
    history: list[Message] = []
    for number in range(message_marks):
        history.append(Message("user", f"Question {number}", cache_breakpoint=True))
        history.append(Message.assistant(f"Answer {number}"))
    history.append(Message.user("Last question"))
    request = Request(history, system="Be terse.").apply(
        tools(TIDE), cache(system=True, tools=True)
    )
    body = await generate_body(http, server, request)
    assert marked(body) == expected
    assert json.dumps(body).count('"cache_control"') == 4
    if "system" not in expected:
        assert body["system"] == "Be terse."  # an unmarked system stays a plain string


# --------------------------------------------------------------------------- usage


async def test_usage_totals_with_cache_fields_generate(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """input_tokens is input + cache reads + cache writes; both cache counts are kept."""
    body = thinking_tool_message(stop_reason="end_turn")
    body["usage"] = start_usage(3, cache_write=1200, cache_read=9000) | {"output_tokens": 55}
    server.handler = reply(body)
    response = await provider(http, server).model(MODEL).generate("Hi")
    assert response.usage == Usage(
        input_tokens=3 + 1200 + 9000,
        output_tokens=55,
        cached_input_tokens=9000,
        cache_write_tokens=1200,
        reasoning_tokens=0,
    )
    assert response.usage.total_tokens == 3 + 1200 + 9000 + 55


async def test_thinking_tokens_become_reasoning_tokens(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """`output_tokens_details.thinking_tokens`, when the API sends it, is the reasoning part."""
    body = thinking_tool_message(stop_reason="end_turn")
    body["usage"] |= {"output_tokens": 187, "output_tokens_details": {"thinking_tokens": 120}}
    server.handler = reply(body)
    response = await provider(http, server).model(MODEL).generate("Hi")
    assert (response.usage.output_tokens, response.usage.reasoning_tokens) == (187, 120)


@BYTE_BY_BYTE
@pytest.mark.parametrize(
    ("delta_usage", "expected"),
    [
        pytest.param(
            {"output_tokens": 55},
            Usage(3 + 1200 + 9000, 55, cached_input_tokens=9000, cache_write_tokens=1200),
            id="delta-with-output-only",
        ),
        pytest.param(
            {
                "input_tokens": 3,
                "cache_creation_input_tokens": 1200,
                "cache_read_input_tokens": 9000,
                "output_tokens": 55,
                "output_tokens_details": {"thinking_tokens": 40},
            },
            Usage(
                3 + 1200 + 9000,
                55,
                cached_input_tokens=9000,
                cache_write_tokens=1200,
                reasoning_tokens=40,
            ),
            id="cumulative-delta",
        ),
        pytest.param(
            {"input_tokens": None, "cache_read_input_tokens": None, "output_tokens": 55},
            Usage(3 + 1200 + 9000, 55, cached_input_tokens=9000, cache_write_tokens=1200),
            id="nulls-keep-the-start-counts",
        ),
    ],
)
async def test_usage_totals_with_cache_fields_stream(
    http: HTTPSessionHolder,
    server: LocalServer,
    chunk: int,
    delta_usage: dict[str, Any],
    expected: Usage,
) -> None:
    """message_start gives the input counts, message_delta cumulative ones that overwrite
    what they carry; the input total includes both cache counts."""
    body = sse(
        message_start(start_usage(3, cache_write=1200, cache_read=9000)),
        PING,
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, {"type": "text_delta", "text": "Short."}),
        block_stop(0),
        message_delta("end_turn", delta_usage),
        MESSAGE_STOP,
    )
    server.handler = stream_handler(body, chunk)
    events, response = await stream_all(provider(http, server).model(MODEL), "Hi")
    usages = [event.usage for event in events if isinstance(event, UsageUpdate)]
    assert usages[0] == Usage(3 + 1200 + 9000, 1, cached_input_tokens=9000, cache_write_tokens=1200)
    assert usages[-1] == response.usage == expected
    assert response.text == "Short."


# --------------------------------------------------------------------------- served model


@BYTE_BY_BYTE
async def test_served_model_in_stream_start(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """message_start.message.model is the served model; a stream without one has None."""
    model = provider(http, server).model("claude-haiku-4-5")
    for served in ("claude-haiku-4-5-20251001", None):
        body = sse(
            message_start(start_usage(), model=served),
            block_start(0, {"type": "text", "text": "Hei"}),
            block_stop(0),
            message_delta("end_turn", {"output_tokens": 2}),
            MESSAGE_STOP,
        )
        server.handler = stream_handler(body, chunk)
        events, response = await stream_all(model, "Hi")
        assert events[0] == StreamStart(
            model="anthropic/claude-haiku-4-5", request_id="req_v2_stream", served_model=served
        )
        assert response.served_model == served
        assert response.text == "Hei"


async def test_served_model_in_generate(http: HTTPSessionHolder, server: LocalServer) -> None:
    """The reply's `model` is the served model; a reply without one has None."""
    model = provider(http, server).model("claude-haiku-4-5")
    body = thinking_tool_message(stop_reason="end_turn") | {"model": "claude-haiku-4-5-20251001"}
    server.handler = reply(body)
    assert (await model.generate("Hi")).served_model == "claude-haiku-4-5-20251001"
    del body["model"]
    server.handler = reply(body)
    assert (await model.generate("Hi")).served_model is None


# --------------------------------------------------------------------------- finish reasons


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("tool_use", FinishReason.TOOL_CALLS),
        ("end_turn", FinishReason.TOOL_CALLS),  # a natural stop with calls: to call them
        ("stop_sequence", FinishReason.TOOL_CALLS),
        ("max_tokens", FinishReason.LENGTH),  # the calls may be cut: kept as it is
        ("refusal", FinishReason.CONTENT_FILTER),
    ],
)
@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
async def test_tool_call_finish_rule(
    http: HTTPSessionHolder,
    server: LocalServer,
    streaming: bool,
    stop_reason: str,
    expected: FinishReason,
) -> None:
    """An answer with tool_use blocks that stopped naturally finished to call them."""
    model = provider(http, server).model(MODEL)
    if streaming:
        server.handler = stream_handler(thinking_tool_stream(stop_reason=stop_reason), 97)
        events, response = await stream_all(model, "Tide?")
        assert events[-1] == StreamEnd(expected)
    else:
        server.handler = reply(thinking_tool_message(stop_reason=stop_reason))
        response = await model.generate("Tide?")
    assert response.finish_reason is expected


async def test_end_turn_without_calls_stays_a_stop(
    http: HTTPSessionHolder, server: LocalServer
) -> None:
    """No tool_use block, no TOOL_CALLS."""
    body = thinking_tool_message(stop_reason="end_turn")
    body["content"] = body["content"][:3]
    server.handler = reply(body)
    response = await provider(http, server).model(MODEL).generate("Hi")
    assert (response.finish_reason, response.tool_calls) == (FinishReason.STOP, ())


# --------------------------------------------------------------------------- 429 variants

RATE_LIMIT_MESSAGE = (
    "This request would exceed the rate limit for your organization "
    "(5576611f-a1ee-427c-9800-298d9579899c) of 50,000 input tokens per minute. For details, "
    "refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers "
    "for current usage. Please reduce the prompt length or the maximum tokens requested, or "
    "try again later. You may also contact sales at https://www.anthropic.com/contact-sales "
    "to discuss your options for a rate limit increase."
)
RATE_LIMIT_HEADERS = {
    "anthropic-ratelimit-input-tokens-limit": "50000",
    "anthropic-ratelimit-input-tokens-remaining": "0",
    "anthropic-ratelimit-input-tokens-reset": "2026-08-03T17:24:51Z",
}


def error_body(error_type: str, message: str, **extra: Any) -> dict[str, Any]:
    """An Anthropic error body, request_id included, as the API sends it."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message, **extra},
        "request_id": "req_011CVk9BQEnYiTudQzWPwnzN",
    }


RATE_LIMIT_CASES = [
    pytest.param(
        error_body("rate_limit_error", RATE_LIMIT_MESSAGE),
        {"retry-after": "11", **RATE_LIMIT_HEADERS},
        RateLimitError,
        11.0,
        None,
        ErrorClass.TRANSIENT,
        id="retry-after-and-ratelimit-headers",
    ),
    pytest.param(
        # The shape recorded in the SDK's own tests: only `x-should-retry: true`.
        error_body("rate_limit_error", RATE_LIMIT_MESSAGE),
        {"x-should-retry": "true"},
        RateLimitError,
        None,
        True,
        ErrorClass.TRANSIENT,
        id="only-x-should-retry",
    ),
    pytest.param(
        error_body("rate_limit_error", "Number of request tokens has exceeded your rate limit."),
        {},
        RateLimitError,
        None,
        None,
        ErrorClass.TRANSIENT,
        id="no-headers-a-gateway-dropped-them",
    ),
    pytest.param(
        error_body("rate_limit_error", RATE_LIMIT_MESSAGE),
        {"retry-after-ms": "1500", "retry-after": "2"},
        RateLimitError,
        1.5,
        None,
        ErrorClass.TRANSIENT,
        id="retry-after-ms-first",
    ),
    pytest.param(
        error_body("rate_limit_error", RATE_LIMIT_MESSAGE),
        {"x-should-retry": "false", "retry-after": "30"},
        RateLimitError,
        30.0,
        False,
        ErrorClass.PERMANENT,
        id="x-should-retry-false-wins",
    ),
    pytest.param(
        error_body(
            "rate_limit_error",
            "You have reached your specified API usage limits. "
            "You will regain access on 2026-09-01 at 00:00 UTC.",
        ),
        {},
        QuotaExceededError,
        None,
        None,
        ErrorClass.PERMANENT,
        id="spend-cap-by-wording",
    ),
    pytest.param(
        error_body(
            "rate_limit_error",
            "Spend limit reached.",
            details={"error_code": "enforced_spend_limit_reached"},
        ),
        {"retry-after": "3600"},
        QuotaExceededError,
        3600.0,
        None,
        ErrorClass.PERMANENT,
        id="spend-limit-code-despite-retry-after",
    ),
]


@pytest.mark.parametrize("streaming", [False, True], ids=["generate", "stream"])
@pytest.mark.parametrize(
    ("body", "headers", "kind", "retry_after", "should_retry", "verdict"), RATE_LIMIT_CASES
)
async def test_429_variants(
    http: HTTPSessionHolder,
    server: LocalServer,
    streaming: bool,
    body: dict[str, Any],
    headers: dict[str, str],
    kind: type[ProviderError],
    retry_after: float | None,
    should_retry: bool | None,
    verdict: ErrorClass,
) -> None:
    """A 429 is a rate limit unless the body says quota (its wording or the spend-limit
    code); a missing `retry-after` alone never makes it one. Headers give the hints."""
    server.handler = respond(429, body, headers=headers)
    model = provider(http, server).model(MODEL)
    with pytest.raises(ProviderError) as caught:
        if streaming:
            await model.stream("Hi")
        else:
            await model.generate("Hi")
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.code) == (429, "rate_limit_error")
    assert error.retry_after == retry_after
    assert error.should_retry is should_retry
    assert classify(error) is verdict
    assert error.request_id == "req_011CVk9BQEnYiTudQzWPwnzN"
    assert KEY not in str(error)


@BYTE_BY_BYTE
async def test_in_band_rate_limit_is_a_rate_limit(
    http: HTTPSessionHolder, server: LocalServer, chunk: int
) -> None:
    """An `event: error` of type rate_limit_error on a 200 stream is a RateLimitError."""
    body = sse(
        message_start(start_usage()),
        {"type": "error", "error": {"type": "rate_limit_error", "message": RATE_LIMIT_MESSAGE}},
    )
    server.handler = stream_handler(body, chunk)
    stream = await provider(http, server).model(MODEL).stream("Hi")
    with pytest.raises(RateLimitError) as caught:
        await stream.collect()
    assert classify(caught.value) is ErrorClass.TRANSIENT
    assert caught.value.request_id == "req_v2_stream"
