"""Differential: the official SDKs and the library read the same recorded bytes.

Every OpenAI-wire and Anthropic case of `tests/fixtures/replay/` is served by one local
server to both the official SDK (`openai.AsyncOpenAI` / `anthropic.AsyncAnthropic`, no
retries) and the library, and what each surfaces is compared: text, tool calls (name and
parsed arguments), finish reason (through `FINISH_REASONS`), the usage the SDK exposes,
the served model, reasoning and refusal, or an error's HTTP status. The SDK side is read
the way its user would read it: `create()` for a generate; the streaming helper
(`chat.completions.stream(...).get_final_completion()`, `messages.stream(...)
.get_final_message()`) for a stream; extra fields (`reasoning_content`, DeepSeek's
`prompt_cache_hit_tokens`) through the models' extras.

Where the library differs on purpose, `KNOWN_DIFFERENCES` says what the SDK gives and
why; everything else must agree exactly. `PENDING` marks cases that differ only because a
provider feature is not wired yet (strict xfails, deleted when the feature lands).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import pytest_asyncio

from majordomo_async import FinishReason

from .helpers.replay import Case, ReplayServer, load_cases, outcome_of, replay, run_library

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

PROMPT = "Replay the recorded answer."
KEY = "sk-test"

FINISH_REASONS: Mapping[str, Mapping[str, FinishReason]] = {
    "openai": {
        "stop": FinishReason.STOP,
        "length": FinishReason.LENGTH,
        "tool_calls": FinishReason.TOOL_CALLS,
        "function_call": FinishReason.TOOL_CALLS,
        "content_filter": FinishReason.CONTENT_FILTER,
    },
    "anthropic": {
        "end_turn": FinishReason.STOP,
        "stop_sequence": FinishReason.STOP,
        "max_tokens": FinishReason.LENGTH,
        "tool_use": FinishReason.TOOL_CALLS,
        "refusal": FinishReason.CONTENT_FILTER,
    },
}
"""The SDKs' finish strings -> ours: the one mapping the comparison goes through."""

KNOWN_DIFFERENCES: Mapping[tuple[str, str], tuple[Any, str]] = {
    ("openai/tool_calls_stop", "finish_reason"): (
        "stop",
        "our one finish-reason rule for tool calls (`_common.finish_with_tools`): an answer "
        "that carries tool calls and stopped naturally is TOOL_CALLS, whatever a compatible "
        "server said; the SDK passes the server's 'stop' through",
    ),
    ("anthropic/error_mid_stream", "status"): (
        200,
        "an in-band `event: error` arrives on a 200 stream: the SDK raises it with that 200, "
        "we type it by its error.type through the status Anthropic pairs with it (529 for "
        "overloaded_error), so that the HTTP rules (transient, retry) apply",
    ),
}
"""(case, field) -> (what the SDK surfaces, why we differ). The SDK must give exactly
that value; the library's side is checked against the corpus by tests/test_replay.py."""

RAW_STREAMS: Mapping[str, str] = {
    "openai/mistral_content_list": (
        "the SDK's stream helper assumes string `content`: with Mistral's list-form deltas "
        "it keeps only the string deltas after the last list one (' of Norway is Oslo.') "
        "and warns (PydanticSerializationUnexpectedValue), so an SDK user iterates the "
        "chunks and joins the list's text and thinking chunks, as done here"
    ),
}
"""Streams an SDK user must read chunk by chunk, and why (every other stream goes through
the SDK's own streaming helper)."""

PENDING: Mapping[str, str] = {}
"""`Case.id` or "provider/case" -> the provider feature whose absence makes them differ."""

CASES = load_cases(("openai", "anthropic"))


def _params() -> list[object]:
    params: list[object] = []
    for case in CASES:
        reason = PENDING.get(case.id) or PENDING.get(f"{case.provider}/{case.name}")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


# --------------------------------------------------------------------------- the SDK side


def _extra(model: Any, name: str) -> Any:
    """A field the SDK's types may not declare: its models keep unknown fields as extras,
    readable as attributes (`message.reasoning_content`), as an SDK user reads them."""
    return getattr(model, name, None)


def _content_parts(content: Any, kind: str) -> str:
    """The text of list-form `content` chunks of `kind` (Mistral: "text", "thinking")."""
    texts: list[str] = []
    for part in content if isinstance(content, list) else ():
        part = part if isinstance(part, dict) else {}
        if part.get("type") != kind:
            continue
        if kind == "text":
            texts.append(part.get("text", ""))
        else:
            texts.extend(chunk.get("text", "") for chunk in part.get(kind, ()))
    return "".join(texts)


