"""The Gemini provider's thinking, thought signatures, usage detail, served model, the
tool-call finish rule and whole-body errors, against a real local server.

Every reply here is shaped as the Gemini Developer API shapes it (ai.google.dev API
reference and the thinking / thought-signature guides; python-genai's types): camelCase
fields, `modelVersion` and `responseId` on every reply and chunk, SSE `data:` events
with CRLF line endings and no sentinel, JSON with Google's separators (`,` between items,
`": "` after keys). Every stream is played in several chunk sizes, one byte at a time
among them, and must give the same events.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

import pytest

from majordomo_async import (
    FinishReason,
    HTTPSessionHolder,
    Message,
    OverloadedError,
    ProviderError,
    RateLimitError,
    ReasoningDelta,
    ReasoningPart,
    Request,
    Response,
    ServerError,
    StreamEnd,
    StreamStart,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
    UsageUpdate,
    reasoning,
)
from majordomo_async._events import StreamEvent
from majordomo_async._providers.gemini import GeminiProvider, _model_path

from .helpers.servers import LocalServer, play, respond

KEY: Final = "AIzaSyTEST-gemini-v2-0123456789abcdef"
CHUNKS = pytest.mark.parametrize("size", [1, 5, 64, 1 << 20], ids=lambda n: f"chunk{n}")
"""Every stream is replayed one byte at a time, in small and medium pieces, and whole."""

SIG_CALL: Final = "CiQBjz1rX3Yy4b8Nl2bVn+Zz8a1Y2q3r4s5t6u7v8w9x0y1z2A3B4C5D6E7F8G9H0I=="
SIG_TEXT: Final = "EjQKMgEMOdbHw3hCq0gPl1mNn2oOp3qQr4sS5tT6uU7vV8wW9xX0yY1zZ2aA3bB4=="
SIG_THOUGHT: Final = "CtcBAdHtim9s3cK2u1pZx0yW+vUt/SrQpOnMlKjIhGfEdCbA9z8Y7x6W5v4U3t2S1r=="

WEATHER = Tool(
    "get_weather",
    "Current weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def dumps(value: Any) -> str:
    """JSON as Gemini writes it: no space after an item's comma, one after a key's colon."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ": "))


def sse(*chunks: Any) -> bytes:
    """A `streamGenerateContent?alt=sse` body: one `data:` event per chunk, CRLF lines."""
    return b"".join(f"data: {dumps(chunk)}\r\n\r\n".encode() for chunk in chunks)


def chunk(
    parts: list[dict[str, Any]],
    *,
    usage: dict[str, Any],
    finish: str | None = None,
    model: str = "gemini-2.5-flash",
    response_id: str = "Xq1kaNb2E4mFz7IPq8OY8Ak",
) -> dict[str, Any]:
    """One `GenerateContentResponse`, as a stream chunk or a whole reply."""
    candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = 0
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": response_id,
    }


def usage_md(prompt: int, candidates: int | None = None, **extra: int) -> dict[str, Any]:
    """`usageMetadata` with the fields in Gemini's order (`candidatesTokenCount` only once
    there are candidates, `thoughtsTokenCount` and the cache counts when there are any)."""
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        meta["candidatesTokenCount"] = candidates
    total = prompt + (candidates or 0) + extra.get("thoughtsTokenCount", 0)
    total += extra.get("toolUsePromptTokenCount", 0)
    meta["totalTokenCount"] = total
    if "cachedContentTokenCount" in extra:
        meta["cachedContentTokenCount"] = extra["cachedContentTokenCount"]
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if "cachedContentTokenCount" in extra:
        cached = extra["cachedContentTokenCount"]
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    for name in ("toolUsePromptTokenCount", "thoughtsTokenCount"):
        if name in extra:
            meta[name] = extra[name]
    return meta


def chunk_of(parts: list[dict[str, Any]], finish: str | None = None) -> dict[str, Any]:
    """A stream chunk of `parts` with small running usage."""
    return chunk(parts, usage=usage_md(5, 1, thoughtsTokenCount=8), finish=finish)


def provider(server: LocalServer, http: HTTPSessionHolder) -> GeminiProvider:
    """A provider on the local server, with the test key."""
    return GeminiProvider("gemini", api_key=KEY, base_url=f"{server.url}/v1beta", http=http)


def stream_path(model: str) -> str:
    """Where a stream for `model` goes."""
    return f"/v1beta/{_model_path(model)}:streamGenerateContent"


