"""Limits through the chain, on a manual clock: a target at its limit hands the call on
with no penalty, the last resort waits for a slot, and no slot is ever leaked."""

from __future__ import annotations

import gc
import random
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from majordomo_async import (
    Chain,
    ChainConfig,
    ChainExhaustedError,
    ConfigurationError,
    HealthConfig,
    HealthTracker,
    Limits,
    ManualClock,
    RateLimitError,
    Registry,
    ServerError,
    Target,
    TargetSkippedError,
)
from majordomo_async._routing import Group

from .helpers.scripted import HANG, ScriptedModel, error

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


class Live(ScriptedModel):
    """Counts its calls in flight, and the most at once."""

    def __init__(self, key: str, outcomes: Any = ("ok",), **kwargs: Any) -> None:
        super().__init__(key, outcomes, **kwargs)
        self.live = 0
        self.most = 0

    async def _outcome(self, request: Any) -> Any:
        self.live += 1
        self.most = max(self.most, self.live)
        try:
            await anyio.lowlevel.checkpoint()
            return await super()._outcome(request)
        finally:
            self.live -= 1


def build(
    *positions: Any,
    clock: ManualClock,
    limits: dict[str, Limits],
    **config: Any,
) -> tuple[Chain, HealthTracker]:
    tracker = HealthTracker(HealthConfig(), clock=clock)
    for name, value in limits.items():
        tracker.limits.set(name, value)

    def target(model: ScriptedModel) -> Target:
        return Target(model.key, model, limited=tracker.limits.limited(model.key))

    built: list[Target | Group] = []
    for position in positions:
        if isinstance(position, tuple):
            built.append(Group([target(m) for m in position], [1.0] * len(position), tracker.load))
        else:
            built.append(target(position))
    return Chain(built, tracker, ChainConfig(**config)), tracker


def idle(tracker: HealthTracker) -> bool:
    states = tracker.limits.snapshot().values()
    return all(state.in_use == 0 and state.waiting == 0 for state in states) and all(
        load.in_flight == 0 for load in tracker.load.loads.values()
    )


async def test_a_member_at_its_limit_hands_the_call_to_the_next_member() -> None:
    clock = ManualClock()
    a, b = Live("p/a", [HANG]), Live("q/b")
    chain, tracker = build(
        (a, b), clock=clock, limits={"p/a": Limits(max_concurrency=1)}, strategy="ordered"
    )
    async with anyio.create_task_group() as group:
        group.start_soon(chain.generate, "hi")  # holds p/a's only slot
        await wait_all_tasks_blocked()
        response = await chain.generate("hi")
        group.cancel_scope.cancel()
    assert response.model == "q/b"
    skip = response.failed_attempts[0]
    assert isinstance(skip.error, TargetSkippedError)
    assert "max_concurrency 1" in str(skip.error)
    assert await tracker.snapshot() == {
        key: value for key, value in (await tracker.snapshot()).items() if value.state == "healthy"
    }
    assert idle(tracker)


async def test_the_last_resort_waits_for_a_slot_and_answers() -> None:
    clock = ManualClock()
    gate = anyio.Event()

    async def slow() -> str:
        await gate.wait()
        return "first"

    only = Live("p/only", [slow, "second"])
    chain, tracker = build(only, clock=clock, limits={"p": Limits(max_concurrency=1)})
    answers: list[str] = []

    async def call() -> None:
        answers.append((await chain.generate("hi")).text)

    async with anyio.create_task_group() as group:
        group.start_soon(call)
        await wait_all_tasks_blocked()
        group.start_soon(call)
        await wait_all_tasks_blocked()
        assert tracker.limits.snapshot()["p"].waiting == 1
        gate.set()
    assert answers == ["first", "second"]
    assert only.most == 1
    assert idle(tracker)


async def test_the_wait_for_a_slot_is_bounded() -> None:
    clock = ManualClock()
    only = Live("p/only", [HANG, "never"])
    chain, tracker = build(
        only, clock=clock, limits={"p/only": Limits(max_concurrency=1)}, max_limit_wait=5.0
    )
    result: list[Any] = []

    async def second() -> None:
        try:
            result.append(await chain.generate("hi"))
        except ChainExhaustedError as exc:
            result.append(exc)

    async with anyio.create_task_group() as group:
        group.start_soon(chain.generate, "hi")
        await wait_all_tasks_blocked()
        group.start_soon(second)
        await wait_all_tasks_blocked()
        clock.advance(5.0)
        await wait_all_tasks_blocked()
        group.cancel_scope.cancel()
    assert isinstance(result[0], ChainExhaustedError)
    assert "max_concurrency 1" in str(result[0])
    assert idle(tracker)


