"""Balanced groups: the spec grammar, strategies on a manual clock, failover inside a
group, load that always comes back to zero, and the snapshot."""

from __future__ import annotations

import gc
import random

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from majordomo_async import (
    Chain,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    HealthTracker,
    ManualClock,
    OverloadedError,
    Registry,
    StreamEnd,
    StreamRestart,
    StreamStart,
    TargetSkippedError,
    TextDelta,
)
from majordomo_async._chain import _loop
from majordomo_async._exceptions import AliasCycleError, SpecError
from majordomo_async._routing import Group
from majordomo_async._spec import Member, parse_positions

from .helpers.scripted import HANG, ScriptedModel, Sleep, error

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")


def overloaded() -> Exception:
    return error(OverloadedError, "busy", status=503)


# --------------------------------------------------------------------------- the grammar


def test_a_group_is_one_position_with_weights() -> None:
    assert parse_positions("openai/gpt-4o | azure-east/gpt-4o*3 ,anthropic/claude", {}) == [
        (Member("openai", "gpt-4o"), Member("azure-east", "gpt-4o", 3.0)),
        (Member("anthropic", "claude"),),
    ]


def test_aliases_expand_to_groups_and_groups_flatten() -> None:
    aliases = {"east": "a/x|b/x", "all": "east|c/x*0.5", "fast": "all, d/y"}
    assert parse_positions("fast", aliases) == [
        (Member("a", "x"), Member("b", "x"), Member("c", "x", 0.5)),
        (Member("d", "y"),),
    ]


def test_a_target_appears_once_at_its_first_position() -> None:
    assert parse_positions("a/x, a/x|b/x, b/x|a/x", {}) == [
        (Member("a", "x"),),
        (Member("b", "x"),),
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("a/x|", "empty member in group"),
        ("|a/x", "empty member in group"),
        ("a/x||b/x", "empty member in group"),
        ("a/x*0|b/x", "weight"),
        ("chain|b/x", "is a chain of 2 positions"),
    ],
)
def test_malformed_groups_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_positions(spec, {"chain": "c/x, d/x"})


def test_a_cycle_through_a_group_is_named() -> None:
    with pytest.raises(AliasCycleError):
        parse_positions("a", {"a": "b|x/y", "b": "a"})


def test_a_model_id_keeps_a_star_that_is_not_a_weight() -> None:
    assert parse_positions("p/model*v2|p/other", {})[0][0] == Member("p", "model*v2")


# --------------------------------------------------------------------------- strategies


def grouped(
    *members: ScriptedModel,
    clock: ManualClock,
    after: tuple[ScriptedModel, ...] = (),
    weights: tuple[float, ...] = (),
    **config: object,
) -> tuple[Chain, HealthTracker]:
    from majordomo_async import Target

    tracker = HealthTracker(HealthConfig(), clock=clock)
    group = Group(
        [Target(m.key, m) for m in members],
        weights or [1.0] * len(members),
        tracker.load,
    )
    chain = Chain(
        [group, *(Target(m.key, m) for m in after)],
        tracker,
        ChainConfig(**config),  # type: ignore[arg-type]
    )
    return chain, tracker


async def test_least_busy_sends_the_next_call_to_the_idle_member() -> None:
    clock = ManualClock()
    a, b = ScriptedModel("p/a", clock=clock), ScriptedModel("p/b", clock=clock)
    chain, tracker = grouped(a, b, clock=clock)
    first = await chain.stream("hi")  # holds its member until it ends
    busy = first.model
    for _ in range(5):
        response = await chain.generate("hi")
        assert response.model != busy
    assert tracker.load.loads[busy].in_flight == 1
    await first.aclose()
    assert tracker.load.loads[busy].in_flight == 0


async def test_least_busy_breaks_ties_by_latency_then_at_random() -> None:
    clock = ManualClock()
    slow = ScriptedModel("p/slow", [Sleep(2.0, "ok")], clock=clock)
    fast = ScriptedModel("p/fast", [Sleep(0.5, "ok")], clock=clock)
    chain, tracker = grouped(slow, fast, clock=clock, strategy="ordered")
    await chain.generate("hi")  # ordered: measures p/slow
    chain2 = Chain(chain._positions, tracker, ChainConfig(strategy="random"))
    while tracker.load.loads["p/fast"].latency is None:
        await chain2.generate("hi")
    least_busy = Chain(chain._positions, tracker, ChainConfig())
    answers = {(await least_busy.generate("hi")).model for _ in range(10)}
    assert answers == {"p/fast"}  # neither busy: the lower latency wins every time


async def test_an_unmeasured_member_is_tried_before_a_measured_one() -> None:
    clock = ManualClock()
    a = ScriptedModel("p/a", [Sleep(1.0, "ok")], clock=clock)
    b = ScriptedModel("p/b", [Sleep(0.5, "ok")], clock=clock)
    chain, _ = grouped(a, b, clock=clock, strategy="latency")
    first = (await chain.generate("hi")).model
    second = (await chain.generate("hi")).model
    assert {first, second} == {"p/a", "p/b"}


async def test_ordered_strategy_follows_the_spec() -> None:
    clock = ManualClock()
    a, b = ScriptedModel("p/a"), ScriptedModel("p/b")
    chain, _ = grouped(a, b, clock=clock, strategy="ordered")
    stream = await chain.stream("hi")
    assert [(await chain.generate("x")).model for _ in range(3)] == ["p/a"] * 3
    await stream.aclose()


