"""Owned, leased probes, and streams that always give their verdict.

Each test is a way a real consumer or a real fleet of calls breaks the health tracker:
a stream dropped without closing, a late result from a call admitted before a bench, a
prober cancelled after its lease ran out, hundreds of calls failing at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging

import anyio
import pytest

from majordomo_async import (
    AuthenticationError,
    CallInfo,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    Hooks,
    InMemoryHealthStore,
    ManualClock,
    ModelProtocolError,
    OverloadedError,
    StreamEnd,
    StreamStart,
    TextDelta,
)
from majordomo_async._health import Bench

from .helpers.scripted import HANG, ScriptedModel, Sleep, error, make_chain

ONE_STRIKE = HealthConfig(failure_threshold=1, base_cooldown=1.0, probe_lease=30.0)


class Recorder(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def target_benched(self, key: str, *, until: object, error: Exception) -> None:
        self.events.append(("benched", key))

    def target_recovered(self, key: str) -> None:
        self.events.append(("recovered", key))

    def call_finished(self, call: CallInfo, *, model: object, usage: object, error: object) -> None:
        self.events.append(("finished", type(error).__name__ if error else model))


async def bench_then_cool(
    chain_model: ScriptedModel, clock: ManualClock, tracker: HealthTracker
) -> None:
    """Bench `chain_model`'s key through the tracker and let the cooldown pass."""
    bench = await tracker.report_failure(chain_model.key)
    assert bench is not None
    clock.advance(bench.until - clock.now() + 0.001)


def streamed(text: str) -> list[object]:
    return [StreamStart(model="p/m"), TextDelta(text), StreamEnd()]


async def test_a_dropped_probe_stream_warns_gives_the_probe_back_and_ends_the_call(
    clock: ManualClock,
) -> None:
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    head = ScriptedModel("p/head", [streamed("a b c")])
    recorder = Recorder()
    chain = make_chain(head, clock=clock, tracker=tracker, hooks=[recorder])
    await bench_then_cool(head, clock, tracker)

    stream = await chain.stream("hi")  # takes the half-open probe
    assert (await tracker.snapshot())["p/head"].state == "probing"
    with pytest.warns(ResourceWarning, match="unclosed stream of p/head"):
        del stream
        gc.collect()

    # The probe is back and nothing was counted: the next call probes and recovers.
    health = (await tracker.snapshot())["p/head"]
    assert (health.state, health.consecutive_failures, health.benchings) == ("half-open", 1, 1)
    assert recorder.events[-1] == ("finished", "StreamClosedError")
    head.outcomes = ["ok"]
    assert (await chain.generate("again")).model == "p/head"
    assert await tracker.snapshot() == {}
    assert ("recovered", "p/head") in recorder.events


async def test_a_dropped_restartable_stream_warns_once(clock: ManualClock) -> None:
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    head = ScriptedModel("p/head", [streamed("x")])
    chain = make_chain(head, clock=clock, tracker=tracker, config=ChainConfig(mid_stream="restart"))
    await bench_then_cool(head, clock, tracker)
    stream = await chain.stream("hi")
    with pytest.warns(ResourceWarning) as warned:
        del stream
        gc.collect()
    assert len([w for w in warned if issubclass(w.category, ResourceWarning)]) == 1
    assert (await tracker.snapshot())["p/head"].state == "half-open"


async def test_a_dropped_healthy_stream_warns_and_counts_nothing(clock: ManualClock) -> None:
    head = ScriptedModel("p/head", [streamed("x")])
    chain = make_chain(head, clock=clock)
    stream = await chain.stream("hi")
    with pytest.warns(ResourceWarning, match="p/head"):
        del stream
        gc.collect()
    assert await chain._tracker.snapshot() == {}


async def test_a_probe_nobody_reports_expires_with_its_lease(clock: ManualClock) -> None:
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    await tracker.report_failure("p/m")
    clock.advance(1.5)
    first = await tracker.admit("p/m")
    assert first.probe is not None
    assert (await tracker.admit("p/m")).admitted is False  # probe in flight
    clock.advance(ONE_STRIKE.probe_lease)
    second = await tracker.admit("p/m")
    assert second.probe is not None and second.probe != first.probe
    # The silent holder comes back late: it can neither free nor fail the new probe.
    await tracker.release_probe("p/m", first.probe)
    assert (await tracker.admit("p/m")).admitted is False
    assert await tracker.report_failure("p/m", probe=first.probe) is None
    assert (await tracker.snapshot())["p/m"].state == "probing"
    assert await tracker.report_failure("p/m", probe=second.probe) == Bench(
        clock.now() + 2.0, new=True
    )