def generate_path(model: str) -> str:
    """Where a generate for `model` goes."""
    return f"/v1beta/{_model_path(model)}:generateContent"


async def stream_events(
    server: LocalServer,
    http: HTTPSessionHolder,
    body: bytes,
    *,
    chunk_size: int,
    model: str = "gemini-2.5-flash",
    request: Request | str = "Hi",
) -> tuple[list[StreamEvent], Response]:
    """Every event of a stream whose body is `body`, played `chunk_size` bytes at a time,
    and the response the stream assembled."""
    server.routes[stream_path(model)] = play(body, chunk=chunk_size)
    async with await provider(server, http).model(model).stream(request) as stream:
        events = [event async for event in stream]
        return events, stream.response


async def generate(
    server: LocalServer,
    http: HTTPSessionHolder,
    reply: Any,
    *,
    model: str = "gemini-2.5-flash",
    request: Request | str = "Hi",
) -> Response:
    """The response to `request` when the server answers `reply`."""
    server.routes[generate_path(model)] = respond(200, dumps(reply))
    return await provider(server, http).model(model).generate(request)


def sent_body(server: LocalServer) -> Any:
    """The JSON body of the last request the server received."""
    return server.requests[-1].json()


# --------------------------------------------------------------------------- thinking config


@pytest.mark.parametrize(
    ("model", "option", "config"),
    [
        # 2.5 Flash: a budget (0-24576); 0 turns thinking off.
        (
            "gemini-2.5-flash",
            reasoning("medium"),
            {"thinkingBudget": 8192, "includeThoughts": True},
        ),
        ("gemini-2.5-flash", reasoning("none"), {"thinkingBudget": 0, "includeThoughts": False}),
        (
            "gemini-2.5-flash",
            reasoning(budget_tokens=100_000),
            {"thinkingBudget": 24576, "includeThoughts": True},
        ),
        (
            "gemini-2.5-flash",
            reasoning("high", summary=False),
            {"thinkingBudget": 24576, "includeThoughts": False},
        ),
        # 2.5 Pro: 128-32768 and it cannot stop thinking.
        ("gemini-2.5-pro", reasoning("none"), {"thinkingBudget": 128, "includeThoughts": False}),
        (
            "gemini-2.5-pro",
            reasoning(budget_tokens=64),
            {"thinkingBudget": 128, "includeThoughts": True},
        ),
        (
            "gemini-2.5-pro",
            reasoning(budget_tokens=50_000),
            {"thinkingBudget": 32768, "includeThoughts": True},
        ),
        # 2.5 Flash-Lite: 512-24576, or 0.
        (
            "gemini-2.5-flash-lite",
            reasoning(budget_tokens=100),
            {"thinkingBudget": 512, "includeThoughts": True},
        ),
        (
            "gemini-2.5-flash-lite",
            reasoning("none"),
            {"thinkingBudget": 0, "includeThoughts": False},
        ),
        # Another budget model: the budget as asked.
        (
            "gemini-2.0-flash-thinking-exp-01-21",
            reasoning(budget_tokens=3000),
            {"thinkingBudget": 3000, "includeThoughts": True},
        ),
        # Gemini 3 takes a level; 3 Pro knows "low" and "high" only.
        (
            "gemini-3-pro-preview",
            reasoning("medium"),
            {"thinkingLevel": "high", "includeThoughts": True},
        ),
        (
            "gemini-3-pro-preview",
            reasoning("low"),
            {"thinkingLevel": "low", "includeThoughts": True},
        ),
        (
            "gemini-3-pro-preview",
            reasoning("none"),
            {"thinkingLevel": "low", "includeThoughts": False},
        ),
        (
            "gemini-3-pro-preview",
            reasoning("minimal"),
            {"thinkingLevel": "low", "includeThoughts": True},
        ),
        # Later 3.x Pro models add "medium"; Flash models have all four.
        (
            "gemini-3.1-pro-preview",
            reasoning("medium"),
            {"thinkingLevel": "medium", "includeThoughts": True},
        ),
        (
            "gemini-3-flash-preview",
            reasoning("minimal"),
            {"thinkingLevel": "minimal", "includeThoughts": True},
        ),
        (
            "gemini-3-flash-preview",
            reasoning("none"),
            {"thinkingLevel": "minimal", "includeThoughts": False},
        ),
        (
            "gemini-3-flash-preview",
            reasoning(budget_tokens=2048),
            {"thinkingLevel": "low", "includeThoughts": True},
        ),
        (
            "models/gemini-3-flash-preview",
            reasoning("high"),
            {"thinkingLevel": "high", "includeThoughts": True},
        ),
    ],
)
async def test_thinking_config_on_the_wire(
    server: LocalServer, http: HTTPSessionHolder, model: str, option: Any, config: Any
) -> None:
    """`reasoning()` becomes `generationConfig.thinkingConfig`, kept to the model's range."""
    reply = chunk([{"text": "ok"}], usage=usage_md(3, 1), finish="STOP", model=model)
    await generate(server, http, reply, model=model, request=Request("Hi").apply(option))
    assert sent_body(server)["generationConfig"]["thinkingConfig"] == config


