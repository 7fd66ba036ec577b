"""End to end: a two-target chain over real wire formats, whose first target fails.

Each test runs two emulators of DIFFERENT wire formats (`tests/helpers/wire.py`) and a
Registry configured the way a user would: `LLM_A` and `LLM_B` DSNs and the spec
"a/m1,b/m2". The chain's waits go through the ManualClock (with `retry_backoff=0`), so
nothing sleeps; the emulators record every request, so each test asserts what reached
the wire as well as what came back. Afterwards the registry's session must hold no
connection.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest

from majordomo_async import (
    AuthenticationError,
    ChainConfig,
    ChainExhaustedError,
    FinishReason,
    HealthConfig,
    ManualClock,
    ModelNotFoundError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    RateLimitError,
    Registry,
    ServerError,
    StreamStart,
    StreamTruncatedError,
    TargetFailure,
    TargetSkippedError,
    TextDelta,
    Usage,
)

from .helpers.servers import acquired_connections
from .helpers.wire import (
    AnthropicWire,
    Behaviour,
    Drop,
    ErrorEvent,
    Fail,
    GeminiWire,
    OllamaWire,
    OpenAIWire,
    Reply,
    Truncate,
    Wire,
)

SPEC = "a/m1,b/m2"
PROMPT = "Wie spät ist es in Zürich?"
KEY_A = "sk-a-SECRET"
KEY_B = "sk-b-SECRET"
pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

ANSWER = Reply("Es ist 12:00 — Mittag ✓", input_tokens=23, output_tokens=11, pieces=4)


@asynccontextmanager
async def two_targets(
    first: Wire, second: Wire, clock: ManualClock, *, health: HealthConfig | None = None
) -> AsyncIterator[Registry]:
    """Serve both emulators; yield a Registry with `a` on the first and `b` on the second."""
    async with first.running() as dsn_a, second.running() as dsn_b:
        registry = Registry(
            env={"LLM_A": dsn_a, "LLM_B": dsn_b},
            clock=clock,
            health=health,
            chain=ChainConfig(retry_backoff=0),
        )
        async with registry:
            yield registry
            assert acquired_connections(registry._http.get()) == 0


def summary(failures: Sequence[TargetFailure]) -> list[tuple[str, type[Exception], Any, int]]:
    """(key, error type, status, attempt) of each failure, in order."""
    return [
        (failure.key, type(failure.error), getattr(failure.error, "status", None), failure.attempt)
        for failure in failures
    ]


def head_twice(kind: type[Exception], status: int | None) -> list[tuple[str, Any, Any, int]]:
    """The head's attempt and its same-target retry, both failed the same way."""
    return [("a/m1", kind, status, 1), ("a/m1", kind, status, 2)]


@attrs.frozen
class Pair:
    """A head of one wire format failing one way, and a tail of another that answers."""

    head: type[Wire]
    failure: Behaviour
    tail: type[Wire]
    error: type[ProviderError]
    status: int | None


GENERATE_PAIRS = {
    "openai-503-then-anthropic": Pair(OpenAIWire, Fail(503), AnthropicWire, OverloadedError, 503),
    "anthropic-529-then-openai": Pair(AnthropicWire, Fail(529), OpenAIWire, OverloadedError, 529),
    "gemini-500-then-ollama": Pair(GeminiWire, Fail(500), OllamaWire, ServerError, 500),
    "ollama-503-then-gemini": Pair(OllamaWire, Fail(503), GeminiWire, OverloadedError, 503),
    "anthropic-429-retry-after-0-then-gemini": Pair(
        AnthropicWire, Fail(429, retry_after=0), GeminiWire, RateLimitError, 429
    ),
    "openai-reset-then-ollama": Pair(OpenAIWire, Drop(), OllamaWire, ProviderConnectionError, None),
}