async def test_a_stream_being_read_renews_its_probe(clock: ManualClock) -> None:
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    lease = ONE_STRIKE.probe_lease
    events: list[object] = [StreamStart(model="p/m"), TextDelta("a")]
    for _ in range(6):
        events += [Sleep(lease / 2), TextDelta("b")]
    head = ScriptedModel("p/head", [[*events, StreamEnd()]], clock=clock)
    chain = make_chain(head, clock=clock, tracker=tracker)
    await bench_then_cool(head, clock, tracker)
    async with await chain.stream("hi") as stream:
        async for event in stream:
            if isinstance(event, TextDelta) and event.text == "b":
                # Three leases in, the probe is still this stream's.
                assert (await tracker.admit("p/head")).admitted is False
    assert await tracker.snapshot() == {}


async def test_a_late_failure_cannot_end_the_probe_in_flight(clock: ManualClock) -> None:
    """Call A is admitted while healthy and fails late, after a bench, a cooldown and a
    new probe by call B: A's failure counts, B's probe stays B's."""
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    gate = anyio.Event()

    async def late_failure() -> str:
        await gate.wait()
        raise error(OverloadedError, status=503)

    head = ScriptedModel("p/head", [late_failure, HANG, "ok"])
    chain = make_chain(head, clock=clock, tracker=tracker, config=ChainConfig(transient_retries=-1))
    async with anyio.create_task_group() as tg:
        tg.start_soon(_swallow, chain.generate("a"))
        await anyio.wait_all_tasks_blocked()
        await bench_then_cool(head, clock, tracker)
        tg.start_soon(_swallow, chain.generate("b"))  # the probe: it hangs
        await anyio.wait_all_tasks_blocked()
        gate.set()  # A fails now
        await anyio.wait_all_tasks_blocked()
        with pytest.raises(ChainExhaustedError) as refused:
            await chain.generate("c")
        assert "a recovery probe is in flight" in str(refused.value.failures[0])
        assert (await tracker.snapshot())["p/head"].state == "probing"
        tg.cancel_scope.cancel()
    # B was cancelled: its probe went back.
    assert (await tracker.snapshot())["p/head"].state == "half-open"


async def _swallow(awaitable: object) -> None:
    with contextlib.suppress(Exception):
        await awaitable  # type: ignore[misc]


