"""Every failover rule of `chain_do`, with scripted models and a manual clock (no sleeps)."""

from __future__ import annotations

import logging
from datetime import datetime

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from majordomo_async import (
    AuthenticationError,
    ChainConfig,
    ChainExhaustedError,
    ContextLengthError,
    HealthConfig,
    HealthTracker,
    ManualClock,
    ModelNotFoundError,
    OverloadedError,
    ProviderTimeoutError,
    RateLimitError,
    Request,
    ServerError,
    StreamEnd,
    StreamStart,
    StreamTruncatedError,
    TargetSkippedError,
    TextDelta,
    UnsupportedRequestError,
    Usage,
    UsageUpdate,
)

from .helpers.scripted import HANG, ScriptedModel, Sleep, error, make_chain

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def overloaded(**fields: object) -> Exception:
    return error(OverloadedError, "busy", status=503, **fields)


# --------------------------------------------------------------------------- success


async def test_head_answers_and_reports_its_key(clock: ManualClock) -> None:
    """The head's answer comes back stamped with its key; the tail is never called."""
    head, tail = ScriptedModel("p/head", ["hello"]), ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock)

    response = await chain.generate("hi")

    assert (response.text, response.model, response.failed_attempts) == ("hello", "p/head", ())
    assert (head.calls, tail.calls) == (1, 0)
    assert chain.targets == ("p/head", "p/tail")


async def test_plain_string_and_options_become_a_request(clock: ManualClock) -> None:
    """A str is one user message; options are applied before the attempt."""
    from majordomo_async import temperature

    head = ScriptedModel("p/head")
    await make_chain(head, clock=clock).generate("hi", temperature(0.3))

    assert head.requests[0].prompt == "hi"
    assert head.requests[0].temperature == 0.3


async def test_success_resets_health(clock: ManualClock) -> None:
    """A failure followed by a success leaves no recorded state for the target."""
    head = ScriptedModel("p/head", [overloaded(), "ok"])
    chain = make_chain(head, clock=clock, health=HealthConfig(failure_threshold=3))

    await chain.generate("hi")

    assert await chain._tracker.snapshot() == {}
    assert head.calls == 2


# --------------------------------------------------------------------------- transient errors


async def test_transient_error_is_retried_once_on_the_same_target(clock: ManualClock) -> None:
    """Default transient_retries=1: one same-target retry, then the chain advances."""
    head = ScriptedModel("p/head", [overloaded()])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, health=HealthConfig(failure_threshold=5))

    response = await chain.generate("hi")

    assert head.calls == 2
    assert response.model == "p/tail"
    assert [(f.key, f.attempt) for f in response.failed_attempts] == [("p/head", 1), ("p/head", 2)]
    snapshot = await chain._tracker.snapshot()
    assert snapshot["p/head"].consecutive_failures == 2  # every failed attempt was reported


@pytest.mark.parametrize(("retries", "expected_calls"), [(0, 2), (1, 2), (3, 4), (-1, 1), (-5, 1)])
async def test_transient_retries_setting(
    clock: ManualClock, retries: int, expected_calls: int
) -> None:
    """0 selects the default (1 retry), a negative number disables retries."""
    head = ScriptedModel("p/head", [overloaded()])
    chain = make_chain(
        head,
        ScriptedModel("p/tail"),
        clock=clock,
        health=HealthConfig(failure_threshold=10),
        config=ChainConfig(transient_retries=retries),
    )

    await chain.generate("hi")

    assert head.calls == expected_calls


async def test_chain_advances_as_soon_as_the_tracker_benches(clock: ManualClock) -> None:
    """With threshold 2 and 5 retries allowed, the head gets exactly 2 attempts."""
    head = ScriptedModel("p/head", [overloaded()])
    chain = make_chain(
        head,
        ScriptedModel("p/tail"),
        clock=clock,
        health=HealthConfig(failure_threshold=2),
        config=ChainConfig(transient_retries=5),
    )

    response = await chain.generate("hi")

    assert head.calls == 2
    assert response.model == "p/tail"
    assert (await chain._tracker.snapshot())["p/head"].state == "benched"


