"""The Ollama provider's thinking (`think`, `message.thinking`, replay), usage, served
model and the tool-call finish rule, against a real local server.

Every reply here is shaped as Ollama's `/api/chat` writes it (docs/api.md,
docs/capabilities/thinking.mdx, `api.ChatResponse` in api/types.go, ollama-python's
examples): compact Go JSON, the fields in the struct's order, `message.thinking` next
to `message.content`, NDJSON streams whose last object has `"done": true`, the
`done_reason` and the counters. Every stream is played in several chunk sizes, one byte
at a time among them, and must give the same events.
"""

from __future__ import annotations

import json
from typing import Any, Final

import pytest

from majordomo_async import (
    FinishReason,
    HTTPSessionHolder,
    Message,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
    StreamEnd,
    StreamStart,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResultPart,
    Usage,
    UsageUpdate,
    reasoning,
)
from majordomo_async._events import StreamEvent
from majordomo_async._http import Timeouts
from majordomo_async._providers.ollama import OllamaProvider

from .helpers.servers import LocalServer, play, respond

CHAT_PATH: Final = "/api/chat"
CHUNKS = pytest.mark.parametrize("size", [1, 4, 64, 1 << 20], ids=lambda n: f"chunk{n}")
"""Every stream is replayed one byte at a time, in small and medium pieces, and whole."""

WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def dumps(value: Any) -> str:
    """JSON as Go's encoder writes it: compact, UTF-8."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ndjson(*objects: Any) -> bytes:
    """An NDJSON stream body: one object per `\\n`-terminated line."""
    return b"".join(f"{dumps(obj)}\n".encode() for obj in objects)


def piece(
    model: str, at: str, *, content: str = "", thinking: str = "", **message: Any
) -> dict[str, Any]:
    """A stream object before the last one (`"done": false`)."""
    body: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        body["thinking"] = thinking
    body.update(message)
    return {"model": model, "created_at": at, "message": body, "done": False}


def final(
    model: str,
    at: str,
    *,
    reason: str = "stop",
    prompt: int = 0,
    output: int = 0,
    content: str = "",
    thinking: str = "",
    **message: Any,
) -> dict[str, Any]:
    """The last object (a stream's, or a whole reply): `done_reason`, `done`, counters."""
    body: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        body["thinking"] = thinking
    body.update(message)
    return {
        "model": model,
        "created_at": at,
        "message": body,
        "done_reason": reason,
        "done": True,
        "total_duration": 4_883_583_458,
        "load_duration": 1_334_875,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": 62_458_000,
        "eval_count": output,
        "eval_duration": 4_815_209_458,
    }


def provider(server: LocalServer, http: HTTPSessionHolder) -> OllamaProvider:
    """A provider on the local server (short timeouts: nothing here waits)."""
    timeouts = Timeouts(
        connect=2.0, headers=5.0, generate=5.0, first_token=5.0, reasoning_first_token=5.0, idle=5.0
    )
    return OllamaProvider("ollama", api_key=None, base_url=server.url, http=http, timeouts=timeouts)


async def generate(
    server: LocalServer,
    http: HTTPSessionHolder,
    reply: Any,
    *,
    model: str = "qwen3:8b",
    request: Request | str = "Hi",
) -> Response:
    """The response to `request` when the server answers `reply`."""
    server.routes[CHAT_PATH] = respond(200, dumps(reply), content_type="application/json")
    return await provider(server, http).model(model).generate(request)


async def stream_events(
    server: LocalServer,
    http: HTTPSessionHolder,
    body: bytes,
    *,
    size: int,
    model: str = "qwen3:8b",
    request: Request | str = "Hi",
) -> tuple[list[StreamEvent], Response]:
    """Every event of a stream whose body is `body`, played `size` bytes at a time, and
    the response the stream assembled."""
    server.routes[CHAT_PATH] = play(body, chunk=size, content_type="application/x-ndjson")
    async with await provider(server, http).model(model).stream(request) as stream:
        events = [event async for event in stream]
        return events, stream.response


def sent_body(server: LocalServer) -> Any:
    """The JSON body of the last request the server received."""
    return server.requests[-1].json()


# --------------------------------------------------------------------------- the think field


@pytest.mark.parametrize(
    ("model", "option", "think"),
    [
        ("qwen3:8b", reasoning("high"), True),
        ("qwen3:8b", reasoning("none"), False),
        ("deepseek-r1:14b", reasoning(budget_tokens=4096), True),
        ("deepseek-r1:14b", reasoning(budget_tokens=0), False),
        # gpt-oss takes a level; it cannot stop reasoning, so "none" is its lowest.
        ("gpt-oss:20b", reasoning("high"), "high"),
        ("gpt-oss:20b", reasoning("medium"), "medium"),
        ("gpt-oss:20b", reasoning("low"), "low"),
        ("gpt-oss:20b", reasoning("minimal"), "low"),
        ("gpt-oss:20b", reasoning("none"), "low"),
        ("gpt-oss:120b-cloud", reasoning(budget_tokens=8192), "medium"),
        ("library/GPT-OSS:latest", reasoning(budget_tokens=30_000), "high"),
    ],
)
async def test_think_on_the_wire(
    server: LocalServer, http: HTTPSessionHolder, model: str, option: Any, think: Any
) -> None:
    """`reasoning()` becomes `think`: a boolean, or a level for gpt-oss."""
    reply = final(model, "2026-03-02T09:20:00.1Z", content="ok", prompt=3, output=1)
    await generate(server, http, reply, model=model, request=Request("Hi").apply(option))
    assert sent_body(server)["think"] == think


async def test_no_reasoning_option_sends_no_think(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Without `reasoning()` the model does what it does by default: no `think`."""
    await generate(server, http, final("qwen3:8b", "2026-03-02T09:20:00Z", content="ok"))
    assert "think" not in sent_body(server)


# --------------------------------------------------------------------------- replies


THINKING = "Okay, the user asks how many r's are in strawberry. Let me count: s-t-r-a-w-b-e-r-r-y."
ANSWER = "There are **3** r's in strawberry."


async def test_generate_thinking_usage_and_served_model(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """`message.thinking` is the reasoning; `model` is the served model; the counts."""
    reply = final(
        "qwen3:8b",
        "2026-03-02T09:35:56.836222Z",
        content=ANSWER,
        thinking=THINKING,
        prompt=18,
        output=142,
    )
    response = await generate(server, http, reply, model="qwen3")
    assert response.text == ANSWER
    assert response.reasoning == THINKING
    assert response.reasoning_parts == (ReasoningPart(THINKING, provider="ollama"),)
    assert response.served_model == "qwen3:8b"
    assert response.model == "ollama/qwen3"
    # eval_count counts the thinking too; Ollama gives no cache or reasoning counts.
    assert response.usage == Usage(input_tokens=18, output_tokens=142)
    assert response.finish_reason is FinishReason.STOP


def thinking_stream(model: str = "qwen3:8b") -> bytes:
    """A thinking model's stream: trace pieces, then answer pieces, then the end."""
    at = "2026-03-02T09:40:0{}.0Z".format
    return ndjson(
        piece(model, at(0), thinking="Okay, the user asks"),
        piece(model, at(1), thinking=" how many r's are in strawberry."),
        piece(model, at(2), thinking=" Let me count: s-t-r-a-w-b-e-r-r-y."),
        piece(model, at(3), content="There are **3** r's"),
        piece(model, at(4), content=" in strawberry."),
        final(model, at(5), prompt=18, output=142),
    )


@CHUNKS
async def test_stream_thinking_usage_and_served_model(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """Trace pieces stream as one reasoning block (index 0), before the answer."""
    events, response = await stream_events(server, http, thinking_stream(), size=size)
    assert events[0] == StreamStart("ollama/qwen3:8b", None, "qwen3:8b")
    assert events[1:] == [
        ReasoningDelta("Okay, the user asks", provider="ollama"),
        ReasoningDelta(" how many r's are in strawberry.", provider="ollama"),
        ReasoningDelta(" Let me count: s-t-r-a-w-b-e-r-r-y.", provider="ollama"),
        TextDelta("There are **3** r's"),
        TextDelta(" in strawberry."),
        UsageUpdate(Usage(18, 142)),
        StreamEnd(FinishReason.STOP),
    ]
    assert response.text == ANSWER
    assert response.reasoning == THINKING
    assert response.reasoning_parts == (ReasoningPart(THINKING, provider="ollama"),)
    assert response.served_model == "qwen3:8b"
    # The same as the same answer not streamed.
    generated = await generate(
        server,
        http,
        final("qwen3:8b", "2026-03-02T09:41:00Z", content=ANSWER, thinking=THINKING),
    )
    assert generated.reasoning_parts == response.reasoning_parts


@CHUNKS
async def test_stream_served_model_is_the_reported_one(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """The served model is what the server names (a tag resolved), not the id asked for."""
    at = "2026-03-02T09:50:00Z"
    body = ndjson(piece("llama3.2:latest", at, content="Hi"), final("llama3.2:latest", at))
    events, response = await stream_events(server, http, body, size=size, model="llama3.2")
    assert events[0] == StreamStart("ollama/llama3.2", None, "llama3.2:latest")
    assert response.served_model == "llama3.2:latest"
    assert response.model == "ollama/llama3.2"
    assert response.reasoning_parts == ()


# --------------------------------------------------------------------------- replay


async def test_thinking_goes_back_in_history(server: LocalServer, http: HTTPSessionHolder) -> None:
    """An Ollama answer's trace goes back as the assistant message's `thinking`."""
    reply = final("qwen3:8b", "2026-03-02T10:00:00Z", content=ANSWER, thinking=THINKING)
    answer = await generate(server, http, reply)
    request = Request([Message.user("How many r's?"), answer.message, Message.user("Sure?")])
    await generate(server, http, reply, request=request)
    assert sent_body(server)["messages"] == [
        {"role": "user", "content": "How many r's?"},
        {"role": "assistant", "content": ANSWER, "thinking": THINKING},
        {"role": "user", "content": "Sure?"},
    ]


async def test_other_families_reasoning_is_dropped(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Another family's reasoning (and a signature-only part) is not sent to Ollama."""
    turn = Message.assistant(
        ReasoningPart("Let me think.", "EqQBCkYIBxgCKkD", provider="anthropic"),
        ReasoningPart(signature="CiQBjz1rX3Yy", provider="gemini"),
        "Three.",
    )
    request = Request([Message.user("How many?"), turn, Message.user("Sure?")])
    await generate(
        server, http, final("qwen3:8b", "2026-03-02T10:01:00Z", content="Yes."), request=request
    )
    assert sent_body(server)["messages"][1] == {"role": "assistant", "content": "Three."}


@CHUNKS
async def test_gpt_oss_tool_call_with_thinking_round_trip(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """gpt-oss reasons, then calls a tool: the turn goes back with its trace and call."""
    model = "gpt-oss:20b"
    at = "2026-03-02T10:10:00Z"
    call = {
        "id": "call_x7f3",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Oslo"}},
    }
    body = ndjson(
        piece(model, at, thinking="User wants weather in Oslo."),
        piece(model, at, thinking=" Use get_weather."),
        piece(model, at, tool_calls=[call]),
        final(model, at, prompt=140, output=31),
    )
    request = Request("Weather in Oslo?", tools=[WEATHER]).apply(reasoning("high"))
    events, answer = await stream_events(
        server, http, body, size=size, model=model, request=request
    )
    assert sent_body(server)["think"] == "high"
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, "call_x7f3", "get_weather", '{"city": "Oslo"}')
    ]
    assert events[-1] == StreamEnd(FinishReason.TOOL_CALLS)
    assert answer.reasoning == "User wants weather in Oslo. Use get_weather."
    follow_up = Request(
        [
            Message.user("Weather in Oslo?"),
            answer.message,
            Message("tool", [ToolResultPart("call_x7f3", '{"temp_c": 4}')]),
        ],
        tools=[WEATHER],
    )
    await generate(
        server, http, final(model, at, content="4°C in Oslo."), model=model, request=follow_up
    )
    assert sent_body(server)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "thinking": "User wants weather in Oslo. Use get_weather.",
            "tool_calls": [
                {
                    "id": "call_x7f3",
                    "function": {"name": "get_weather", "arguments": {"city": "Oslo"}},
                }
            ],
        },
        {
            "role": "tool",
            "content": '{"temp_c": 4}',
            "tool_name": "get_weather",
            "tool_call_id": "call_x7f3",
        },
    ]


# --------------------------------------------------------------------------- the finish rule


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", FinishReason.TOOL_CALLS), ("length", FinishReason.LENGTH)],
)
async def test_generate_tool_call_finish_rule(
    server: LocalServer, http: HTTPSessionHolder, reason: str, expected: FinishReason
) -> None:
    """Ollama says "stop" with tool calls: that is TOOL_CALLS; a "length" cut stays LENGTH."""
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    reply = final("qwen3:8b", "2026-03-02T10:20:00Z", reason=reason, tool_calls=[call])
    response = await generate(server, http, reply)
    assert response.finish_reason is expected
    assert response.tool_calls == (ToolCall("call_0", "get_weather", '{"city": "Oslo"}'),)


@CHUNKS
@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", FinishReason.TOOL_CALLS), ("length", FinishReason.LENGTH)],
)
async def test_stream_tool_call_finish_rule(
    server: LocalServer, http: HTTPSessionHolder, size: int, reason: str, expected: FinishReason
) -> None:
    """The same in a stream: the calls come whole before the final object."""
    at = "2026-03-02T10:21:00Z"
    call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    body = ndjson(piece("qwen3:8b", at, tool_calls=[call]), final("qwen3:8b", at, reason=reason))
    events, response = await stream_events(server, http, body, size=size)
    assert events[-1] == StreamEnd(expected)
    assert response.finish_reason is expected


@CHUNKS
async def test_text_stream_that_ran_out_is_length(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """Without calls the wire's reason stands."""
    at = "2026-03-02T10:22:00Z"
    body = ndjson(piece("qwen3:8b", at, content="Once"), final("qwen3:8b", at, reason="length"))
    events, _ = await stream_events(server, http, body, size=size)
    assert events[-1] == StreamEnd(FinishReason.LENGTH)
