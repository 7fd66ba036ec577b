"""The health tracker: thresholds, cooldowns, probes, hints, snapshots; against a reference."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from majordomo_async import (
    ConfigurationError,
    HealthConfig,
    HealthTracker,
    InMemoryHealthStore,
    ManualClock,
)

from .helpers.reference import RecordingStore, replay


def tracker_on(clock: ManualClock, **config: float) -> HealthTracker:
    return HealthTracker(HealthConfig(**config), clock=clock)  # type: ignore[arg-type]


async def test_threshold_benches_after_consecutive_failures(clock: ManualClock) -> None:
    """Two consecutive transient failures (the default) bench a target."""
    tracker = tracker_on(clock)

    assert await tracker.report_failure("p/m") is False
    assert await tracker.available("p/m")
    assert await tracker.report_failure("p/m") is True
    assert not await tracker.available("p/m")
    assert await tracker.backed_off_until("p/m") == clock.wall(1.0)


async def test_success_resets_the_count(clock: ManualClock) -> None:
    """A success between failures restarts the consecutive count."""
    tracker = tracker_on(clock)
    await tracker.report_failure("p/m")
    await tracker.report_success("p/m")

    assert await tracker.report_failure("p/m") is False
    assert (await tracker.snapshot())["p/m"].consecutive_failures == 1


async def test_cooldowns_grow_exponentially_up_to_the_cap(clock: ManualClock) -> None:
    """1, 2, 4, 8, then capped at 10 s: each failed probe benches for the next cooldown."""
    tracker = tracker_on(clock, failure_threshold=1, max_cooldown=10)
    cooldowns = []
    for _ in range(6):
        admission = await tracker.admit("p/m")
        assert admission.admitted
        await tracker.report_failure("p/m")
        until = await tracker.backed_off_until("p/m")
        assert until is not None
        cooldown = (until - clock.wall(clock.now())).total_seconds()
        cooldowns.append(round(cooldown, 6))
        clock.advance(cooldown)

    assert cooldowns == [1, 2, 4, 8, 10, 10]


async def test_expired_cooldown_admits_exactly_one_probe(clock: ManualClock) -> None:
    """Half-open: the first caller gets the probe, the others are refused until a verdict."""
    tracker = tracker_on(clock, failure_threshold=1)
    await tracker.report_failure("p/m")
    clock.advance(1.0)

    first, second = await tracker.admit("p/m"), await tracker.admit("p/m")

    assert (first.admitted, first.probe) == (True, True)
    assert (second.admitted, second.until) == (False, None)
    assert not await tracker.available("p/m")
    await tracker.report_success("p/m")
    assert (await tracker.admit("p/m")).admitted


async def test_released_probe_lets_the_next_caller_probe(clock: ManualClock) -> None:
    """Giving the slot back without a verdict keeps the target half-open."""
    tracker = tracker_on(clock, failure_threshold=1)
    await tracker.report_failure("p/m")
    clock.advance(1.0)
    assert (await tracker.admit("p/m")).probe

    await tracker.release_probe("p/m")

    assert (await tracker.snapshot())["p/m"].state == "half-open"
    assert (await tracker.admit("p/m")).probe


async def test_retry_after_extends_never_shortens(clock: ManualClock) -> None:
    """A hint longer than the cooldown extends it; a shorter one changes nothing."""
    tracker = tracker_on(clock, failure_threshold=1, base_cooldown=5)
    await tracker.report_failure("p/a", retry_after=12)
    await tracker.report_failure("p/b", retry_after=2)

    assert await tracker.backed_off_until("p/a") == clock.wall(12)
    assert await tracker.backed_off_until("p/b") == clock.wall(5)


async def test_late_failure_while_benched_extends_but_does_not_escalate(
    clock: ManualClock,
) -> None:
    """A failure of a call admitted before the bench may extend, never escalate."""
    tracker = tracker_on(clock, failure_threshold=1)
    await tracker.report_failure("p/m")
    await tracker.report_failure("p/m")  # late: no hint, nothing changes
    assert await tracker.backed_off_until("p/m") == clock.wall(1)
    await tracker.report_failure("p/m", retry_after=3)  # late with a hint: extends

    snapshot = (await tracker.snapshot())["p/m"]
    assert (snapshot.benchings, snapshot.backed_off_until) == (1, clock.wall(3))


async def test_retry_after_is_clamped(clock: ManualClock) -> None:
    """An absurd retry-after (a day) is clamped to max_retry_after."""
    tracker = tracker_on(clock, failure_threshold=1, max_retry_after=60)
    await tracker.report_failure("p/m", retry_after=86_400)

    assert await tracker.backed_off_until("p/m") == clock.wall(60)


async def test_snapshot_states(clock: ManualClock) -> None:
    """snapshot() names failing, benched, half-open and probing targets; healthy are absent."""
    tracker = tracker_on(clock, failure_threshold=2)
    await tracker.report_failure("p/failing")
    for key in ("p/benched", "p/half", "p/probing"):
        await tracker.report_failure(key)
        await tracker.report_failure(key)
    clock.advance(0.5)
    await tracker.report_failure("p/benched")  # late failure: still benched, until unchanged
    clock.advance(0.5)
    await tracker.report_failure("p/benched", retry_after=5)
    assert (await tracker.admit("p/probing")).probe

    states = {key: health.state for key, health in (await tracker.snapshot()).items()}

    assert states == {
        "p/failing": "failing",
        "p/benched": "benched",
        "p/half": "half-open",
        "p/probing": "probing",
    }
    assert await tracker.backed_off_until("p/half") is None
    assert await tracker.available("p/healthy")


@pytest.mark.parametrize(
    "config",
    [
        {"failure_threshold": 0},
        {"base_cooldown": 0},
        {"cooldown_factor": 0.5},
        {"max_cooldown": 0.5, "base_cooldown": 1},
        {"max_retry_after": -1},
    ],
)
def test_config_is_validated(config: dict[str, float]) -> None:
    """Nonsensical settings raise ConfigurationError at construction."""
    with pytest.raises(ConfigurationError):
        HealthConfig(**config)  # type: ignore[arg-type]


def test_cooldown_never_overflows() -> None:
    """A very long outage keeps the cooldown at the cap (no float overflow)."""
    config = HealthConfig(cooldown_factor=10, max_cooldown=30)

    assert config.cooldown(10_000) == 30


# --------------------------------------------------------------------------- properties

KEYS = ("p/a", "p/b")
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("fail"), st.sampled_from(KEYS), st.one_of(st.none(), st.floats(0.01, 100))
        ),
        st.tuples(st.just("success"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("admit"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("release"), st.sampled_from(KEYS), st.none()),
        st.tuples(st.just("advance"), st.none(), st.floats(0, 40)),
    ),
    max_size=60,
)
configs = st.builds(
    HealthConfig,
    failure_threshold=st.integers(1, 4),
    base_cooldown=st.floats(0.1, 5),
    cooldown_factor=st.floats(1, 4),
    max_cooldown=st.just(30.0),
)


@settings(max_examples=150, deadline=None)
@given(config=configs, ops=operations)
def test_tracker_matches_the_reference_and_keeps_its_bounds(
    config: HealthConfig, ops: list[tuple[str, str | None, float | None]]
) -> None:
    """Random op sequences: same answers as the reference; cooldowns grow, stay capped,
    and a retry_after hint never shortens one."""

    async def run() -> None:
        clock = ManualClock()
        store = RecordingStore(InMemoryHealthStore(config, clock))
        tracker = HealthTracker(config, clock=clock, store=store)
        last_cooldown: dict[str, float] = {}
        for op, key, value in ops:
            if op == "advance":
                assert value is not None
                clock.advance(value)
                continue
            assert key is not None
            if op == "fail":
                before = (await tracker.snapshot()).get(key)
                benchings_before = before.benchings if before else 0
                benched = await tracker.report_failure(key, retry_after=value)
                after = (await tracker.snapshot())[key]
                if benched and after.benchings > benchings_before:
                    until = (await store.snapshot())[key][2]
                    assert until is not None
                    cooldown = until - clock.now()
                    hint = min(value or 0.0, config.max_retry_after)
                    assert cooldown >= hint - 1e-6  # a hint never shortens a cooldown
                    plain = config.cooldown(after.benchings)
                    assert cooldown == pytest.approx(max(plain, hint))
                    assert plain <= config.max_cooldown  # the computed part stays capped
                    if after.benchings > 1:
                        assert plain >= last_cooldown.get(key, 0.0) - 1e-9  # never shrinks
                    last_cooldown[key] = plain
            elif op == "success":
                await tracker.report_success(key)
                last_cooldown.pop(key, None)
            elif op == "admit":
                await tracker.admit(key)
            else:
                await tracker.release_probe(key)
        reference = replay(store.log, config)
        assert dict(await store.snapshot()) == reference.snapshot()

    asyncio.run(run())


async def test_admit_now_agrees_with_admit_and_defers_the_probe(clock: ManualClock) -> None:
    """The sync fast path answers healthy, failing and benched keys as `admit` would;
    the half-open transition (taking the probe slot) is left to `admit`."""
    tracker = tracker_on(clock, failure_threshold=2)
    assert tracker.admit_now("p/m") == await tracker.admit("p/m")
    assert tracker.is_clear("p/m")

    await tracker.report_failure("p/m")  # failing, still admitted
    assert not tracker.is_clear("p/m")
    assert tracker.admit_now("p/m") == await tracker.admit("p/m")
    assert tracker.admit_now("p/m").admitted  # type: ignore[union-attr]

    await tracker.report_failure("p/m")  # benched
    benched = tracker.admit_now("p/m")
    assert benched is not None and not benched.admitted
    assert benched == await tracker.admit("p/m")

    clock.advance(1.0)  # half-open: only `admit` may hand out the probe
    assert tracker.admit_now("p/m") is None
    assert (await tracker.admit("p/m")).probe

    await tracker.report_success("p/m")
    assert tracker.is_clear("p/m")


async def test_shared_stores_always_take_the_async_path(clock: ManualClock) -> None:
    """A store other than the in-process one is never answered from a local shortcut."""
    shared = RecordingStore(InMemoryHealthStore(HealthConfig(), clock))
    tracker = HealthTracker(HealthConfig(), clock=clock, store=shared)
    assert tracker.admit_now("p/m") is None
    assert not tracker.is_clear("p/m")


async def test_a_kept_refusal_follows_a_new_cooldown(clock: ManualClock) -> None:
    """The refusal kept for a benched key names the current cooldown's end after a
    failed probe benches it again."""
    tracker = tracker_on(clock, failure_threshold=1)
    await tracker.report_failure("p/m")
    first = tracker.admit_now("p/m")
    assert first is not None and first.until == clock.now() + 1.0
    assert tracker.admit_now("p/m") is first  # kept, not rebuilt per call
    clock.advance(1.0)
    assert (await tracker.admit("p/m")).probe
    await tracker.report_failure("p/m")  # the probe failed: benched for 2 s
    second = tracker.admit_now("p/m")
    assert second is not None and not second.admitted
    assert second.until == clock.now() + 2.0