async def test_retry_waits_a_jittered_backoff(clock: ManualClock) -> None:
    """A same-target retry waits between half and all of `retry_backoff`."""
    head = ScriptedModel("p/head", [overloaded(), "ok"])
    chain = make_chain(head, clock=clock, config=ChainConfig(retry_backoff=0.2))

    await chain.generate("hi")

    assert len(clock.sleeps) == 1
    assert 0.1 <= clock.sleeps[0] <= 0.2


async def test_retry_never_waits_less_than_retry_after(clock: ManualClock) -> None:
    """A 429 with retry_after=1.5 s is retried after 1.5 s, not the shorter backoff."""
    head = ScriptedModel("p/head", [error(RateLimitError, status=429, retry_after=1.5), "ok"])
    chain = make_chain(head, clock=clock)

    response = await chain.generate("hi")

    assert clock.sleeps == [1.5]
    assert response.model == "p/head"


async def test_retry_after_longer_than_max_retry_wait_advances(clock: ManualClock) -> None:
    """A wait beyond max_retry_wait is not taken: the chain moves to the next target."""
    head = ScriptedModel("p/head", [error(RateLimitError, status=429, retry_after=5)])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, config=ChainConfig(max_retry_wait=2.0))

    response = await chain.generate("hi")

    assert (head.calls, clock.sleeps, response.model) == (1, [], "p/tail")


async def test_retry_after_extends_the_cooldown(clock: ManualClock) -> None:
    """When a 429 benches a target, its cooldown lasts at least the retry_after."""
    head = ScriptedModel(
        "p/head",
        [error(RateLimitError, status=429, retry_after=0.5)] * 1
        + [error(RateLimitError, status=429, retry_after=20)],
    )
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock)

    await chain.generate("hi")

    until = await chain._tracker.backed_off_until("p/head")
    assert until is not None
    assert (until - clock.wall(clock.now())).total_seconds() == pytest.approx(20)


async def test_timeout_error_is_not_retried_on_the_same_target(clock: ManualClock) -> None:
    """A provider timeout counts as a failure but the chain moves on at once."""
    head = ScriptedModel("p/head", [error(ProviderTimeoutError)])
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock)

    response = await chain.generate("hi")

    assert head.calls == 1
    assert response.model == "p/tail"
    assert (await chain._tracker.snapshot())["p/head"].consecutive_failures == 1


async def test_unknown_exception_types_are_permanent(clock: ManualClock) -> None:
    """A bug in a provider (TypeError) is raised, never retried nor failed over."""
    head = ScriptedModel("p/head", [TypeError("bug")])
    tail = ScriptedModel("p/tail")

    with pytest.raises(TypeError, match="bug") as info:
        await make_chain(head, tail, clock=clock).generate("hi")

    assert (head.calls, tail.calls) == (1, 0)
    assert "raised by chain target p/head" in (info.value.__notes__ or [])


# --------------------------------------------------------------------------- permanent errors


@pytest.mark.parametrize(
    "exc",
    [
        error(ModelNotFoundError, status=404),
        error(ContextLengthError, status=400),
        error(UnsupportedRequestError),
    ],
    ids=["model-not-found", "context-length", "unsupported"],
)
async def test_errors_that_advance_without_penalty(clock: ManualClock, exc: Exception) -> None:
    """Model-not-found, context-length and unsupported: next target, head's health untouched."""
    head = ScriptedModel("p/head", [exc])
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock)

    response = await chain.generate("hi")

    assert (head.calls, response.model) == (1, "p/tail")
    assert response.failed_attempts[0].error is exc
    assert await chain._tracker.snapshot() == {}


