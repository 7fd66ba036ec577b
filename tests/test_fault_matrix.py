"""The fault matrix: every wire format x generate/stream x every fault, on real sockets.

Each cell serves one fault from the emulator of one wire format (`tests/helpers/wire.py`)
as the head of a chain, and runs it through a two-target chain ("a/m1,b/m2": the faulty
head, then a healthy emulator of ANOTHER format) and through a one-target chain ("a/m1").
The registry is configured as a user would: `LLM_A` and `LLM_B` DSNs; the head's DSN sets
tiny real timeouts (`?headers=0.25&...&idle=0.25`) and the chain an attempt timeout and a
deadline. Waits (same-target backoff, Retry-After) go through a ManualClock and cost no
real time: `clock.sleeps` records them.

`FAULTS` is the table: what the head serves for generate and for stream, and what the
failover rules (README "Failover rules") make of it. Per cell the test asserts:

- the outcome: the head answers, the tail answers (a one-target chain is exhausted), the
  head's permanent error is raised at once, or, in a stream that already delivered
  text, the typed error reaches the consumer after that text;
- the attempts each target saw, and each failure in `failed_attempts` / `.failures`;
- no same-target retry waited less than the failure's `retry_after` (nor, for a 429
  with Retry-After, less than the header said);
- a silent head costs one timeout, not one per retry; any other cell waits for none;
- the call ends within its deadline;
- a truncated or otherwise partial answer is never returned as a success;
- `Response.model` and `.usage` are those of the target that answered;
- afterwards a healthy call through the same registry succeeds, and the registry's
  session holds no connection, after the faulty call and after the healthy one.
"""

from __future__ import annotations

import enum
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import anyio
import attrs
import pytest

from majordomo_async import (
    AsyncModel,
    AuthenticationError,
    ChainConfig,
    ChainExhaustedError,
    ContentPolicyError,
    ContextLengthError,
    HealthConfig,
    ManualClock,
    ModelNotFoundError,
    OverloadedError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
    Registry,
    Response,
    ResponseFormatError,
    ServerError,
    Stream,
    StreamNotFinishedError,
    StreamTruncatedError,
    TargetFailure,
    TextDelta,
    Usage,
)

