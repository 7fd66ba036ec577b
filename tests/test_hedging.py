"""Hedged first tokens on a manual clock: when the hedge starts, who wins, that the loser
is cancelled without a penalty, and that no call has more than two attempts in flight."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from majordomo_async import (
    AuthenticationError,
    CallInfo,
    ChainConfig,
    ChainExhaustedError,
    ConfigurationError,
    HealthTracker,
    Hooks,
    ManualClock,
    OverloadedError,
)

from .helpers.scripted import HANG, ScriptedModel, Sleep, error, make_chain

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Recorder(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def hedge_started(self, call: CallInfo, key: str, *, after: float) -> None:
        self.events.append(("started", key, after))

    def hedge_won(self, call: CallInfo, key: str, *, loser: str) -> None:
        self.events.append(("won", key, loser))


class Counting(ScriptedModel):
    """Counts attempts in flight across the models that share `live`."""

    def __init__(self, key: str, outcomes: Any, live: list[int], **kwargs: Any) -> None:
        super().__init__(key, outcomes, **kwargs)
        self.live = live
        self.cancelled = 0

    async def _outcome(self, request: Any) -> Any:
        self.live[0] += 1
        self.live[1] = max(self.live[1], self.live[0])
        try:
            return await super()._outcome(request)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.live[0] -= 1


async def advance_when_blocked(clock: ManualClock, seconds: float) -> None:
    await wait_all_tasks_blocked()
    clock.advance(seconds)


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_silent_head_is_hedged_and_the_hedge_wins(streaming: bool) -> None:
    clock = ManualClock()
    live = [0, 0]
    head = Counting("p/head", [HANG], live)
    backup = Counting("p/backup", ["ok"], live)
    hooks = Recorder()
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after=1.5), hooks=[hooks]
    )
    result: list[Any] = []

    async def call() -> None:
        if streaming:
            stream = await chain.stream("hi")
            result.append(await stream.collect())
        else:
            result.append(await chain.generate("hi"))

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await advance_when_blocked(clock, 1.4)
        await wait_all_tasks_blocked()
        assert backup.calls == 0  # not yet
        clock.advance(0.1)
    assert result[0].model == "p/backup"
    assert result[0].failed_attempts == ()  # the loser is not a failure
    assert head.cancelled == 1
    assert live == [0, 2]
    assert hooks.events == [("started", "p/head", 1.5), ("won", "p/backup", "p/head")]
    assert await chain._tracker.snapshot() == {
        key: value
        for key, value in (await chain._tracker.snapshot()).items()
        if value.state == "healthy"
    }  # nothing recorded against the cancelled head
    assert all(load.in_flight == 0 for load in chain._tracker.load.loads.values())


async def test_a_head_that_answers_before_the_delay_is_not_hedged() -> None:
    clock = ManualClock()
    head = ScriptedModel("p/head", [Sleep(1.0, "ok")], clock=clock)
    backup = ScriptedModel("p/backup")
    hooks = Recorder()
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after=2.0), hooks=[hooks]
    )
    response = await chain.generate("hi")
    assert response.model == "p/head"
    assert backup.calls == 0
    assert hooks.events == []


async def test_the_head_may_still_win_after_the_hedge_started() -> None:
    clock = ManualClock()
    gate = anyio.Event()

    async def late() -> str:
        await gate.wait()
        return "late"

    head = ScriptedModel("p/head", [late])
    backup = ScriptedModel("p/backup", [HANG])
    hooks = Recorder()
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after=1.0), hooks=[hooks]
    )
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        await advance_when_blocked(clock, 1.0)
        await wait_all_tasks_blocked()
        assert backup.calls == 1
        gate.set()
    assert result[0].model == "p/head"
    assert hooks.events == [("started", "p/head", 1.0)]  # started, not won
    assert await chain._tracker.snapshot() == {
        key: value
        for key, value in (await chain._tracker.snapshot()).items()
        if value.state == "healthy"
    }


async def _append(into: list[Any], awaitable: Any) -> None:
    """The awaitable's result, or the exception it raised."""
    try:
        into.append(await awaitable)
    except Exception as exc:
        into.append(exc)