async def test_other_permanent_errors_fail_fast(clock: ManualClock) -> None:
    """An auth error is raised as itself; failing over cannot fix a bad key."""
    exc = error(AuthenticationError, status=401)
    head, tail = ScriptedModel("p/head", [exc]), ScriptedModel("p/tail")

    with pytest.raises(AuthenticationError) as info:
        await make_chain(head, tail, clock=clock).generate("hi")

    assert info.value is exc
    assert tail.calls == 0


async def test_advance_on_permanent(clock: ManualClock) -> None:
    """With advance_on_permanent, a permanent error advances without a health penalty."""
    head = ScriptedModel("p/head", [error(AuthenticationError, status=401)])
    chain = make_chain(
        head, ScriptedModel("p/tail"), clock=clock, config=ChainConfig(advance_on_permanent=True)
    )

    response = await chain.generate("hi")

    assert response.model == "p/tail"
    assert await chain._tracker.snapshot() == {}


async def test_custom_classifier(clock: ManualClock) -> None:
    """ChainConfig.classify replaces the default policy."""
    from majordomo_async import ErrorClass

    head = ScriptedModel("p/head", [KeyError("x"), "ok"])
    config = ChainConfig(classify=lambda exc: ErrorClass.TRANSIENT)

    response = await make_chain(head, clock=clock, config=config).generate("hi")

    assert (head.calls, response.model) == (2, "p/head")


# --------------------------------------------------------------------------- exhaustion


async def test_all_failed_raises_chain_exhausted_with_every_attempt(clock: ManualClock) -> None:
    """ChainExhaustedError keeps every attempt in order and str() lists every target."""
    head = ScriptedModel("p/head", [overloaded()])
    tail = ScriptedModel("p/tail", [error(ServerError, "boom", status=500)])
    chain = make_chain(head, tail, clock=clock, health=HealthConfig(failure_threshold=5))

    with pytest.raises(ChainExhaustedError) as info:
        await chain.generate("hi")

    failures = info.value.failures
    assert [(f.key, f.attempt) for f in failures] == [
        ("p/head", 1),
        ("p/head", 2),
        ("p/tail", 1),
        ("p/tail", 2),
    ]
    text = str(info.value)
    assert "p/head" in text and "p/tail" in text and "OverloadedError" in text
    assert info.value.exceptions == tuple(f.error for f in failures)


async def test_benched_target_is_skipped_and_recorded(clock: ManualClock) -> None:
    """A backed-off target is not called; its skip names when it recovers."""
    head = ScriptedModel("p/head", [overloaded()])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, health=HealthConfig(failure_threshold=1))
    await chain.generate("first")  # head fails once at t=0: benched for 1 s
    assert head.calls == 1

    response = await chain.generate("second")

    assert head.calls == 1
    assert response.model == "p/tail"
    skip = response.failed_attempts[0]
    assert skip.skipped
    assert str(skip) == "p/head: skipped (backed off until 00:00:01.000)"


class CountingClock(ManualClock):
    """A manual clock that counts its wall-clock conversions."""

    walls = 0

    def wall(self, when: float) -> datetime:
        self.walls += 1
        return super().wall(when)


@pytest.mark.parametrize("debug", [False, True], ids=["quiet", "debug-log"])
async def test_a_skip_formats_its_time_only_when_read(
    debug: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Every call past a benched target records a skip; its wall-clock text is made only
    when something reads it (a debug log line, the failure's text), not per call."""
    clock = CountingClock()
    head, tail = ScriptedModel("p/head", [overloaded()]), ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, health=HealthConfig(failure_threshold=1))
    await chain.generate("first")  # benched (its warning names the time once)
    clock.walls = 0
    caplog.set_level(logging.DEBUG if debug else logging.WARNING, logger="majordomo_async")
    responses = [await chain.generate("again") for _ in range(5)]
    assert clock.walls == (5 if debug else 0)
    if debug:
        assert "p/head skipped (backed off until 00:00:01.000)" in caplog.messages
    assert str(responses[0].failed_attempts[0]).endswith("(backed off until 00:00:01.000)")
    assert clock.walls == (5 if debug else 1)


async def test_all_benched_waits_for_the_first_recovery(clock: ManualClock) -> None:
    """When every target is benched, the chain waits for the soonest one and tries it."""
    tracker = HealthTracker(HealthConfig(failure_threshold=1, base_cooldown=3), clock=clock)
    head = ScriptedModel("p/head")
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, tracker=tracker)
    await tracker.report_failure("p/head", retry_after=5)
    await tracker.report_failure("p/tail")  # recovers first, at t=3

    response = await chain.generate("hi")

    assert clock.sleeps == [3.0]
    assert response.model == "p/tail"
    assert [f.skipped for f in response.failed_attempts] == [True, True, True]