async def test_the_last_resort_takes_the_first_slot_to_free_then_the_others() -> None:
    """A group of two members capped at 1, both busy: a third call waits for whichever
    slot frees first (the second member's, though the first member was skipped first);
    when that member fails (with its retry), it waits for the other's slot and answers
    there."""
    clock = ManualClock()
    gate_a, gate_b = anyio.Event(), anyio.Event()

    async def hold_a() -> str:
        await gate_a.wait()
        return "a-first"

    async def hold_b() -> str:
        await gate_b.wait()
        return "b-first"

    a = Live("p/a", [hold_a, "a-second"])
    b = Live("q/b", [hold_b, error(ServerError, provider="q", status=503)])
    one = Limits(max_concurrency=1)
    chain, tracker = build((a, b), clock=clock, limits={"p/a": one, "q/b": one}, strategy="ordered")
    answers: dict[str, Any] = {}

    async def call(name: str) -> None:
        answers[name] = await chain.generate("hi")

    async with anyio.create_task_group() as group:
        group.start_soon(call, "first")  # holds p/a
        await wait_all_tasks_blocked()
        group.start_soon(call, "second")  # p/a is full: holds q/b
        await wait_all_tasks_blocked()
        group.start_soon(call, "third")  # both full: waits for both
        await wait_all_tasks_blocked()
        assert [tracker.limits.snapshot()[key].waiting for key in ("p/a", "q/b")] == [1, 1]
        gate_b.set()  # q/b frees first; the third call gets its 503, then waits for p/a
        await wait_all_tasks_blocked()
        assert "third" not in answers
        assert tracker.limits.snapshot()["p/a"].waiting == 1
        gate_a.set()
    assert (answers["first"].text, answers["second"].text) == ("a-first", "b-first")
    third = answers["third"]
    assert (third.model, third.text) == ("p/a", "a-second")
    assert [(f.key, type(f.error).__name__) for f in third.failed_attempts] == [
        ("p/a", "TargetSkippedError"),
        ("q/b", "TargetSkippedError"),
        ("q/b", "ServerError"),
        ("q/b", "ServerError"),  # its one transient retry, once its slot was taken
    ]
    assert b.calls == 3
    assert idle(tracker)


@pytest.mark.parametrize("seed", range(3))
async def test_a_thousand_calls_never_exceed_the_limit_and_leak_nothing(seed: int) -> None:
    rng = random.Random(seed)
    clock = ManualClock()
    a, b = Live("p/a"), Live("q/b")
    chain, tracker = build(
        (a, b),
        clock=clock,
        limits={"p/a": Limits(max_concurrency=3), "q": Limits(max_concurrency=5)},
        max_limit_wait=1e9,
    )
    answered = 0

    async def call(cancel_after: int | None) -> None:
        nonlocal answered
        with anyio.CancelScope() as scope:
            if cancel_after is not None:
                async with anyio.create_task_group() as inner:

                    async def cancel() -> None:
                        for _ in range(cancel_after):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    inner.start_soon(cancel)
                    await chain.generate("hi")
                    inner.cancel_scope.cancel()
            else:
                await chain.generate("hi")
            answered += 1

    async with anyio.create_task_group() as group:
        for _ in range(1000):
            group.start_soon(call, rng.choice([None, None, rng.randrange(8)]))
    assert a.most <= 3 and b.most <= 5
    assert a.most == 3 and b.most == 5
    assert answered > 500
    assert idle(tracker)


async def test_a_stream_holds_its_slot_until_closed_or_dropped() -> None:
    clock = ManualClock()
    a, b = Live("p/a"), Live("q/b")
    chain, tracker = build(
        (a, b), clock=clock, limits={"p/a": Limits(max_concurrency=1)}, strategy="ordered"
    )
    stream = await chain.stream("hi")
    assert stream.model == "p/a"
    assert tracker.limits.snapshot()["p/a"].in_use == 1
    assert (await chain.generate("hi")).model == "q/b"
    await stream.aclose()
    assert tracker.limits.snapshot()["p/a"].in_use == 0
    dropped = await chain.stream("hi")
    assert tracker.limits.snapshot()["p/a"].in_use == 1
    with pytest.warns(ResourceWarning):
        del dropped
        gc.collect()
    assert idle(tracker)
    assert (await chain.generate("hi")).model == "p/a"


async def test_a_rate_limit_with_a_reset_hint_pauses_the_target() -> None:
    clock = ManualClock()
    limited = error(RateLimitError, "slow down", status=429, retry_after=30.0)
    a, b = Live("p/a", [limited, "ok"]), Live("q/b")
    chain, _ = build(
        (a, b),
        clock=clock,
        limits={"p/a": Limits(rpm=1000)},
        strategy="ordered",
        transient_retries=-1,
    )
    assert (await chain.generate("hi")).model == "q/b"
    response = await chain.generate("hi")  # p/a is paused: skipped, not benched
    assert response.model == "q/b"
    assert "paused" in str(response.failed_attempts[0].error) or "until" in str(
        response.failed_attempts[0].error
    )
    assert a.calls == 1
    clock.advance(30.0)
    assert (await chain.generate("hi")).model == "p/a"


async def test_tpm_is_reserved_before_and_settled_after() -> None:
    clock = ManualClock()
    a = Live("p/a")  # answers with Usage(1, 1)
    chain, tracker = build(a, clock=clock, limits={"p/a": Limits(tpm=1000)})
    await chain.generate("hello " * 100)
    assert tracker.limits.snapshot()["p/a"].tokens_in_window == 2


async def test_registry_limits_from_the_api_and_the_dsn() -> None:
    env = {"LLM_CAPPED": "fake://?max_concurrency=2&rpm=60"}
    async with Registry(env=env) as registry:
        assert registry.limits == {"capped": Limits(max_concurrency=2, rpm=60)}
        registry.set_limits("fake/x", max_concurrency=1)
        assert registry.limits["fake/x"] == Limits(max_concurrency=1)
        assert registry.parse("fake/x")._targets[0].limited
        registry.set_limits("fake/x", Limits())
        assert "fake/x" not in registry.limits
        assert not registry.parse("fake/x")._targets[0].limited
        with pytest.raises(ConfigurationError):
            registry.set_limits("fake/x", rpm=0)
        with pytest.raises(ConfigurationError):
            registry.set_limits("/x", rpm=1)
        response = await registry.parse("capped/m").generate("hi")
        assert response.model == "capped/m"
        assert registry.health.limits.snapshot()["capped"].in_use == 0