async def test_one_bench_is_announced_once_however_many_calls_fail(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    gate = anyio.Event()

    async def fail_together() -> str:
        await gate.wait()
        raise error(OverloadedError, status=503)

    head = ScriptedModel("p/head", [fail_together])
    backup = ScriptedModel("p/backup")
    recorder = Recorder()
    chain = make_chain(head, backup, clock=clock, hooks=[recorder])
    caplog.set_level(logging.WARNING, logger="majordomo_async")
    answers: list[str] = []

    async def call() -> None:
        answers.append((await chain.generate("hi")).model)

    async with anyio.create_task_group() as tg:
        for _ in range(200):
            tg.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert answers == ["p/backup"] * 200
    assert recorder.events.count(("benched", "p/head")) == 1
    assert len([r for r in caplog.records if "benched" in r.getMessage()]) == 1


async def test_a_retry_respects_a_bench_made_during_its_backoff(clock: ManualClock) -> None:
    tracker = HealthTracker(HealthConfig(failure_threshold=3), clock=clock)
    head = ScriptedModel("p/head", [error(OverloadedError, status=503), "ok"])
    backup = ScriptedModel("p/backup")

    class BenchDuringSleep(ManualClock):
        async def sleep(self, seconds: float) -> None:
            await super().sleep(seconds)
            for _ in range(3):  # other calls fail meanwhile: the head is benched
                await tracker.report_failure("p/head")

    clock.__class__ = BenchDuringSleep
    chain = make_chain(head, backup, clock=clock, tracker=tracker)
    response = await chain.generate("hi")
    assert response.model == "p/backup"
    assert head.calls == 1  # no retry on a benched target
    reasons = [str(f) for f in response.failed_attempts]
    assert "skipped (backed off until" in reasons[1]


async def test_a_bench_costs_nothing_per_tracked_key(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 keys with state: benching one reads no other (no snapshot for the message)."""

    class CountingStore:
        def __init__(self) -> None:
            self.inner = InMemoryHealthStore(HealthConfig(), clock)
            self.snapshots = 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        async def snapshot(self) -> object:
            self.snapshots += 1
            return await self.inner.snapshot()

    store = CountingStore()
    tracker = HealthTracker(clock=clock, store=store)  # type: ignore[arg-type]
    for n in range(10_000):
        await tracker.report_failure(f"p/m{n}")
    caplog.set_level(logging.DEBUG, logger="majordomo_async")
    recorder = Recorder()
    head = ScriptedModel("p/head", [error(OverloadedError, status=503)])
    chain = make_chain(head, ScriptedModel("p/b"), clock=clock, tracker=tracker, hooks=[recorder])
    assert (await chain.generate("hi")).model == "p/b"
    assert recorder.events.count(("benched", "p/head")) == 1
    assert store.snapshots == 0


async def test_advance_on_lets_a_chain_without_a_key_reach_its_backup(clock: ManualClock) -> None:
    head = ScriptedModel("p/head", [error(AuthenticationError, status=401)])
    backup = ScriptedModel("p/backup")
    strict = make_chain(head, backup, clock=clock)
    with pytest.raises(AuthenticationError):
        await strict.generate("hi")
    lenient = make_chain(
        head, backup, clock=clock, config=ChainConfig(advance_on=(AuthenticationError,))
    )
    response = await lenient.generate("hi")
    assert response.model == "p/backup"
    assert isinstance(response.failed_attempts[0].error, AuthenticationError)
    assert await lenient._tracker.snapshot() == {}  # no health penalty


class WrongModel:
    """A user's model that breaks the protocol."""

    def __init__(self, generate_result: object, stream_result: object) -> None:
        self.generate_result = generate_result
        self.stream_result = stream_result
        from majordomo_async import Capabilities

        self.capabilities = Capabilities()

    async def generate(self, request: object, *options: object) -> object:
        return self.generate_result

    async def stream(self, request: object, *options: object) -> object:
        return self.stream_result


@pytest.mark.parametrize("wrong", [None, "text", {"text": "hi"}])
async def test_a_model_that_breaks_the_protocol_gets_a_typed_error(
    clock: ManualClock, wrong: object
) -> None:
    from majordomo_async import Chain, Target

    tracker = HealthTracker(clock=clock)
    chain = Chain(
        [Target("my/model", WrongModel(wrong, wrong)), Target("p/b", ScriptedModel("p/b"))],
        tracker,
        ChainConfig(),
    )  # type: ignore[arg-type]
    with pytest.raises(
        ModelProtocolError, match=r"my/model: generate\(\) returned .*not a Response"
    ):
        await chain.generate("hi")
    with pytest.raises(ModelProtocolError, match=r"my/model: stream\(\) returned .*not a Stream"):
        await chain.stream("hi")
    assert await tracker.snapshot() == {}


async def test_debug_logging_tells_the_whole_story(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = HealthTracker(ONE_STRIKE, clock=clock)
    await tracker.report_failure("p/benched")
    flaky = ScriptedModel("p/flaky", [error(OverloadedError, status=503, retry_after=0.5)] * 2)
    head = ScriptedModel("p/benched")
    last = ScriptedModel("p/last")
    chain = make_chain(
        head,
        flaky,
        last,
        clock=clock,
        tracker=HealthTracker(HealthConfig(failure_threshold=3), clock=clock),
    )
    await chain._tracker.report_failure("p/benched")
    await chain._tracker.report_failure("p/benched")
    await chain._tracker.report_failure("p/benched")
    caplog.set_level(logging.DEBUG, logger="majordomo_async")
    assert (await chain.generate("hi")).model == "p/last"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "p/benched skipped (backed off until" in text
    assert "p/flaky retry 1 in 0.500 s after OverloadedError (retry-after 0.5 s)" in text
    assert "p/last answered attempt 1" in text
    assert "call answered by p/last" in text
    caplog.clear()
    last.outcomes = [error(OverloadedError, status=503)]
    flaky.outcomes = [error(OverloadedError, status=503)]
    with pytest.raises(ChainExhaustedError):
        await chain.generate("hi")
    assert "chain exhausted" in "\n".join(r.getMessage() for r in caplog.records)


async def test_debug_logging_tells_of_a_mid_stream_restart(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    head = ScriptedModel(
        "p/head",
        [[StreamStart(model="p/head"), TextDelta("a"), error(OverloadedError, status=503)]],
    )
    chain = make_chain(
        head, ScriptedModel("p/b"), clock=clock, config=ChainConfig(mid_stream="restart")
    )
    caplog.set_level(logging.INFO, logger="majordomo_async")  # the story's INFO part
    clock.advance(100.0)  # the failure's elapsed time counts from its attempt, not from 0
    response = await (await chain.stream("hi")).collect()
    assert response.model == "p/b"
    assert "p/head attempt 1 failed after 0.000 s (transient)" in caplog.text
    assert "p/head failed mid-stream (OverloadedError); the answer restarts on p/b" in caplog.text


class Unprintable(OverloadedError):
    """An error that fails the test if anything formats it."""

    def __str__(self) -> str:
        raise AssertionError("formatted although logging is off")


async def test_nothing_is_formatted_when_logging_is_off(clock: ManualClock) -> None:
    """Retries, a bench, skips and the answer: with the logger off, no message is built
    (the observer checks the level before it formats anything)."""
    flaky = Unprintable("busy", provider="p", model="m", status=503, retry_after=0.1)
    head = ScriptedModel("p/head", [flaky])
    chain = make_chain(head, ScriptedModel("p/b"), clock=clock)
    logger = logging.getLogger("majordomo_async")
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        assert (await chain.generate("hi")).model == "p/b"  # two failures: benched
        assert (await chain.generate("hi")).model == "p/b"  # skipped while benched
    finally:
        logger.setLevel(old)
    assert head.calls == 2