async def test_all_benched_beyond_the_deadline_fails_naming_recoveries(
    clock: ManualClock,
) -> None:
    """If the first recovery is past the deadline, the error says when each target recovers."""
    tracker = HealthTracker(HealthConfig(failure_threshold=1, base_cooldown=3), clock=clock)
    chain = make_chain(ScriptedModel("p/a"), ScriptedModel("p/b"), clock=clock, tracker=tracker)
    await tracker.report_failure("p/a")
    await tracker.report_failure("p/b", retry_after=7)

    with pytest.raises(ChainExhaustedError) as info:
        await chain.generate(Request("hi", timeout=2))

    assert clock.sleeps == []
    assert str(info.value) == (
        "all chain targets failed: p/a: skipped (backed off until 00:00:03.000); "
        "p/b: skipped (backed off until 00:00:07.000)"
    )


async def test_all_benched_respects_max_recovery_wait(clock: ManualClock) -> None:
    """Without a deadline, max_recovery_wait bounds the wait for a recovery."""
    tracker = HealthTracker(
        HealthConfig(failure_threshold=1, base_cooldown=10, max_cooldown=10), clock=clock
    )
    chain = make_chain(
        ScriptedModel("p/a"), clock=clock, tracker=tracker, config=ChainConfig(max_recovery_wait=5)
    )
    await tracker.report_failure("p/a")

    with pytest.raises(ChainExhaustedError):
        await chain.generate("hi")
    assert clock.sleeps == []


# --------------------------------------------------------------------------- deadline


async def test_deadline_cuts_a_slow_attempt_without_penalty(clock: ManualClock) -> None:
    """The call's deadline ends a slow attempt; later targets are recorded as not tried."""
    head = ScriptedModel("p/head", [Sleep(10)], clock=clock)
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock)

    with pytest.raises(ChainExhaustedError) as info:
        await chain.generate(Request("hi", timeout=5))

    first, second = info.value.failures
    assert isinstance(first.error, ProviderTimeoutError)
    assert "deadline" in str(first.error)
    assert isinstance(second.error, TargetSkippedError) and "deadline" in str(second.error)
    assert tail.calls == 0
    assert await chain._tracker.snapshot() == {}  # the budget was the caller's


async def test_chain_default_timeout_applies(clock: ManualClock) -> None:
    """ChainConfig.timeout is the deadline when the request sets none."""
    head = ScriptedModel("p/head", [HANG, "late"], clock=clock)
    chain = make_chain(head, clock=clock, config=ChainConfig(timeout=1))

    async def advance_later() -> None:
        await wait_all_tasks_blocked()
        clock.advance(1)

    async with anyio.create_task_group() as tg:
        tg.start_soon(advance_later)
        with pytest.raises(ChainExhaustedError):
            await chain.generate("hi")


async def test_attempt_timeout_penalises_and_advances(clock: ManualClock) -> None:
    """A target slower than attempt_timeout fails with a timeout, counted, not retried."""
    head = ScriptedModel("p/head", [Sleep(10)], clock=clock)
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, config=ChainConfig(attempt_timeout=3))

    response = await chain.generate("hi")

    assert (head.calls, response.model) == (1, "p/tail")
    assert "attempt timeout" in str(response.failed_attempts[0].error)
    assert (await chain._tracker.snapshot())["p/head"].consecutive_failures == 1