async def test_never_more_than_two_attempts_in_flight() -> None:
    clock = ManualClock()
    live = [0, 0]
    models = [Counting(f"p/m{i}", [HANG], live) for i in range(5)]
    config = ChainConfig(hedge_after=1.0, attempt_timeout=3.0, timeout=30)
    chain = make_chain(*models, clock=clock, config=config)
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        for _ in range(40):
            await advance_when_blocked(clock, 0.5)
    assert isinstance(result[0], ChainExhaustedError)
    assert all(model.calls == 1 for model in models)  # each tried, each timed out
    assert live[1] == 2
    assert live[0] == 0


async def test_a_failed_head_leaves_the_hedge_to_answer() -> None:
    clock = ManualClock()
    gate = anyio.Event()

    async def fail() -> str:
        await gate.wait()
        raise error(OverloadedError, "busy", status=503)

    later = anyio.Event()

    async def answer() -> str:
        await later.wait()
        return "late ok"

    head = ScriptedModel("p/head", [fail])
    backup = ScriptedModel("p/backup", [answer])
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after=1.0, transient_retries=-1)
    )
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        await advance_when_blocked(clock, 1.0)
        await wait_all_tasks_blocked()
        gate.set()
        await wait_all_tasks_blocked()
        later.set()
    assert result[0].model == "p/backup"
    assert [failure.key for failure in result[0].failed_attempts] == ["p/head"]


async def test_a_permanent_error_in_the_hedge_is_raised_and_cancels_the_head() -> None:
    clock = ManualClock()
    live = [0, 0]
    head = Counting("p/head", [HANG], live)
    backup = Counting("p/backup", [error(AuthenticationError, "bad key", status=401)], live)
    chain = make_chain(head, backup, clock=clock, config=ChainConfig(hedge_after=1.0))
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        await advance_when_blocked(clock, 1.0)
    assert isinstance(result[0], AuthenticationError)
    assert head.cancelled == 1
    assert live[0] == 0


async def test_a_percentile_hedge_follows_the_observed_latency() -> None:
    clock = ManualClock()
    head = ScriptedModel("p/head", [Sleep(0.2, "ok")] * 20 + [HANG], clock=clock)
    backup = ScriptedModel("p/backup")
    hooks = Recorder()
    chain = make_chain(
        head, backup, clock=clock, config=ChainConfig(hedge_after="p90"), hooks=[hooks]
    )
    for _ in range(20):
        assert (await chain.generate("hi")).model == "p/head"
    assert backup.calls == 0
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        await advance_when_blocked(clock, 0.2)
    assert result[0].model == "p/backup"
    assert hooks.events[0][:2] == ("started", "p/head")
    assert hooks.events[0][2] == pytest.approx(0.2)


async def test_a_percentile_hedge_waits_the_cold_start_delay_without_samples() -> None:
    clock = ManualClock()
    head = ScriptedModel("p/head", [HANG])
    backup = ScriptedModel("p/backup")
    chain = make_chain(head, backup, clock=clock, config=ChainConfig(hedge_after="p95"))
    result: list[Any] = []
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: _append(result, chain.generate("hi")))
        await advance_when_blocked(clock, 1.9)
        await wait_all_tasks_blocked()
        assert backup.calls == 0
        clock.advance(0.1)
    assert result[0].model == "p/backup"


@pytest.mark.parametrize("value", [0, -1, "p0", "p100", "fast", True, "95"])
def test_hedge_after_refuses_what_it_cannot_mean(value: object) -> None:
    with pytest.raises(ConfigurationError, match="hedge_after"):
        ChainConfig(hedge_after=value)  # type: ignore[arg-type]


async def test_a_cancelled_call_cancels_both_lanes() -> None:
    clock = ManualClock()
    live = [0, 0]
    head, backup = Counting("p/head", [HANG], live), Counting("p/backup", [HANG], live)
    chain = make_chain(head, backup, clock=clock, config=ChainConfig(hedge_after=1.0))
    async with anyio.create_task_group() as group:
        group.start_soon(chain.generate, "hi")
        await advance_when_blocked(clock, 1.0)
        await wait_all_tasks_blocked()
        assert live[0] == 2
        group.cancel_scope.cancel()
    assert live[0] == 0
    assert (head.cancelled, backup.cancelled) == (1, 1)
    tracker: HealthTracker = chain._tracker
    assert all(value.state == "healthy" for value in (await tracker.snapshot()).values())