async def test_random_strategy_follows_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_loop, "_rng", random.Random(7))
    clock = ManualClock()
    a, b = ScriptedModel("p/a"), ScriptedModel("p/b")
    chain, _ = grouped(a, b, clock=clock, weights=(3.0, 1.0), strategy="random")
    for _ in range(2000):
        await chain.generate("hi")
    # Expected 1500 / 500; a seeded generator, and a margin of over 8 standard deviations.
    assert 1350 < a.calls < 1650
    assert a.calls + b.calls == 2000


async def test_weights_scale_least_busy() -> None:
    clock = ManualClock()
    a, b = ScriptedModel("p/a", [HANG]), ScriptedModel("p/b", [HANG])
    chain, tracker = grouped(a, b, clock=clock, weights=(2.0, 1.0))
    async with anyio.create_task_group() as group:
        for _ in range(6):
            group.start_soon(chain.generate, "hi")
            await wait_all_tasks_blocked()
        assert (a.calls, b.calls) == (4, 2)
        group.cancel_scope.cancel()
    assert tracker.load.loads["p/a"].in_flight == tracker.load.loads["p/b"].in_flight == 0


# --------------------------------------------------------------------------- failover


async def test_a_failing_member_hands_the_call_to_the_next_member_then_position() -> None:
    clock = ManualClock()
    a = ScriptedModel("p/a", [overloaded()])
    b = ScriptedModel("p/b", [overloaded()])
    c = ScriptedModel("q/c")
    chain, _ = grouped(a, b, clock=clock, after=(c,), transient_retries=-1)
    response = await chain.generate("hi")
    assert response.model == "q/c"
    assert {failure.key for failure in response.failed_attempts} == {"p/a", "p/b"}


async def test_exhaustion_names_every_member() -> None:
    clock = ManualClock()
    a = ScriptedModel("p/a", [overloaded()])
    b = ScriptedModel("p/b", [overloaded()])
    chain, _ = grouped(a, b, clock=clock, transient_retries=-1)
    with pytest.raises(ChainExhaustedError) as caught:
        await chain.generate("hi")
    assert sorted(failure.key for failure in caught.value.failures) == ["p/a", "p/b"]


async def test_a_benched_member_is_skipped_and_recorded() -> None:
    clock = ManualClock()
    a = ScriptedModel("p/a", [overloaded()])
    b = ScriptedModel("p/b")
    chain, tracker = grouped(a, b, clock=clock, strategy="ordered", transient_retries=-1)
    await tracker.report_failure("p/a")
    await tracker.report_failure("p/a")
    response = await chain.generate("hi")
    assert response.model == "p/b"
    assert isinstance(response.failed_attempts[0].error, TargetSkippedError)
    assert a.calls == 0


async def test_a_mid_stream_restart_goes_to_another_member_first() -> None:
    clock = ManualClock()
    broken = [StreamStart(model="p/a"), TextDelta("par"), overloaded()]
    a = ScriptedModel("p/a", [broken])
    b = ScriptedModel("p/b")
    c = ScriptedModel("q/c")
    chain, tracker = grouped(
        a, b, clock=clock, after=(c,), strategy="ordered", mid_stream="restart"
    )
    stream = await chain.stream("hi")
    events = [event async for event in stream]
    restart = next(event for event in events if isinstance(event, StreamRestart))
    assert restart.model == "p/b"
    assert isinstance(events[-1], StreamEnd)
    assert c.calls == 0
    assert all(load.in_flight == 0 for load in tracker.load.loads.values())


# --------------------------------------------------------------------------- load comes back


async def test_in_flight_returns_to_zero_on_every_path() -> None:
    clock = ManualClock()
    a = ScriptedModel("p/a", ["ok", overloaded(), HANG, "ok", "ok"])
    chain, tracker = grouped(
        a, ScriptedModel("p/b", [overloaded()]), clock=clock, strategy="ordered"
    )
    load = tracker.load.loads["p/a"]
    await chain.generate("hi")  # an answer
    assert load.in_flight == 0
    with anyio.move_on_after(0.5):  # an error, a retry, then a hang: cancelled
        await chain.generate("hi")
    assert load.in_flight == 0
    stream = await chain.stream("hi")  # a stream closed before its end
    assert load.in_flight == 1
    await stream.aclose()
    assert load.in_flight == 0
    stream = await chain.stream("hi")  # a stream dropped unclosed
    assert load.in_flight == 1
    with pytest.warns(ResourceWarning):
        del stream
        gc.collect()
    assert load.in_flight == 0


# --------------------------------------------------------------------------- registry


async def test_registry_parses_groups_and_the_snapshot_shows_them() -> None:
    async with Registry(env={}) as registry:
        registry.register_alias("gpt", "fake/a?reply=A | fake/b?reply=B")
        chain = registry.parse("gpt, fake/c")
        assert chain.positions == (("fake/a?reply=A", "fake/b?reply=B"), ("fake/c",))
        stream = await chain.stream("hi")
        snapshot = await registry.health.snapshot()
        group = "fake/a?reply=A|fake/b?reply=B"
        assert snapshot[stream.model].groups == (group,)
        assert snapshot[stream.model].in_flight == 1
        assert snapshot[stream.model].state == "healthy"
        await stream.collect()
        snapshot = await registry.health.snapshot()
        assert snapshot[stream.model].in_flight == 0
        assert snapshot[stream.model].latency is not None
        assert "fake/c" not in snapshot  # not a member, no limits: healthy targets are absent