def _openai_result(
    *,
    content: Any,
    reasoning: str,
    refusal: str | None,
    calls: list[tuple[str, str]],
    finish: str,
    usage: Any,
    model: str,
) -> dict[str, Any]:
    """What an SDK user has in hand, as comparable data (`calls`: name, arguments text)."""
    if isinstance(content, list):  # Mistral's list form: text chunks, thinking chunks
        reasoning = reasoning or _content_parts(content, "thinking")
        content = _content_parts(content, "text")
    prompt_details = usage.prompt_tokens_details if usage else None
    completion_details = usage.completion_tokens_details if usage else None
    cached = (prompt_details.cached_tokens if prompt_details else None) or (
        _extra(usage, "prompt_cache_hit_tokens") if usage else None
    )
    reasoning_tokens = completion_details.reasoning_tokens if completion_details else None
    return {
        "text": content or "",
        "tool_calls": [
            {"name": name, "arguments": json.loads(arguments or "{}")} for name, arguments in calls
        ],
        "finish_reason": FINISH_REASONS["openai"][finish].value,
        "usage": {
            "input_tokens": usage.prompt_tokens if usage else 0,
            "output_tokens": usage.completion_tokens if usage else 0,
            "cached_input_tokens": cached or 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": reasoning_tokens or 0,
        },
        "served_model": model,
        "reasoning": reasoning,
        "refusal": refusal,
    }


def _openai_outcome(completion: Any) -> dict[str, Any]:
    choice = completion.choices[0]
    message = choice.message
    return _openai_result(
        content=message.content,
        reasoning=_extra(message, "reasoning_content") or _extra(message, "reasoning") or "",
        refusal=message.refusal,
        calls=[(call.function.name, call.function.arguments) for call in message.tool_calls or ()],
        finish=choice.finish_reason,
        usage=completion.usage,
        model=completion.model,
    )


def _openai_chunks(chunks: list[Any]) -> dict[str, Any]:
    """A stream's chunks aggregated as an SDK user would (see `RAW_STREAMS`)."""
    content: list[Any] = []
    reasoning: list[str] = []
    refusal: list[str] = []
    calls: dict[int, list[str]] = {}
    finish, usage, model = "stop", None, ""
    for chunk in chunks:
        model = chunk.model or model
        usage = chunk.usage or usage
        for choice in chunk.choices:
            delta = choice.delta
            if isinstance(delta.content, list):
                content.extend(delta.content)
            elif delta.content:
                content.append({"type": "text", "text": delta.content})
            reasoning.append(_extra(delta, "reasoning_content") or _extra(delta, "reasoning") or "")
            refusal.append(delta.refusal or "")
            for call in delta.tool_calls or ():
                name, arguments = calls.setdefault(call.index, ["", ""])
                function = call.function
                calls[call.index] = [
                    (function and function.name) or name,
                    arguments + ((function and function.arguments) or ""),
                ]
            finish = choice.finish_reason or finish
    return _openai_result(
        content=content,
        reasoning="".join(reasoning),
        refusal="".join(refusal) or None,
        calls=[(name, arguments) for _, (name, arguments) in sorted(calls.items())],
        finish=finish,
        usage=usage,
        model=model,
    )


def _anthropic_outcome(message: Any) -> dict[str, Any]:
    blocks = message.content
    parts = [
        {"text": b.thinking, "signature": b.signature, "redacted": None, "provider": "anthropic"}
        if b.type == "thinking"
        else {"text": "", "signature": None, "redacted": b.data, "provider": "anthropic"}
        for b in blocks
        if b.type in ("thinking", "redacted_thinking")
    ]
    usage = message.usage
    cache_write = usage.cache_creation_input_tokens or 0
    cache_read = usage.cache_read_input_tokens or 0
    return {
        "text": "".join(b.text for b in blocks if b.type == "text"),
        "tool_calls": [
            {"name": b.name, "arguments": b.input} for b in blocks if b.type == "tool_use"
        ],
        "finish_reason": FINISH_REASONS["anthropic"][message.stop_reason].value,
        "usage": {
            "input_tokens": usage.input_tokens + cache_write + cache_read,
            "output_tokens": usage.output_tokens,
            "cached_input_tokens": cache_read,
            "cache_write_tokens": cache_write,
            "reasoning_tokens": 0,  # the Messages API does not split thinking out
        },
        "served_model": message.model,
        "reasoning": "".join(b.thinking for b in blocks if b.type == "thinking"),
        "refusal": None,  # no refusal text on this wire: the stop_reason says it
        "reasoning_parts": parts,
    }