async def test_retry_wait_that_would_pass_the_deadline_advances(clock: ManualClock) -> None:
    """A retry wait that does not fit the remaining budget is not taken."""
    head = ScriptedModel("p/head", [error(RateLimitError, status=429, retry_after=1.5)])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock)

    response = await chain.generate(Request("hi", timeout=1))

    assert (head.calls, clock.sleeps, response.model) == (1, [], "p/tail")


# --------------------------------------------------------------------------- half-open probes


async def test_single_flight_probe_after_cooldown(clock: ManualClock) -> None:
    """After a cooldown one caller probes; concurrent callers skip until it ends."""
    release = anyio.Event()

    async def slow_ok() -> str:
        await release.wait()
        return "recovered"

    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    head = ScriptedModel("p/head", [slow_ok, "ok"])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock, tracker=tracker)
    await tracker.report_failure("p/head")
    clock.advance(1.0)  # the cooldown is over: half-open
    results = []

    async def call() -> None:
        results.append(await chain.generate("hi"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)  # takes the probe slot and blocks
        await wait_all_tasks_blocked()
        assert (await tracker.snapshot())["p/head"].state == "probing"
        await call()  # a concurrent caller skips the head
        assert results[-1].model == "p/tail"
        assert "probe is in flight" in str(results[-1].failed_attempts[0])
        release.set()

    assert head.calls == 1
    assert results[-1].model == "p/head"
    assert await tracker.snapshot() == {}


async def test_failed_probe_benches_with_a_longer_cooldown(clock: ManualClock) -> None:
    """A failed probe benches again at once with the next cooldown (1 s, then 2 s)."""
    tracker = HealthTracker(HealthConfig(failure_threshold=2), clock=clock)
    head = ScriptedModel("p/head", [overloaded()])
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock, tracker=tracker)
    await chain.generate("hi")  # 2 failures: benched 1 s
    clock.advance(1.0)

    await chain.generate("hi")  # the probe fails once: benched 2 s, no retry

    assert head.calls == 3
    assert await tracker.backed_off_until("p/head") == clock.wall(clock.now() + 2.0)
    assert (await tracker.snapshot())["p/head"].benchings == 2


async def test_probe_slot_is_released_on_a_permanent_no_penalty_error(clock: ManualClock) -> None:
    """A probe that ends with model-not-found gives the slot back for the next caller."""
    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    head = ScriptedModel("p/head", [error(ModelNotFoundError, status=404), "ok"])
    chain = make_chain(head, ScriptedModel("p/tail"), clock=clock, tracker=tracker)
    await tracker.report_failure("p/head")
    clock.advance(1.0)

    first = await chain.generate("hi")
    second = await chain.generate("hi")

    assert (first.model, second.model) == ("p/tail", "p/head")


# --------------------------------------------------------------------------- cancellation


async def test_cancel_during_an_attempt_reports_nothing(clock: ManualClock) -> None:
    """Cancelling a call mid-attempt propagates and leaves the target's health untouched."""
    head = ScriptedModel("p/head", [HANG])
    chain = make_chain(head, clock=clock)

    with anyio.move_on_after(0.01) as scope:  # real time: the only way in is cancellation
        await chain.generate("hi")

    assert scope.cancelled_caught
    assert await chain._tracker.snapshot() == {}