from .helpers.servers import acquired_connections, closed_port_url
from .helpers.wire import (
    AnthropicWire,
    BadUTF8,
    Behaviour,
    Blocked,
    ContextTooLong,
    DoneThenSilence,
    Drop,
    ErrorEvent,
    Fail,
    GeminiWire,
    HTMLError,
    Huge,
    InBandError,
    Malformed,
    NoSentinel,
    OllamaWire,
    OpenAIWire,
    Quota,
    Reply,
    Reset,
    Silence,
    Slow,
    Stall,
    Wire,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

PROMPT = "Wie spät ist es in Zürich?"
KEY_HEAD = "sk-head-0123SECRET"
KEY_TAIL = "sk-tail-4567SECRET"

TIMEOUT: Final = 0.25
"""Seconds: the head's time limits (its DSN query)."""
ATTEMPT_TIMEOUT: Final = 1.5
"""Seconds: the chain's attempt timeout, a backstop behind the head's own timeouts."""
DEADLINE: Final = 8.0
"""Seconds: the chain's deadline for a whole call (waits on the manual clock included)."""
CHAIN: Final = ChainConfig(timeout=DEADLINE, attempt_timeout=ATTEMPT_TIMEOUT)
HEAD_QUERY: Final = (
    "?"
    + "&".join(f"{key}={TIMEOUT:g}" for key in ("headers", "generate", "idle"))
    # The first token counts from the request (connect and headers included): a healthy
    # answer on a loaded machine must not miss it. A head that sends headers and then
    # nothing still fails within a few timeouts.
    + "".join(f"&{key}={4 * TIMEOUT:g}" for key in ("first_token", "reasoning_first_token"))
)

HEAD_ANSWER = Reply("Hier spricht der Kopf ✓", input_tokens=31, output_tokens=8, pieces=3)
TAIL_ANSWER = Reply("Es ist 12:00 — Mittag ✓", input_tokens=23, output_tokens=11, pieces=4)
PARTIAL = "Es ist zwölf — und dann"
"""What a head delivers before a mid-stream fault."""

WIRES: Final[Mapping[str, type[Wire]]] = {
    "openai": OpenAIWire,
    "anthropic": AnthropicWire,
    "gemini": GeminiWire,
    "ollama": OllamaWire,
}
FALLBACK: Final[Mapping[str, str]] = {
    "openai": "anthropic",
    "anthropic": "gemini",
    "gemini": "ollama",
    "ollama": "openai",
}
"""The tail's wire format for each head's: always another one."""

Mode = Literal["generate", "stream"]
Shape = Literal["two-target", "one-target"]


# --------------------------------------------------------------------------- the table


class Outcome(enum.Enum):
    """What the failover rules make of a fault."""

    HEAD = "the head answers"
    FAILOVER = "the head fails; the tail answers, or a one-target chain is exhausted"
    RAISE = "the head's permanent error is raised; the tail is never asked"
    MID_STREAM = "the head's stream delivered text; then its typed error reaches the consumer"


@attrs.frozen
class Expect:
    """The expected result of a fault in one mode."""

    outcome: Outcome
    errors: tuple[type[Exception], ...] = ()
    """The error types a head failure may have (each failure, and a raised error)."""
    attempts: int = 1
    """Attempts on the head (requests it saw, unless nothing listens)."""
    retry_after: tuple[float, float] | None = None
    """Bounds of the `retry_after` a 429 carried: the waits are checked against it."""
    silent: bool = False
    """The head goes silent: the call costs one timeout (and at most one)."""


def head(attempts: int = 1, *errors: type[Exception]) -> Expect:
    return Expect(Outcome.HEAD, errors, attempts)


def failover(
    attempts: int,
    *errors: type[Exception],
    retry_after: tuple[float, float] | None = None,
    silent: bool = False,
) -> Expect:
    return Expect(Outcome.FAILOVER, errors, attempts, retry_after, silent)


def raised(*errors: type[Exception]) -> Expect:
    return Expect(Outcome.RAISE, errors)


def mid_stream(*errors: type[Exception], silent: bool = False) -> Expect:
    return Expect(Outcome.MID_STREAM, errors, silent=silent)


@attrs.frozen
class Fault:
    """One row: what the head serves in each mode (None: no such fault in that mode)."""

    name: str
    generate: tuple[Behaviour, ...] | None
    stream: tuple[Behaviour, ...] | None
    expect: Expect
    stream_expect: Expect | None = None
    """When the stream's outcome differs from generate's."""
    providers: Mapping[str, Expect] = attrs.field(factory=dict)
    """Per wire format, where its API makes the rules decide otherwise."""
    refused: bool = False
    """The head's DSN points at a closed port (its script is unused)."""

    def script(self, mode: Mode) -> tuple[Behaviour, ...] | None:
        return self.generate if mode == "generate" else self.stream

    def expected(self, provider: str, mode: Mode) -> Expect:
        if provider in self.providers:
            return self.providers[provider]
        return self.stream_expect if mode == "stream" and self.stream_expect else self.expect


def both(name: str, *script: Behaviour, expect: Expect, **more: Any) -> Fault:
    """A fault served the same way to generate and stream."""
    return Fault(name, script, script, expect, **more)


FAULTS: Final[Sequence[Fault]] = (
    # ----------------------------------------------------------------- HTTP statuses
    both(
        "429-retry-after-seconds",
        Fail(429, retry_after=1.5),
        expect=failover(2, RateLimitError, retry_after=(1.5, 1.5)),
    ),
    both(
        "429-retry-after-date",
        Fail(429, retry_after=1, as_date=True),
        # An HTTP-date has whole seconds: the wait it asks for is within (0.9, 2].
        expect=failover(2, RateLimitError, retry_after=(0.9, 2.0)),
    ),
    both(
        "429-retry-after-too-long",
        Fail(429, retry_after=30),
        # Longer than `max_retry_wait` (5 s), and a backup can answer: advance at once.
        expect=failover(1, RateLimitError, retry_after=(30.0, 30.0)),
    ),
    both(
        "429-no-retry-after",
        Fail(429),
        # A 429 that says nothing of billing is a rate limit on every provider, whatever
        # headers a gateway dropped (Anthropic's spend cap is told apart by its wording).
        expect=failover(2, RateLimitError),
    ),
    both("429-quota-exhausted", Quota(), expect=raised(QuotaExceededError)),
    both(
        "500-once-then-healthy",
        Fail(500),
        HEAD_ANSWER,
        expect=head(2, ServerError),
    ),
    both("503-persistent", Fail(503), expect=failover(2, OverloadedError)),
    both("529-overloaded", Fail(529), expect=failover(2, OverloadedError)),
    both("502-html-body", HTMLError(502), expect=failover(2, ServerError)),
    both("400-context-length", ContextTooLong(), expect=failover(1, ContextLengthError)),
    both("400-content-policy", Blocked(), expect=raised(ContentPolicyError)),
    both("401", Fail(401), expect=raised(AuthenticationError)),
    both("404-model", Fail(404), expect=failover(1, ModelNotFoundError)),
    # ----------------------------------------------------------------- the network
    both(
        "connection-refused",
        HEAD_ANSWER,
        expect=failover(2, ProviderConnectionError),
        refused=True,
    ),
    both("reset-before-headers", Drop(), expect=failover(2, ProviderConnectionError)),
    both(
        "reset-mid-body",
        Reset(PARTIAL),
        expect=failover(2, StreamTruncatedError),
        stream_expect=mid_stream(StreamTruncatedError),
    ),
    both(
        "headers-then-silence",
        Silence(),
        expect=failover(1, ProviderTimeoutError, silent=True),
    ),
    both("slow-first-event", Slow(TIMEOUT / 4, HEAD_ANSWER), expect=head()),
    both(
        "cut-after-n-events",
        Reset(PARTIAL, graceful=True),
        expect=failover(2, StreamTruncatedError),
        stream_expect=mid_stream(StreamTruncatedError),
    ),
    Fault(
        "stalled-after-n-events",
        (Stall(PARTIAL, partial_body=True),),
        (Stall(PARTIAL),),
        failover(1, ProviderTimeoutError, silent=True),
        stream_expect=mid_stream(ProviderTimeoutError, silent=True),
    ),
    both(
        "malformed-event-mid-stream",
        Malformed(PARTIAL),
        expect=failover(2, ResponseFormatError),
        stream_expect=mid_stream(ResponseFormatError),
    ),
    Fault(
        "complete-body-without-sentinel",
        None,
        (NoSentinel(HEAD_ANSWER),),
        mid_stream(StreamTruncatedError),
        # OpenAI and Anthropic keep their finish reason (and usage) before the missing
        # `[DONE]` / `message_stop`: a finish reason and a clean end complete the stream.
        # Gemini's and Ollama's terminal signal is the finish itself: truncated.
        providers={"openai": head(), "anthropic": head()},
    ),
    both("in-band-error-before-first-delta", InBandError(500), expect=failover(2, ServerError)),
    Fault(
        "in-band-error-after-first-delta",
        None,
        (ErrorEvent(500, PARTIAL),),
        mid_stream(ServerError),
    ),
    both("invalid-utf8", BadUTF8(), expect=failover(2, ResponseFormatError)),
    both("huge-body", Huge(), expect=head()),
    both("huge-error-body", HTMLError(500, size=4 * 1024 * 1024), expect=failover(2, ServerError)),
    # Beyond the list: the answer is complete, but the body never ends.
    Fault(
        "sentinel-then-silence",
        None,
        (DoneThenSilence(HEAD_ANSWER),),
        head(),
    ),
)


@attrs.frozen
class Cell:
    provider: str
    mode: Mode
    fault: Fault
    chain: Shape

    @property
    def id(self) -> str:
        return f"{self.provider}-{self.mode}-{self.fault.name}-{self.chain}"

    @property
    def expect(self) -> Expect:
        return self.fault.expected(self.provider, self.mode)

    @property
    def spec(self) -> str:
        return "a/m1,b/m2" if self.chain == "two-target" else "a/m1"


def cells() -> list[Any]:
    params = []
    for fault in FAULTS:
        for provider in WIRES:
            for mode in ("generate", "stream"):
                if fault.script(mode) is None:
                    continue
                for chain in ("two-target", "one-target"):
                    cell = Cell(provider, mode, fault, chain)
                    params.append(pytest.param(cell, id=cell.id))
    return params


# --------------------------------------------------------------------------- the clock


class RealTimeManualClock(ManualClock):
    """A `ManualClock` whose readings and deadlines also move with real time.

    Waits (`sleep`) jump ahead at once and are recorded in `sleeps`, as with any
    ManualClock. But the local servers take real time, and a plain ManualClock would
    fire the chain's attempt timeout and call deadline only on `advance()`: here `now()`
    is real time elapsed plus every jump, and deadline scopes expire at that time.
    """

    def __init__(self) -> None:
        super().__init__()
        self._origin = time.monotonic()
        self._live: list[anyio.CancelScope] = []

    def now(self) -> float:
        """Real seconds since creation plus every jump."""
        return super().now() + (time.monotonic() - self._origin)

    def advance(self, seconds: float) -> None:
        """Jump ahead: every live deadline comes `seconds` closer in real time."""
        super().advance(seconds)
        for scope in self._live:
            scope.deadline -= seconds

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """A scope that expires (in real time) when `now()` reaches `deadline`."""
        scope = anyio.CancelScope(deadline=anyio.current_time() + (deadline - self.now()))
        self._live.append(scope)
        return scope


@pytest.fixture
def clock() -> RealTimeManualClock:
    return RealTimeManualClock()


# --------------------------------------------------------------------------- running a cell


@attrs.frozen
class Result:
    """What one call gave: an answer or an error, and the text a consumer received."""

    response: Response | None
    error: Exception | None
    received: str
    stream: Stream | None
    seconds: float
    """Real time the call took."""


async def call(model: AsyncModel, mode: Mode) -> Result:
    """`generate`, or a stream read to the end inside `async with`; never raises."""
    started = time.monotonic()
    received: list[str] = []
    stream: Stream | None = None
    response: Response | None = None
    error: Exception | None = None
    try:
        if mode == "generate":
            response = await model.generate(PROMPT)
        else:
            stream = await model.stream(PROMPT)
            async with stream:
                async for event in stream:
                    if isinstance(event, TextDelta):
                        received.append(event.text)
            response = stream.response
    except Exception as exc:
        error = exc
    return Result(response, error, "".join(received), stream, time.monotonic() - started)


@asynccontextmanager
async def head_dsn(wire: Wire, refused: bool) -> AsyncIterator[str]:
    """The head's DSN, with its tiny timeouts: its emulator's, or a closed port's."""
    if refused:
        yield wire.dsn(closed_port_url()) + HEAD_QUERY
        return
    async with wire.running() as dsn:
        yield dsn + HEAD_QUERY


def served(script: Sequence[Behaviour]) -> Reply:
    """The answer a head's script ends with (its text and usage), or its default."""
    last = script[-1]
    if isinstance(last, Reply):
        return last
    if isinstance(last, Huge | Slow | NoSentinel | DoneThenSilence):
        return last.reply
    return HEAD_ANSWER


def usage_of(reply: Reply) -> Usage:
    return Usage(reply.input_tokens, reply.output_tokens)


@pytest.mark.parametrize("cell", cells())
async def test_fault(cell: Cell, clock: RealTimeManualClock) -> None:
    """One cell of the matrix: see the module docstring for what is asserted."""
    script = cell.fault.script(cell.mode)
    assert script is not None
    head_wire = WIRES[cell.provider](script, key=KEY_HEAD)
    tail_wire = WIRES[FALLBACK[cell.provider]]([TAIL_ANSWER], key=KEY_TAIL)
    async with (
        head_dsn(head_wire, cell.fault.refused) as dsn_a,
        tail_wire.running() as dsn_b,
        Registry(env={"LLM_A": dsn_a, "LLM_B": dsn_b}, clock=clock, chain=CHAIN) as registry,
    ):
        started = clock.now()
        result = await call(registry.parse(cell.spec), cell.mode)
        assert clock.now() - started <= DEADLINE
        assert acquired_connections(registry._http.get()) == 0

        failures = check_outcome(cell, result, head_wire, served(script))
        check_waits(cell, failures, clock)
        check_time(cell, result)
        tail_attempts = 1 if cell.expect.outcome is Outcome.FAILOVER and cell.spec != "a/m1" else 0
        assert len(tail_wire.requests) == tail_attempts

        await check_healthy_afterwards(cell, registry, head_wire, tail_wire, clock)
        assert acquired_connections(registry._http.get()) == 0


def check_outcome(
    cell: Cell, result: Result, head_wire: Wire, answer: Reply
) -> Sequence[TargetFailure]:
    """The outcome, the head's attempts and failures; returns the head's failures."""
    expect, outcome = cell.expect, cell.expect.outcome
    if not cell.fault.refused:
        assert len(head_wire.requests) == expect.attempts
    if outcome is Outcome.HEAD:
        check_answer(result, "a/m1", answer)
        failures = result.response.failed_attempts if result.response else ()
    elif outcome is Outcome.FAILOVER and cell.chain == "two-target":
        check_answer(result, "b/m2", TAIL_ANSWER)
        failures = result.response.failed_attempts if result.response else ()
    elif outcome is Outcome.FAILOVER:
        assert isinstance(result.error, ChainExhaustedError), result.error
        failures = result.error.failures
    elif outcome is Outcome.RAISE:
        error = result.error
        assert isinstance(error, expect.errors), error
        assert isinstance(error, ProviderError) and error.key == "a/m1"
        return ()
    else:
        check_mid_stream(cell, result)
        return ()
    assert [(f.key, f.attempt) for f in failures] == [
        ("a/m1", n) for n in range(1, len(failures) + 1)
    ]
    expected_failures = expect.attempts - (1 if outcome is Outcome.HEAD else 0)
    assert len(failures) == expected_failures
    for failure in failures:
        assert isinstance(failure.error, expect.errors), failure.error
    return failures


def check_answer(result: Result, key: str, answer: Reply) -> None:
    """A success, complete, named after the target that answered, with its usage."""
    assert result.error is None, repr(result.error)
    response = result.response
    assert response is not None
    assert response.model == key
    assert response.text == answer.text
    assert response.usage == usage_of(answer)
    if result.stream is not None:
        assert result.stream.finished
        assert result.stream.model == key
        assert result.received == answer.text


def check_mid_stream(cell: Cell, result: Result) -> None:
    """The head's text reached the consumer, then its typed error; never a success."""
    error, stream = result.error, result.stream
    assert isinstance(error, cell.expect.errors), repr(error)
    assert isinstance(error, ProviderError) and error.key == "a/m1"
    assert stream is not None and stream.model == "a/m1"
    assert result.response is None
    assert not stream.finished and stream.closed
    with pytest.raises(StreamNotFinishedError):
        stream.response  # noqa: B018
    answer = served(cell.fault.script(cell.mode) or ())
    expected_text = answer.text if cell.fault.name == "complete-body-without-sentinel" else PARTIAL
    assert result.received == expected_text
    notes = getattr(error, "__notes__", [])
    assert any(f"after {len(expected_text)} characters" in note for note in notes), notes


def check_waits(cell: Cell, failures: Sequence[TargetFailure], clock: ManualClock) -> None:
    """One wait per same-target retry, never shorter than what the failure asked for."""
    # Every head attempt but the last was followed by a retry, after a wait.
    retries = failures[: cell.expect.attempts - 1]
    assert len(clock.sleeps) == len(retries)
    for wait, failure in zip(clock.sleeps, retries, strict=True):
        hint = getattr(failure.error, "retry_after", None)
        assert wait >= (hint or 0.0)
    bounds = cell.expect.retry_after
    if bounds is not None:
        for failure in failures:
            assert isinstance(failure.error, RateLimitError)
            hint = failure.error.retry_after
            assert hint is not None and bounds[0] <= hint <= bounds[1], hint


def check_time(cell: Cell, result: Result) -> None:
    """A silent head costs one timeout, never one per retry; other cells wait for none.

    Counted, not clocked: every wait of the chain is on the manual clock, so real time is
    spent only by a transport timeout, and the timeouts the call met are in its record.
    The wall-clock bounds only catch a hang: they are loose, so that a loaded machine
    cannot fail them (a tight cap of one timeout failed cells under load).
    """
    timeouts = [error for error in _errors(result) if isinstance(error, ProviderTimeoutError)]
    if cell.expect.silent:
        # One timeout per silent target (a two-target cell may have two), never a retry.
        per_target = Counter(error.key for error in timeouts)
        assert timeouts and max(per_target.values()) == 1, timeouts
        assert TIMEOUT * 0.9 <= result.seconds < 20 * TIMEOUT, result.seconds
    else:
        assert timeouts == [], timeouts
        assert result.seconds < 20 * TIMEOUT, result.seconds


def _errors(result: Result) -> list[BaseException]:
    """Every error the call met: the raised one (and what it groups), each failed attempt."""
    errors: list[BaseException] = []
    if result.response is not None:  # a stream's response has the stream's failures
        errors.extend(f.error for f in result.response.failed_attempts if not f.skipped)
    elif result.stream is not None:
        errors.extend(f.error for f in result.stream.failed_attempts if not f.skipped)
    error = result.error
    if isinstance(error, BaseExceptionGroup):
        errors.extend(error.exceptions)
    elif error is not None:
        errors.append(error)
        errors.extend(f.error for f in getattr(error, "failures", ()) if not f.skipped)
    return errors


async def check_healthy_afterwards(
    cell: Cell, registry: Registry, head_wire: Wire, tail_wire: Wire, clock: ManualClock
) -> None:
    """The same registry serves healthy calls: the tail alone, then the same chain once
    the head's cooldown (if it was benched) is over."""
    tail_wire.program(TAIL_ANSWER)
    result = await call(registry.parse("b/m2"), cell.mode)
    check_answer(result, "b/m2", TAIL_ANSWER)
    if cell.fault.refused:
        return  # nothing listens for the head
    head_wire.program(HEAD_ANSWER)
    # Jump past the cooldown rather than let a one-target chain wait for its recovery:
    # that wait converts the cooldown's end between two readings of this real-time clock
    # and may come up a hair short (see `HealthTracker.local_time`), skipping the head.
    clock.advance(HealthConfig().max_cooldown)
    result = await call(registry.parse(cell.spec), cell.mode)
    assert result.response is not None, repr(result.error)
    key = result.response.model
    check_answer(result, key, HEAD_ANSWER if key == "a/m1" else TAIL_ANSWER)


# --------------------------------------------------------------------------- beyond the table


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize("provider", WIRES)
async def test_attempt_timeout_cuts_a_silent_head_once(
    provider: str, mode: Mode, clock: RealTimeManualClock
) -> None:
    """With lenient provider timeouts, the chain's attempt timeout is what cuts a silent
    head: once (no retry), then the tail answers."""
    head_wire = WIRES[provider]([Silence()], key=KEY_HEAD)
    tail_wire = WIRES[FALLBACK[provider]]([TAIL_ANSWER], key=KEY_TAIL)
    async with head_wire.running() as dsn_a, tail_wire.running() as dsn_b:
        env = {"LLM_A": dsn_a + "?headers=30&first_token=30&idle=30", "LLM_B": dsn_b}
        async with Registry(env=env, clock=clock, chain=CHAIN) as registry:
            result = await call(registry.parse("a/m1,b/m2"), mode)
            assert acquired_connections(registry._http.get()) == 0

    check_answer(result, "b/m2", TAIL_ANSWER)
    assert result.response is not None
    [failure] = result.response.failed_attempts
    assert isinstance(failure.error, ProviderTimeoutError)
    assert "attempt timeout" in str(failure.error)
    assert ATTEMPT_TIMEOUT * 0.9 <= result.seconds < 2 * ATTEMPT_TIMEOUT, result.seconds
    assert (len(head_wire.requests), len(tail_wire.requests)) == (1, 1)
    assert clock.sleeps == []


async def test_the_clock_expires_deadlines_in_real_time_and_on_jumps() -> None:
    """The matrix's clock: deadline scopes fire in real time, and a jump brings them on."""
    clock = RealTimeManualClock()
    started = time.monotonic()
    with clock.deadline_scope(clock.now() + 0.05) as scope:
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert 0.04 <= time.monotonic() - started < 1

    with clock.deadline_scope(clock.now() + 60) as scope:
        await clock.sleep(61)  # a jump past the deadline
        await anyio.sleep(5)
    assert scope.cancelled_caught
    assert clock.sleeps == [61]
    assert time.monotonic() - started < 2