STREAM_PAIRS = {
    "gemini-truncated-then-openai": Pair(
        GeminiWire, Truncate(), OpenAIWire, StreamTruncatedError, None
    ),
    "anthropic-truncated-after-preamble-then-gemini": Pair(
        AnthropicWire, Truncate(), GeminiWire, StreamTruncatedError, None
    ),
    "anthropic-overloaded-event-then-ollama": Pair(
        AnthropicWire, ErrorEvent(529), OllamaWire, OverloadedError, 529
    ),
    "openai-error-event-then-anthropic": Pair(
        OpenAIWire, ErrorEvent(500), AnthropicWire, ServerError, None
    ),
    "ollama-truncated-then-gemini": Pair(
        OllamaWire, Truncate(), GeminiWire, StreamTruncatedError, None
    ),
}


def served_usage() -> Usage:
    return Usage(ANSWER.input_tokens, ANSWER.output_tokens)


# --------------------------------------------------------------------------- failover


@pytest.mark.parametrize("pair", GENERATE_PAIRS.values(), ids=GENERATE_PAIRS.keys())
async def test_generate_fails_over_to_the_other_wire(pair: Pair, clock: ManualClock) -> None:
    """The head fails (and its retry too), the tail of another wire format answers."""
    first, second = pair.head([pair.failure], key=KEY_A), pair.tail([ANSWER], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        response = await registry.parse(SPEC).generate(PROMPT)

    assert response.model == "b/m2"
    assert response.text == ANSWER.text
    assert response.usage == served_usage()
    assert response.finish_reason is FinishReason.STOP
    assert summary(response.failed_attempts) == head_twice(pair.error, pair.status)
    assert [sent.model for sent in first.requests] == ["m1", "m1"]
    assert [sent.model for sent in second.requests] == ["m2"]
    assert second.prompt(second.requests[0]) == PROMPT
    assert sum(clock.sleeps) == 0  # retry_backoff=0, Retry-After 0: no waiting at all


@pytest.mark.parametrize("pair", STREAM_PAIRS.values(), ids=STREAM_PAIRS.keys())
async def test_stream_fails_over_before_content(pair: Pair, clock: ManualClock) -> None:
    """A head stream that breaks before any content fails over; the tail's stream is clean."""
    first, second = pair.head([pair.failure], key=KEY_A), pair.tail([ANSWER], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        stream = await registry.parse(SPEC).stream(PROMPT)
        async with stream:
            events = [event async for event in stream]

    assert stream.model == "b/m2"
    # Nothing of the head's stream leaked into this one: its preamble was held back.
    starts = [event for event in events if isinstance(event, StreamStart)]
    assert [start.model for start in starts] == ["b/m2"]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER.text
    response = stream.response
    assert response.model == "b/m2"
    assert response.text == ANSWER.text
    assert response.usage == served_usage()
    assert summary(response.failed_attempts) == head_twice(pair.error, pair.status)
    assert summary(stream.failed_attempts) == summary(response.failed_attempts)
    assert (len(first.requests), len(second.requests)) == (2, 1)


async def test_both_fail_exhausts_the_chain(clock: ManualClock) -> None:
    """Every attempt of both targets is in `.failures`, in order, and in the message."""
    first, second = OpenAIWire([Fail(500)], key=KEY_A), GeminiWire([Fail(503)], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        with pytest.raises(ChainExhaustedError) as info:
            await registry.parse(SPEC).generate(PROMPT)

    error = info.value
    assert summary(error.failures) == [
        ("a/m1", ServerError, 500, 1),
        ("a/m1", ServerError, 500, 2),
        ("b/m2", OverloadedError, 503, 1),
        ("b/m2", OverloadedError, 503, 2),
    ]
    text = str(error)
    assert "a/m1" in text and "b/m2" in text
    assert "The model is overloaded" in text  # Gemini's own message
    assert KEY_A not in text and KEY_B not in text
    assert (len(first.requests), len(second.requests)) == (2, 2)


async def test_both_streams_fail_exhausts_the_chain(clock: ManualClock) -> None:
    """Streams exhaust the same way: a reset head, an in-band overload on the tail."""
    first, second = OllamaWire([Drop()], key=KEY_A), AnthropicWire([ErrorEvent(529)], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        with pytest.raises(ChainExhaustedError) as info:
            await registry.parse(SPEC).stream(PROMPT)

    assert summary(info.value.failures) == [
        *head_twice(ProviderConnectionError, None),
        ("b/m2", OverloadedError, 529, 1),
        ("b/m2", OverloadedError, 529, 2),
    ]


# --------------------------------------------------------------------------- health


async def test_benched_head_is_skipped_without_a_request(clock: ManualClock) -> None:
    """Once benched, the head costs no request until its cooldown ends; then it is probed."""
    health = HealthConfig(failure_threshold=2, base_cooldown=1.0)
    first = AnthropicWire([Fail(529), Fail(529), Reply("wieder da")], key=KEY_A)
    second = OpenAIWire([ANSWER], key=KEY_B)
    async with two_targets(first, second, clock, health=health) as registry:
        model = registry.parse(SPEC)
        benched = await model.generate(PROMPT)
        skipped = await model.generate(PROMPT)
        requests_while_benched = len(first.requests)
        clock.advance(1.0)
        probed = await model.generate(PROMPT)

    assert benched.model == "b/m2"
    assert summary(benched.failed_attempts) == head_twice(OverloadedError, 529)
    assert skipped.model == "b/m2"
    [skip] = skipped.failed_attempts
    assert skip.key == "a/m1" and skip.skipped
    assert isinstance(skip.error, TargetSkippedError)
    assert "backed off until" in str(skip.error)
    assert requests_while_benched == 2
    assert probed.model == "a/m1"
    assert probed.text == "wieder da"
    assert (len(first.requests), len(second.requests)) == (3, 2)


async def test_model_not_found_advances_without_penalty(clock: ManualClock) -> None:
    """A 404 for the model moves on at once, with no retry and no mark on the head's health."""
    first, second = GeminiWire([Fail(404)], key=KEY_A), OllamaWire([ANSWER], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        model = registry.parse(SPEC)
        response = await model.generate(PROMPT)
        snapshot = await registry.health.snapshot()
        again = await model.generate(PROMPT)

    assert response.model == "b/m2"
    assert summary(response.failed_attempts) == [("a/m1", ModelNotFoundError, 404, 1)]
    assert "a/m1" not in snapshot or snapshot["a/m1"].consecutive_failures == 0
    # Not benched: the next call asks the head again.
    assert summary(again.failed_attempts) == [("a/m1", ModelNotFoundError, 404, 1)]
    assert (len(first.requests), len(second.requests)) == (2, 2)


# --------------------------------------------------------------------------- no failover


async def test_permanent_error_is_raised_without_failover(clock: ManualClock) -> None:
    """A rejected key on the head is raised as is: the tail is never asked."""
    first, second = AnthropicWire([Fail(401)], key=KEY_A), GeminiWire([ANSWER], key=KEY_B)
    async with two_targets(first, second, clock) as registry:
        with pytest.raises(AuthenticationError) as info:
            await registry.parse(SPEC).generate(PROMPT)

    assert info.value.key == "a/m1"
    assert info.value.status == 401
    assert (len(first.requests), len(second.requests)) == (1, 0)


async def test_error_after_content_reaches_the_consumer(clock: ManualClock) -> None:
    """Once the head's stream delivered content, its error is the consumer's: no replay."""
    first = OpenAIWire([ErrorEvent(503, text="Es ist zwölf")], key=KEY_A)
    second = OllamaWire([ANSWER], key=KEY_B)
    received: list[str] = []
    async with two_targets(first, second, clock) as registry:
        stream = await registry.parse(SPEC).stream(PROMPT)
        with pytest.raises(OverloadedError):
            async with stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        received.append(event.text)

    assert stream.model == "a/m1"
    assert "".join(received) == "Es ist zwölf"
    assert (len(first.requests), len(second.requests)) == (1, 0)