async def test_no_reasoning_option_sends_no_thinking_config(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Without `reasoning()` the model thinks as it does by default: nothing is sent."""
    reply = chunk([{"text": "ok"}], usage=usage_md(3, 1), finish="STOP")
    await generate(server, http, reply)
    assert "generationConfig" not in sent_body(server)


# --------------------------------------------------------------------------- thought summaries


THOUGHT_REPLY = chunk(
    [
        {
            "text": "**Identifying the capital**\n\nThe user asks for Norway's capital.",
            "thought": True,
        },
        {"text": "Oslo is the capital of Norway.", "thoughtSignature": SIG_TEXT},
    ],
    usage=usage_md(9, 7, cachedContentTokenCount=4, thoughtsTokenCount=112),
    finish="STOP",
    model="gemini-2.5-flash-preview-09-2025",
)


async def test_generate_thoughts_usage_and_served_model(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Thought parts are reasoning, not text; thinking and cache counts; `modelVersion`."""
    response = await generate(server, http, THOUGHT_REPLY, model="gemini-flash-latest")
    assert response.text == "Oslo is the capital of Norway."
    assert response.reasoning == (
        "**Identifying the capital**\n\nThe user asks for Norway's capital."
    )
    assert response.reasoning_parts == (
        ReasoningPart(response.reasoning, provider="gemini"),
        ReasoningPart(signature=SIG_TEXT, provider="gemini"),
    )
    # promptTokenCount already holds the cached part; thoughts are added to the output.
    assert response.usage == Usage(
        input_tokens=9, output_tokens=119, cached_input_tokens=4, reasoning_tokens=112
    )
    assert response.served_model == "gemini-2.5-flash-preview-09-2025"
    assert response.model == "gemini/gemini-flash-latest"
    assert response.finish_reason is FinishReason.STOP


THOUGHT_STREAM = sse(
    chunk(
        [{"text": "**Identifying the capital**\n\nThe user asks", "thought": True}],
        usage=usage_md(9, thoughtsTokenCount=60),
    ),
    chunk(
        [{"text": " for Norway's capital.", "thought": True}],
        usage=usage_md(9, thoughtsTokenCount=112),
    ),
    chunk([{"text": "Oslo is the capital"}], usage=usage_md(9, 4, thoughtsTokenCount=112)),
    chunk([{"text": " of Norway."}], usage=usage_md(9, 7, thoughtsTokenCount=112)),
    # Gemini 3 style: the signature comes last, on a part with empty text.
    chunk(
        [{"text": "", "thoughtSignature": SIG_TEXT}],
        usage=usage_md(9, 7, cachedContentTokenCount=4, thoughtsTokenCount=112),
        finish="STOP",
    ),
)


@CHUNKS
async def test_stream_thoughts_usage_and_served_model(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """Thought pieces stream as one reasoning block; the signature is a block of its own."""
    events, response = await stream_events(server, http, THOUGHT_STREAM, chunk_size=size)
    assert events[0] == StreamStart(
        "gemini/gemini-2.5-flash", "Xq1kaNb2E4mFz7IPq8OY8Ak", "gemini-2.5-flash"
    )
    content = [e for e in events if isinstance(e, ReasoningDelta | TextDelta)]
    assert content == [
        ReasoningDelta("**Identifying the capital**\n\nThe user asks", 0, provider="gemini"),
        ReasoningDelta(" for Norway's capital.", 0, provider="gemini"),
        TextDelta("Oslo is the capital"),
        TextDelta(" of Norway."),
        ReasoningDelta("", 1, SIG_TEXT, provider="gemini"),
    ]
    assert events[-2:] == [
        UsageUpdate(Usage(9, 119, cached_input_tokens=4, reasoning_tokens=112)),
        StreamEnd(FinishReason.STOP),
    ]
    assert response.text == "Oslo is the capital of Norway."
    assert response.served_model == "gemini-2.5-flash"
    assert response.usage == Usage(9, 119, cached_input_tokens=4, reasoning_tokens=112)
    # The same reasoning blocks as the same answer not streamed.
    generated = await generate(server, http, THOUGHT_REPLY)
    assert response.reasoning == generated.reasoning
    assert response.reasoning_parts == generated.reasoning_parts


@CHUNKS
async def test_a_signed_thought_part_closes_its_block(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """A signature on a thought part ends that block: the next thought starts another."""
    body = sse(
        chunk_of([{"text": "First, the units.", "thought": True}]),
        chunk_of([{"text": "", "thought": True, "thoughtSignature": SIG_THOUGHT}]),
        chunk_of([{"text": "Then the sum.", "thought": True}]),
        chunk_of([{"text": "42"}], finish="STOP"),
    )
    events, response = await stream_events(server, http, body, chunk_size=size)
    assert [e for e in events if isinstance(e, ReasoningDelta)] == [
        ReasoningDelta("First, the units.", 0, provider="gemini"),
        ReasoningDelta("", 0, SIG_THOUGHT, provider="gemini"),
        ReasoningDelta("Then the sum.", 1, provider="gemini"),
    ]
    assert response.reasoning_parts == (
        ReasoningPart("First, the units.", SIG_THOUGHT, provider="gemini"),
        ReasoningPart("Then the sum.", provider="gemini"),
    )
    assert response.reasoning == "First, the units.Then the sum."
    assert response.text == "42"


# --------------------------------------------------------------------------- signatures replayed


CALLS_REPLY = chunk(
    [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": SIG_CALL,
        },
        {"functionCall": {"name": "get_weather", "args": {"city": "London"}}},
    ],
    usage=usage_md(58, 30, thoughtsTokenCount=96),
    finish="STOP",
    model="gemini-3-pro-preview",
)
"""Gemini 3's parallel calls: only the first carries the step's signature."""


def follow_up(answer: Response) -> Request:
    """The next request of a tool conversation: the answer's turn and both results."""
    return Request(
        [
            Message.user("Weather in Paris and London?"),
            answer.message,
            Message("tool", [ToolResultPart(answer.tool_calls[0].id, '{"temp_c": 18}')]),
            Message("tool", [ToolResultPart(answer.tool_calls[1].id, '{"temp_c": 14}')]),
        ],
        tools=[WEATHER],
    )


async def test_generated_call_signature_goes_back_on_its_call(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Gemini 3 needs the call's signature back: the replayed turn is the one it sent."""
    model = "gemini-3-pro-preview"
    answer = await generate(server, http, CALLS_REPLY, model=model)
    assert answer.finish_reason is FinishReason.TOOL_CALLS
    assert answer.tool_calls == (
        ToolCall("call_0", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_1", "get_weather", '{"city": "London"}'),
    )
    assert answer.reasoning_parts == (ReasoningPart(signature=SIG_CALL, provider="gemini"),)
    assert answer.reasoning == ""
    reply = chunk([{"text": "Paris 18°C, London 14°C."}], usage=usage_md(90, 9), finish="STOP")
    await generate(server, http, reply, model=model, request=follow_up(answer))
    contents = sent_body(server)["contents"]
    assert contents[1] == CALLS_REPLY["candidates"][0]["content"]
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
            {"functionResponse": {"name": "get_weather", "response": {"temp_c": 14}}},
        ],
    }


@CHUNKS
async def test_streamed_call_signature_goes_back_on_its_call(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """The same from a stream, where each call arrives whole in its own chunk."""
    model = "gemini-3-pro-preview"
    parts = CALLS_REPLY["candidates"][0]["content"]["parts"]
    body = sse(
        chunk([parts[0]], usage=usage_md(58, 15), model=model),
        chunk(
            [parts[1]], usage=usage_md(58, 30, thoughtsTokenCount=96), finish="STOP", model=model
        ),
    )
    events, answer = await stream_events(server, http, body, chunk_size=size, model=model)
    assert [e for e in events if isinstance(e, ToolCallDelta | ReasoningDelta)] == [
        ToolCallDelta(0, "call_0", "get_weather", '{"city": "Paris"}'),
        ReasoningDelta("", 0, SIG_CALL, provider="gemini"),
        ToolCallDelta(1, "call_1", "get_weather", '{"city": "London"}'),
    ]
    assert events[-1] == StreamEnd(FinishReason.TOOL_CALLS)
    assert answer.usage == Usage(58, 126, reasoning_tokens=96)
    reply = chunk([{"text": "Done."}], usage=usage_md(90, 2), finish="STOP")
    await generate(server, http, reply, model=model, request=follow_up(answer))
    assert sent_body(server)["contents"][1] == CALLS_REPLY["candidates"][0]["content"]


async def test_text_signature_goes_back_on_the_text(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """An answer without calls is signed on its last part: the replayed text carries it,
    a signed thought goes first as the thought part it was, an unsigned one is dropped."""
    reply = chunk(
        [
            {"text": "Weighing the two.", "thought": True, "thoughtSignature": SIG_THOUGHT},
            {"text": "Not needed.", "thought": True},
            {"text": "Paris is larger."},
            {"text": "", "thoughtSignature": SIG_TEXT},
        ],
        usage=usage_md(12, 4, thoughtsTokenCount=40),
        finish="STOP",
    )
    answer = await generate(server, http, reply)
    assert answer.reasoning_parts == (
        ReasoningPart("Weighing the two.", SIG_THOUGHT, provider="gemini"),
        ReasoningPart("Not needed.", provider="gemini"),
        ReasoningPart(signature=SIG_TEXT, provider="gemini"),
    )
    request = Request([Message.user("Paris or Rome?"), answer.message, Message.user("Why?")])
    await generate(server, http, reply, request=request)
    assert sent_body(server)["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Weighing the two.", "thought": True, "thoughtSignature": SIG_THOUGHT},
            {"text": "Paris is larger.", "thoughtSignature": SIG_TEXT},
        ],
    }


async def test_signatures_of_several_steps_go_back_in_order(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """A turn merging two sequential steps: each call gets back its own signature."""
    first, second = "c2lnLXN0ZXAtb25l", "c2lnLXN0ZXAtdHdv"
    turn = Message.assistant(
        ReasoningPart(signature=first, provider="gemini"),
        ReasoningPart(signature=second, provider="gemini"),
        ToolCallPart(ToolCall("call_0", "get_weather", '{"city": "Paris"}')),
        ToolCallPart(ToolCall("call_1", "get_weather", '{"city": "Rome"}')),
    )
    request = Request([Message.user("Paris, then Rome?"), turn], tools=[WEATHER])
    await generate(server, http, CALLS_REPLY, request=request)
    parts = sent_body(server)["contents"][1]["parts"]
    assert [part.get("thoughtSignature") for part in parts] == [first, second]


async def test_other_families_reasoning_is_not_sent(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Another family's reasoning means nothing to Gemini; a call without a signature
    (another provider's) gets the documented placeholder."""
    turn = Message.assistant(
        ReasoningPart("Let me check.", "EqQBCkYIBxgCKkD", provider="anthropic"),
        ReasoningPart("hmm", provider="ollama"),
        "Checking.",
        ToolCallPart(ToolCall("toolu_01A", "get_weather", '{"city": "Oslo"}')),
    )
    request = Request([Message.user("Oslo?"), turn], tools=[WEATHER])
    await generate(server, http, CALLS_REPLY, request=request)
    assert sent_body(server)["contents"][1] == {
        "role": "model",
        "parts": [
            {"text": "Checking."},
            {
                "functionCall": {
                    "name": "get_weather",
                    "args": {"city": "Oslo"},
                    "id": "toolu_01A",
                },
                "thoughtSignature": "skip_thought_signature_validator",
            },
        ],
    }


async def test_reasoning_in_user_turns_is_not_sent(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """Reasoning is the model's own: a user message holding a part does not send it."""
    message = Message.user("Hi", ReasoningPart("x", SIG_TEXT, provider="gemini"))
    await generate(server, http, THOUGHT_REPLY, request=Request([message]))
    assert sent_body(server)["contents"] == [{"role": "user", "parts": [{"text": "Hi"}]}]


# --------------------------------------------------------------------------- the finish rule


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("STOP", FinishReason.TOOL_CALLS),
        (None, FinishReason.TOOL_CALLS),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", FinishReason.OTHER),
    ],
)
async def test_generate_tool_call_finish_rule(
    server: LocalServer, http: HTTPSessionHolder, finish: str | None, expected: FinishReason
) -> None:
    """A natural stop with calls is TOOL_CALLS; a cut or a filter stays what it was."""
    parts = [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}]
    reply = chunk(parts, usage=usage_md(20, 5), finish=finish)
    assert (await generate(server, http, reply)).finish_reason is expected


@CHUNKS
@pytest.mark.parametrize(
    ("finish", "expected"),
    [("STOP", FinishReason.TOOL_CALLS), ("MAX_TOKENS", FinishReason.LENGTH)],
)
async def test_stream_tool_call_finish_rule(
    server: LocalServer, http: HTTPSessionHolder, size: int, finish: str, expected: FinishReason
) -> None:
    """The same in a stream, where the call and the finish come in separate chunks."""
    call = {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    body = sse(chunk_of([call]), chunk_of([{"text": ""}], finish=finish))
    events, response = await stream_events(server, http, body, chunk_size=size)
    assert events[-1] == StreamEnd(expected)
    assert response.finish_reason is expected
    assert response.tool_calls == (ToolCall("call_0", "get_weather", '{"city": "Oslo"}'),)


@CHUNKS
async def test_text_only_stream_keeps_stop(
    server: LocalServer, http: HTTPSessionHolder, size: int
) -> None:
    """Without calls, STOP is STOP (and the served model is the first chunk's)."""
    body = sse(
        chunk([{"text": "Hel"}], usage=usage_md(2), model="gemini-2.5-flash-001"),
        chunk([{"text": "lo"}], usage=usage_md(2, 2), finish="STOP", model="gemini-2.5-flash-001"),
    )
    events, response = await stream_events(server, http, body, chunk_size=size)
    assert events[-1] == StreamEnd(FinishReason.STOP)
    assert isinstance(events[0], StreamStart)
    assert events[0].served_model == "gemini-2.5-flash-001"
    assert response.served_model == "gemini-2.5-flash-001"
    assert response.text == "Hello"
    assert response.usage == Usage(2, 2)


# --------------------------------------------------------------------------- usage detail


async def test_usage_with_tool_prompt_cache_and_thoughts(
    server: LocalServer, http: HTTPSessionHolder
) -> None:
    """All of Gemini's counts land in our totals: the tool-use prompt is input, thoughts
    are output, the cached part is inside the prompt count."""
    usage = usage_md(
        2048, 64, cachedContentTokenCount=1536, toolUsePromptTokenCount=100, thoughtsTokenCount=256
    )
    assert usage["totalTokenCount"] == 2048 + 64 + 100 + 256
    reply = chunk([{"text": "ok"}], usage=usage, finish="STOP")
    response = await generate(server, http, reply)
    assert response.usage == Usage(
        input_tokens=2148, output_tokens=320, cached_input_tokens=1536, reasoning_tokens=256
    )
    assert response.usage.total_tokens == usage["totalTokenCount"]


# --------------------------------------------------------------------------- whole-body errors


ERRORS: Sequence[tuple[dict[str, Any], type[ProviderError]]] = [
    (
        {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted (e.g. check quota).",
                "status": "RESOURCE_EXHAUSTED",
            }
        },
        RateLimitError,
    ),
    (
        {
            "error": {
                "code": 503,
                "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE",
            }
        },
        OverloadedError,
    ),
    (
        {
            "error": {
                "code": 500,
                "message": "An internal error has occurred.",
                "status": "INTERNAL",
            }
        },
        ServerError,
    ),
]


@CHUNKS
@pytest.mark.parametrize("pretty", [True, False], ids=["pretty", "one-line"])
@pytest.mark.parametrize(("error", "kind"), ERRORS, ids=["429", "503", "500"])
async def test_whole_body_error_without_data_prefix(
    server: LocalServer,
    http: HTTPSessionHolder,
    size: int,
    pretty: bool,
    error: dict[str, Any],
    kind: type[ProviderError],
) -> None:
    """A 200 stream whose whole body is the error JSON, no `data:` (pretty-printed, as
    Gemini writes it, or on one line), raises the server's error, not a truncation."""
    text = json.dumps(error, indent=2) if pretty else json.dumps(error)
    body = text.replace("\n", "\r\n").encode() + b"\r\n"
    server.routes[stream_path("gemini-2.5-flash")] = play(body, chunk=size)
    async with await provider(server, http).model("gemini-2.5-flash").stream("Hi") as stream:
        with pytest.raises(kind) as info:
            await stream.collect()
    assert info.value.status == error["error"]["code"]
    assert info.value.code == error["error"]["status"]
    assert error["error"]["message"] in str(info.value)