async def test_cancel_during_a_retry_wait(clock: ManualClock) -> None:
    """Cancelled while waiting to retry: only the real failure is counted."""

    class BlockingClock(ManualClock):
        async def sleep(self, seconds: float) -> None:
            self.sleeps.append(seconds)
            await anyio.sleep_forever()

    blocking = BlockingClock()
    head = ScriptedModel("p/head", [overloaded(), "ok"])
    chain = make_chain(head, clock=blocking, health=HealthConfig(failure_threshold=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(chain.generate, "hi")
        await wait_all_tasks_blocked()
        assert len(blocking.sleeps) == 1
        tg.cancel_scope.cancel()

    assert head.calls == 1
    assert (await chain._tracker.snapshot())["p/head"].consecutive_failures == 1


async def test_cancelled_probe_gives_its_slot_back(clock: ManualClock) -> None:
    """A probe cancelled mid-flight is no verdict: the next caller probes."""
    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    head = ScriptedModel("p/head", [HANG, "ok"])
    chain = make_chain(head, clock=clock, tracker=tracker)
    await tracker.report_failure("p/head")
    clock.advance(1.0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(chain.generate, "hi")
        await wait_all_tasks_blocked()
        assert (await tracker.snapshot())["p/head"].state == "probing"
        tg.cancel_scope.cancel()

    assert (await tracker.snapshot())["p/head"].state == "half-open"
    assert (await chain.generate("hi")).model == "p/head"


async def test_cancellation_is_checked_before_each_attempt(clock: ManualClock) -> None:
    """A call entered with cancellation pending makes no attempt at all."""
    head = ScriptedModel("p/head")
    chain = make_chain(head, clock=clock)

    with anyio.CancelScope() as scope:
        scope.cancel()
        await chain.generate("hi")

    assert head.calls == 0


# --------------------------------------------------------------------------- streams


async def test_stream_error_before_first_content_fails_over(clock: ManualClock) -> None:
    """A failure after a preamble event (message start) still fails over."""
    head = ScriptedModel("p/head", [[StreamStart(), overloaded()]])
    tail = ScriptedModel("p/tail", ["from tail"])
    chain = make_chain(head, tail, clock=clock, config=ChainConfig(transient_retries=-1))

    async with await chain.stream("hi") as stream:
        events = [event async for event in stream]

    assert stream.model == "p/tail"
    assert head.closed_streams == 1  # the failed attempt's stream was closed
    assert [type(e) for e in events] == [StreamStart, TextDelta, UsageUpdate, StreamEnd]
    assert stream.response.text == "from tail"
    assert [f.key for f in stream.failed_attempts] == ["p/head"]


async def test_stream_establishment_holds_back_preamble(clock: ManualClock) -> None:
    """Usage and start events do not commit a stream: a cut before content fails over."""
    head = ScriptedModel(
        "p/head",
        [[StreamStart(), UsageUpdate(Usage(3, 0))]],  # ends without content or end
    )
    tail = ScriptedModel("p/tail", ["ok"])
    chain = make_chain(head, tail, clock=clock, config=ChainConfig(transient_retries=-1))

    stream = await chain.stream("hi")
    response = await stream.collect()

    assert response.model == "p/tail"
    assert isinstance(response.failed_attempts[0].error, StreamTruncatedError)


async def test_stream_error_after_content_reaches_the_consumer(clock: ManualClock) -> None:
    """Once content was handed out, a failure propagates: no replay on another target."""
    head = ScriptedModel("p/head", [[StreamStart(), TextDelta("Hel"), overloaded()]])
    tail = ScriptedModel("p/tail")
    chain = make_chain(head, tail, clock=clock)

    received = []
    with pytest.raises(OverloadedError):
        async with await chain.stream("hi") as stream:
            async for event in stream:
                received.append(event)

    assert received == [StreamStart(), TextDelta("Hel")]
    assert tail.calls == 0
    assert stream.closed


async def test_stream_success_resets_health_and_stamps_key(clock: ManualClock) -> None:
    """An established stream counts as success for the tracker."""
    tracker = HealthTracker(HealthConfig(failure_threshold=3), clock=clock)
    head = ScriptedModel("p/head", [overloaded(), "streamed"])
    chain = make_chain(head, clock=clock, tracker=tracker)

    stream = await chain.stream("hi")
    response = await stream.collect()

    assert (response.text, response.model) == ("streamed", "p/head")
    assert await tracker.snapshot() == {}


async def test_stream_cancelled_while_establishing(clock: ManualClock) -> None:
    """Cancelled before the first content event: the stream is closed, nothing reported."""
    head = ScriptedModel("p/head", [[StreamStart(), HANG]])
    chain = make_chain(head, clock=clock)

    with anyio.move_on_after(0.01):
        await chain.stream("hi")

    assert head.closed_streams == 1
    assert await chain._tracker.snapshot() == {}


async def test_stream_permanent_error_fails_fast(clock: ManualClock) -> None:
    """A permanent error while establishing is raised, like generate's."""
    head = ScriptedModel("p/head", [[StreamStart(), error(AuthenticationError, status=401)]])

    with pytest.raises(AuthenticationError):
        await make_chain(head, ScriptedModel("p/tail"), clock=clock).stream("hi")
    assert head.closed_streams == 1


async def test_chain_exposes_head_capabilities(clock: ManualClock) -> None:
    """A chain reports its head's capabilities."""
    from majordomo_async import Capabilities

    caps = Capabilities(vision=False)
    chain = make_chain(ScriptedModel("p/a", capabilities=caps), ScriptedModel("p/b"), clock=clock)

    assert chain.capabilities is caps
    assert repr(chain) == "Chain(p/a,p/b)"


# --------------------------------------------------------------------------- edges


@pytest.mark.parametrize(
    "settings",
    [{"timeout": 0}, {"attempt_timeout": -1}, {"retry_backoff": -0.1}, {"max_retry_wait": -1}],
)
def test_chain_config_is_validated(settings: dict[str, float]) -> None:
    """Negative waits and non-positive timeouts raise ConfigurationError."""
    from majordomo_async import ConfigurationError

    with pytest.raises(ConfigurationError):
        ChainConfig(**settings)  # type: ignore[arg-type]


def test_a_chain_needs_a_target(clock: ManualClock) -> None:
    """An empty chain is a configuration error, not an IndexError later."""
    from majordomo_async import Chain, ConfigurationError

    with pytest.raises(ConfigurationError):
        Chain([], HealthTracker(clock=clock), ChainConfig())


async def test_failed_recovery_probe_exhausts(clock: ManualClock) -> None:
    """All benched, the soonest recovers, its probe fails: exhausted, benched longer."""
    tracker = HealthTracker(HealthConfig(failure_threshold=1), clock=clock)
    only = ScriptedModel("p/only", [overloaded()])
    chain = make_chain(only, clock=clock, tracker=tracker)
    await tracker.report_failure("p/only")

    with pytest.raises(ChainExhaustedError) as info:
        await chain.generate("hi")

    assert clock.sleeps == [1.0]
    assert [f.skipped for f in info.value.failures] == [True, False]
    assert (await tracker.snapshot())["p/only"].benchings == 2


async def test_provider_that_converts_our_cancellation_is_still_a_timeout(
    clock: ManualClock,
) -> None:
    """A provider turning the deadline's cancellation into its own error counts as a timeout."""

    async def converts() -> str:
        try:
            await clock.sleep(10)
        except BaseException as exc:
            raise RuntimeError("connection pool closed") from exc
        return "never"

    head = ScriptedModel("p/head", [converts])
    chain = make_chain(
        head, ScriptedModel("p/tail"), clock=clock, config=ChainConfig(attempt_timeout=1)
    )

    response = await chain.generate("hi")

    assert response.model == "p/tail"
    assert isinstance(response.failed_attempts[0].error, ProviderTimeoutError)


async def test_timeout_classified_permanent_by_a_custom_classifier_is_raised(
    clock: ManualClock,
) -> None:
    """If the user's classifier calls timeouts permanent, the timeout is raised at once."""
    from majordomo_async import ErrorClass

    head = ScriptedModel("p/head", [Sleep(10)], clock=clock)
    config = ChainConfig(attempt_timeout=1, classify=lambda exc: ErrorClass.PERMANENT)

    with pytest.raises(ProviderTimeoutError):
        await make_chain(head, ScriptedModel("p/tail"), clock=clock, config=config).generate("hi")