async def _openai(client: Any, case: Case) -> dict[str, Any]:
    messages = [{"role": "user", "content": PROMPT}]
    key = f"{case.provider}/{case.name}"
    try:
        if case.mode == "generate":
            completion = await client.chat.completions.create(model=case.model, messages=messages)
        elif key in RAW_STREAMS:
            stream = await client.chat.completions.create(
                model=case.model, messages=messages, stream=True
            )
            return _openai_chunks([chunk async for chunk in stream])
        else:
            async with client.chat.completions.stream(
                model=case.model, messages=messages
            ) as stream:
                async for _ in stream:
                    pass
                try:
                    completion = await stream.get_final_completion()
                except (
                    openai.LengthFinishReasonError,
                    openai.ContentFilterFinishReasonError,
                ) as exc:
                    # The helper raises for these finishes; the answer rides on the error.
                    completion = exc.completion
    except openai.APIError as exc:
        return {"error": {"status": getattr(exc, "status_code", None)}}
    return _openai_outcome(completion)


async def _anthropic(client: Any, case: Case) -> dict[str, Any]:
    messages = [{"role": "user", "content": PROMPT}]
    try:
        if case.mode == "generate":
            message = await client.messages.create(
                model=case.model, max_tokens=256, messages=messages
            )
        else:
            async with client.messages.stream(
                model=case.model, max_tokens=256, messages=messages
            ) as stream:
                async for _ in stream:
                    pass
                message = await stream.get_final_message()
    except anthropic.APIError as exc:
        return {"error": {"status": getattr(exc, "status_code", None)}}
    return _anthropic_outcome(message)


# One event loop, one server and one client per SDK for the module: an SDK client costs
# ~0.1 s to build (its TLS context), more than a case takes to replay.


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def server() -> AsyncIterator[ReplayServer]:
    async with replay() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def clients(server: ReplayServer) -> AsyncIterator[dict[str, Any]]:
    async with (
        openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as oai,
        anthropic.AsyncAnthropic(base_url=server.url, api_key=KEY, max_retries=0) as ant,
    ):
        yield {"openai": oai, "anthropic": ant}


# --------------------------------------------------------------------------- the test


def _ours(outcome: dict[str, Any], sdk: dict[str, Any]) -> dict[str, Any]:
    """Our outcome with only what the SDK side can show (an error: its status)."""
    if "error" in outcome:
        return {"error": {"status": outcome["error"]["status"]}}
    return {key: outcome.get(key) for key in sdk}


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", _params())
async def test_sdk_agrees(case: Case, server: ReplayServer, clients: dict[str, Any]) -> None:
    server.case = case
    outcome, response = await run_library(case, server)
    if response is not None:  # the SDK shows Anthropic's reasoning blocks: compare them all
        outcome = outcome_of(response, with_parts=case.provider == "anthropic")
    ours = outcome.as_dict()
    read = _openai if case.provider == "openai" else _anthropic
    sdk = await read(clients[case.provider], case)
    ours = _ours(ours, sdk)
    key = f"{case.provider}/{case.name}"
    for (where, field), (sdk_value, why) in KNOWN_DIFFERENCES.items():
        if where != key:
            continue
        holder = sdk.get("error", sdk)
        assert holder[field] == sdk_value, f"the SDK no longer gives {sdk_value!r}: {why}"
        holder[field] = ours.get("error", ours)[field]
    assert ours == sdk


def test_tables_name_real_cases() -> None:
    names = {f"{case.provider}/{case.name}" for case in CASES}
    ids = names | {case.id for case in CASES}
    for where, _ in KNOWN_DIFFERENCES:
        assert where in names, f"KNOWN_DIFFERENCES names {where}, which the corpus lacks"
    assert set(RAW_STREAMS) <= names, f"RAW_STREAMS names no case: {set(RAW_STREAMS) - names}"
    assert set(PENDING) <= ids, f"PENDING names no case: {set(PENDING) - ids}"
