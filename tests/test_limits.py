"""Concurrency and rate limits: caps, FIFO hand-over, sliding windows against a brute-force
checker, pauses, the all-or-nothing pair, cancellation at every await, the garbage
collector's safety net, and a shared budget (an in-memory fake of the Redis one)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from majordomo_async import ConfigurationError, ManualClock
from majordomo_async._limits import (
    LIMIT_KEYS,
    Lease,
    Limiter,
    Limits,
    LimitSet,
    LimitState,
    Refused,
)

KEY = "p/m"


def limit_set(clock: ManualClock, budget: FakeBudget | None = None, /, **caps: Limits) -> LimitSet:
    """A set with `caps` by name ("p" or "p/m" spelled p_m in keyword form)."""
    limits = LimitSet(clock, budget)
    for name, cap in caps.items():
        limits.set(name.replace("_", "/"), cap)
    return limits


async def take(limits: LimitSet, key: str = KEY, tokens: int = 0, **kwargs: float) -> Lease:
    outcome = await limits.acquire(key, tokens, **kwargs)
    assert isinstance(outcome, Lease), outcome
    return outcome


async def refused(limits: LimitSet, key: str = KEY, tokens: int = 0, **kwargs: float) -> Refused:
    outcome = await limits.acquire(key, tokens, **kwargs)
    assert isinstance(outcome, Refused), outcome
    return outcome


async def settle_loop(rounds: int = 5) -> None:
    """Let woken waiters and budget tasks run (no time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def assert_idle(limits: LimitSet) -> None:
    """No slot held and nobody queued, on any limiter."""
    for name, state in limits.snapshot().items():
        assert (state.in_use, state.waiting) == (0, 0), name


class FakeBudget:
    """A fleet's shared rpm/tpm windows in memory, on the test's clock: what the Redis
    budget does, one round trip (a checkpoint) per call."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.reservations: dict[str, tuple[str, float, int]] = {}  # id -> (name, time, tokens)
        self.calls: list[tuple[object, ...]] = []
        self.fail = False
        self.paused: dict[str, float] = {}
        self._ids = itertools.count(1)

    async def reserve(
        self, name: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> tuple[bool, float, str]:
        await asyncio.sleep(0)  # the round trip: a cancellation point
        self.calls.append(("reserve", name, rpm, tpm, tokens))
        self._check()
        now = self.clock.now()
        if now < self.paused.get(name, -math.inf):
            return False, self.paused[name] - now, ""
        live = sorted(
            (when, weight)
            for owner, when, weight in self.reservations.values()
            if owner == name and when + 60 > now
        )
        if (rpm is not None and len(live) + 1 > rpm) or (
            tpm is not None and sum(weight for _, weight in live) + tokens > tpm
        ):
            return False, (live[0][0] + 60 - now if live else 60.0), ""
        reservation = f"r{next(self._ids)}"
        self.reservations[reservation] = (name, now, tokens)
        return True, 0.0, reservation

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("Redis is away")

    async def correct(self, name: str, reservation: str, tokens: int) -> None:
        await asyncio.sleep(0)
        self.calls.append(("correct", name, reservation, tokens))
        self._check()
        owner, when, _ = self.reservations[reservation]
        self.reservations[reservation] = (owner, when, tokens)

    async def cancel(self, name: str, reservation: str) -> None:
        await asyncio.sleep(0)
        self.calls.append(("cancel", name, reservation))
        self._check()
        del self.reservations[reservation]

    async def pause(self, name: str, seconds: float) -> None:
        await asyncio.sleep(0)
        self.calls.append(("pause", name, seconds))
        self._check()
        self.paused[name] = self.clock.now() + seconds


# --------------------------------------------------------------------------- Limits


@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, "4"])
@pytest.mark.parametrize("field", LIMIT_KEYS)
def test_a_cap_must_be_a_positive_int(field: str, value: object) -> None:
    """Zero, negatives, bools, floats and strings are refused, naming the field."""
    with pytest.raises(ConfigurationError, match=f"Limits.{field} must be a positive whole"):
        Limits(**{field: value})  # type: ignore[arg-type]


def test_any_says_whether_a_cap_is_set() -> None:
    """`Limits()` caps nothing; any one field is a cap."""
    assert not Limits().any
    assert all(Limits(**{field: 3}).any for field in LIMIT_KEYS)


def test_from_query_splits_off_the_limit_keys() -> None:
    """The three keys become Limits; the others are handed back untouched."""
    limits, rest = Limits.from_query(
        {"max_concurrency": "4", "rpm": " 60 ", "timeout": "5", "tpm": "90000"}, "the openai DSN"
    )

    assert limits == Limits(max_concurrency=4, rpm=60, tpm=90000)
    assert rest == {"timeout": "5"}
    assert Limits.from_query({"x": "1"}, "the DSN") == (Limits(), {"x": "1"})


@pytest.mark.parametrize("value", ["", "0", "-3", "four", "1.5", "true"])
def test_from_query_names_the_label_and_the_key(value: str) -> None:
    """A bad value says where it came from, which key, and what is expected."""
    with pytest.raises(ConfigurationError) as caught:
        Limits.from_query({"rpm": value}, "the openai DSN")

    message = str(caught.value)
    assert message.startswith(f"the openai DSN: rpm={value!r} must be a positive whole number")
    assert "leave rpm out for no cap" in message


# --------------------------------------------------------------------------- the set


async def test_an_empty_set_admits_everything_without_a_limiter(clock: ManualClock) -> None:
    """No limiter: `limited` is False and the lease is a no-op."""
    limits = LimitSet(clock)

    assert not limits.limited(KEY)
    lease = await take(limits, tokens=10**9)
    lease.release()
    lease.settle(5)
    assert limits.snapshot() == {}


async def test_limited_sees_target_and_provider_limiters(clock: ManualClock) -> None:
    """A key is limited by its own limiter or by its provider's (the part before '/')."""
    limits = limit_set(clock, p=Limits(rpm=1), q_x=Limits(rpm=1))

    assert limits.limited("p/anything/with/slashes")
    assert limits.limited("q/x")
    assert not limits.limited("q/y")
    assert not limits.limited("pp/m")


async def test_setting_empty_limits_removes_the_limiter(clock: ManualClock) -> None:
    """`Limits()` removes a name; setting new caps keeps what is held."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=2))
    lease = await take(limits)
    limits.set(KEY, Limits(max_concurrency=1))

    assert limits.snapshot()[KEY].in_use == 1
    assert (await refused(limits)).retry_at is None
    lease.release()
    limits.set(KEY, Limits())
    assert not limits.limited(KEY)


async def test_raising_a_cap_hands_slots_to_the_waiters(clock: ManualClock) -> None:
    """Waiters queued under a cap of 1 are let in when the cap grows to 3."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    waiters = [asyncio.create_task(take(limits, wait_until=math.inf)) for _ in range(3)]
    await settle_loop()
    assert limits.snapshot()[KEY].waiting == 3

    limits.set(KEY, Limits(max_concurrency=3))
    await settle_loop()

    assert [task.done() for task in waiters] == [True, True, False]
    assert limits.snapshot()[KEY].in_use == 3
    holder.release()
    leases = [await task for task in waiters]
    for lease in leases:
        lease.release()
    assert_idle(limits)


async def test_removing_a_limiter_lets_its_waiters_through(clock: ManualClock) -> None:
    """A waiter of a removed limiter is not stranded: it is admitted."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    limits.set(KEY, Limits())
    lease = await waiter

    lease.release()
    holder.release()
    assert limits.snapshot() == {}


async def test_snapshot_reports_every_limiter(clock: ManualClock) -> None:
    """in_use, waiting, window sums and the pause, per name."""
    limits = limit_set(clock, p=Limits(max_concurrency=1), p_m=Limits(rpm=5, tpm=100))
    lease = await take(limits, tokens=30)
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()
    limits.pause(KEY, 10.0)

    assert limits.snapshot() == {
        "p": LimitState(Limits(max_concurrency=1), 1, 1, None, None, None),
        KEY: LimitState(Limits(rpm=5, tpm=100), 1, 0, 1, 30, 10.0),
    }
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    lease.release()
    clock.advance(60)
    assert limits.snapshot()[KEY] == LimitState(Limits(rpm=5, tpm=100), 0, 0, 0, 0, None)


# --------------------------------------------------------------------------- concurrency


async def test_never_more_than_the_cap_among_1000_tasks(clock: ManualClock) -> None:
    """1,000 tasks over two targets of one provider, with waits, errors and
    cancellations: no cap is ever exceeded, and nothing is held at the end."""
    caps = {"p": 7, "p/a": 3, "p/b": 5}
    limits = limit_set(
        clock, **{name.replace("/", "_"): Limits(max_concurrency=cap) for name, cap in caps.items()}
    )
    held = dict.fromkeys(caps, 0)
    peak = dict.fromkeys(caps, 0)
    rng = random.Random(7)

    async def attempt(key: str, hold: int, fail: bool) -> None:
        outcome = await limits.acquire(key, 1, wait_until=math.inf)
        assert isinstance(outcome, Lease)
        try:
            for name in (key, "p"):
                held[name] += 1
                peak[name] = max(peak[name], held[name])
                assert held[name] <= caps[name]
            for _ in range(hold):
                await asyncio.sleep(0)
            if fail:
                raise RuntimeError("the provider failed")
        finally:
            for name in (key, "p"):
                held[name] -= 1
            outcome.release()

    tasks = [
        asyncio.create_task(
            attempt(rng.choice(["p/a", "p/b"]), rng.randrange(4), rng.random() < 0.1)
        )
        for _ in range(1000)
    ]
    for _ in range(50):
        await asyncio.sleep(0)
        for task in rng.sample(tasks, 5):
            task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert peak == caps  # every cap was reached, none exceeded
    assert any(isinstance(result, asyncio.CancelledError) for result in results)
    assert_idle(limits)
    assert all(limiter.leaked == 0 for limiter in limits.limiters.values())


async def test_waiters_are_served_first_in_first_out(clock: ManualClock) -> None:
    """A released slot goes to the longest waiter."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    order: list[int] = []

    async def wait(number: int) -> None:
        lease = await take(limits, wait_until=math.inf)
        order.append(number)
        await asyncio.sleep(0)
        lease.release()

    tasks = []
    for number in range(10):
        tasks.append(asyncio.create_task(wait(number)))
        await asyncio.sleep(0)  # queued in this order
    holder.release()
    await asyncio.gather(*tasks)

    assert order == list(range(10))
    assert_idle(limits)


async def test_no_barging_while_someone_waits(clock: ManualClock) -> None:
    """A released slot is handed over, never left free for a newcomer to grab."""
    limits = limit_set(clock, p=Limits(max_concurrency=1))
    holder = await take(limits)
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    holder.release()  # handed to the waiter, which has not run yet
    refusal = await refused(limits)

    assert refusal == Refused('skipped (at its limit: max_concurrency 1 of provider "p")', None)
    (await waiter).release()
    assert_idle(limits)


async def test_refused_now_while_others_wait_says_so(clock: ManualClock) -> None:
    """A caller refused behind a queue is told how many wait."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    refusal = await refused(limits)

    assert refusal.reason == (
        'skipped (at its limit: max_concurrency 1 of target "p/m", 1 waiting)'
    )
    waiter.cancel()
    holder.release()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert_idle(limits)


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue(clock: ManualClock) -> None:
    """Cancelled while queued: it is counted out at once and skipped by the hand-over."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    first = asyncio.create_task(take(limits, wait_until=math.inf))
    second = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert limits.snapshot()[KEY].waiting == 1
    holder.release()

    (await second).release()
    assert_idle(limits)


@pytest.mark.parametrize("queued_behind", [0, 1])
async def test_a_waiter_cancelled_after_the_hand_over_passes_the_slot_on(
    clock: ManualClock, queued_behind: int
) -> None:
    """Handed a slot, then cancelled before it ran: the slot goes to the next waiter,
    or back to the pool."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    first = asyncio.create_task(take(limits, wait_until=math.inf))
    behind = [asyncio.create_task(take(limits, wait_until=math.inf)) for _ in range(queued_behind)]
    await settle_loop()

    holder.release()  # the slot is first's now
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    for task in behind:
        (await task).release()
    assert_idle(limits)


async def test_a_concurrency_wait_ends_at_wait_until(clock: ManualClock) -> None:
    """Out of time in the queue: the refusal is returned and the queue is left."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    holder = await take(limits)
    waiter = asyncio.create_task(limits.acquire(KEY, 0, wait_until=5.0))
    await settle_loop()

    clock.advance(5.0)
    outcome = await waiter

    assert isinstance(outcome, Refused) and outcome.retry_at is None
    assert limits.snapshot()[KEY].waiting == 0
    holder.release()
    assert_idle(limits)


# --------------------------------------------------------------------------- acquire_first


async def test_acquire_first_takes_whichever_slot_frees_first(clock: ManualClock) -> None:
    """Both candidates full: the second one's slot frees first, so the caller gets it,
    and leaves the first one's queue."""
    limits = limit_set(clock, p_a=Limits(max_concurrency=1), q_b=Limits(max_concurrency=1))
    held_a, held_b = await take(limits, "p/a"), await take(limits, "q/b")
    waiter = asyncio.create_task(limits.acquire_first(["p/a", "q/b"], 0, wait_until=math.inf))
    await settle_loop()
    assert [limits.snapshot()[name].waiting for name in ("p/a", "q/b")] == [1, 1]

    held_b.release()
    got = await waiter

    assert got is not None
    index, lease = got
    assert index == 1
    assert [limits.snapshot()[name].in_use for name in ("p/a", "q/b")] == [1, 1]
    assert limits.snapshot()["p/a"].waiting == 0
    lease.release()
    held_a.release()
    assert_idle(limits)


async def test_acquire_first_with_free_slots_keeps_exactly_one(clock: ManualClock) -> None:
    """Both candidates free at once: one lease is kept, any other granted in the same
    instant is given back."""
    limits = limit_set(clock, p_a=Limits(max_concurrency=1), q_b=Limits(max_concurrency=1))

    got = await limits.acquire_first(["p/a", "q/b"], 0, wait_until=math.inf)

    assert got is not None
    assert sum(state.in_use for state in limits.snapshot().values()) == 1
    got[1].release()
    assert_idle(limits)


async def test_acquire_first_gives_up_at_wait_until(clock: ManualClock) -> None:
    limits = limit_set(clock, p_a=Limits(max_concurrency=1), q_b=Limits(rpm=1))
    held_a, held_b = await take(limits, "p/a"), await take(limits, "q/b")
    held_b.release()  # its rpm window stays full for 60 s
    waiter = asyncio.create_task(limits.acquire_first(["p/a", "q/b"], 0, wait_until=5.0))
    await settle_loop()

    clock.advance(5.0)

    assert await waiter is None
    held_a.release()
    assert_idle(limits)


@pytest.mark.parametrize("handed", [False, True], ids=["queued", "handed-a-slot"])
async def test_acquire_first_cancelled_leaks_nothing(clock: ManualClock, handed: bool) -> None:
    """Cancelled while queued on both, or just after one slot was handed to it: every
    queue is left and the handed slot goes back."""
    limits = limit_set(clock, p_a=Limits(max_concurrency=1), q_b=Limits(max_concurrency=1))
    held_a, held_b = await take(limits, "p/a"), await take(limits, "q/b")
    waiter = asyncio.create_task(limits.acquire_first(["p/a", "q/b"], 0, wait_until=math.inf))
    await settle_loop()

    if handed:
        held_b.release()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await settle_loop()

    held_a.release()
    held_b.release()
    assert_idle(limits)


async def test_a_lease_is_released_once(clock: ManualClock) -> None:
    """release() is idempotent: a second call frees nobody else's slot."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=2))
    first, second = await take(limits), await take(limits)

    first.release()
    first.release()

    assert limits.snapshot()[KEY].in_use == 1
    second.release()
    assert_idle(limits)


async def test_a_dropped_lease_is_released_by_the_garbage_collector(clock: ManualClock) -> None:
    """A lease collected unreleased gives its slot back (counted in `leaked`), and the
    waiter behind it is woken."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    lease: Lease | None = await take(limits)
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    del lease
    gc.collect()

    limiter = limits.limiters[KEY]
    assert (limiter.leaked, limiter.in_use) == (1, 0)
    (await waiter).release()  # woken from a loop callback
    assert_idle(limits)


async def test_a_lease_dropped_on_another_thread_wakes_the_waiter(clock: ManualClock) -> None:
    """The finaliser may run on any thread: the waiter is still woken on its loop."""
    limits = limit_set(clock, p_m=Limits(max_concurrency=1))
    box = [await take(limits)]
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    await asyncio.to_thread(box.clear)  # the last reference goes on a worker thread

    (await waiter).release()
    assert limits.limiters[KEY].leaked == 1
    assert_idle(limits)


async def test_a_dropped_lease_in_a_cycle_is_released_by_gc_collect(clock: ManualClock) -> None:
    """Even a lease kept alive by a reference cycle is released once collected."""
    limits = limit_set(clock, p=Limits(max_concurrency=1))

    class Holder:
        def __init__(self, lease: Lease) -> None:
            self.lease = lease
            self.me = self

    Holder(await take(limits))
    gc.collect()

    assert limits.limiters["p"].leaked == 1
    assert_idle(limits)


# --------------------------------------------------------------------------- sliding windows


async def test_a_burst_at_59_s_after_a_burst_at_0_is_refused(clock: ManualClock) -> None:
    """Sliding, not a fixed minute: 60 at t=0, then none until t=60."""
    limits = limit_set(clock, p_m=Limits(rpm=60))
    for _ in range(60):
        await take(limits)
    clock.advance(59.0)

    refusal = await refused(limits)

    assert refusal == Refused(
        'skipped (rpm 60 of target "p/m" reached; a slot frees in 1.0 s)', 60.0
    )
    clock.advance(1.0)
    for _ in range(60):
        await take(limits)
    await refused(limits)


async def test_the_window_frees_entry_by_entry(clock: ManualClock) -> None:
    """Not a token bucket: each request leaves the window 60 s after it was made."""
    limits = limit_set(clock, p_m=Limits(rpm=2))
    await take(limits)
    clock.advance(30)
    await take(limits)

    assert (await refused(limits)).retry_at == 60.0
    clock.advance(30)
    await take(limits)
    assert (await refused(limits)).retry_at == 90.0


async def test_tpm_counts_tokens_and_settle_corrects_the_estimate(clock: ManualClock) -> None:
    """The estimate counts until the provider's count replaces it, either way."""
    limits = limit_set(clock, p_m=Limits(tpm=1000))
    lease = await take(limits, tokens=900)
    refusal = await refused(limits, tokens=200)
    assert refusal.reason == (
        'skipped (tpm 1000 of target "p/m" reached: 900 tokens in the last 60 s, '
        "~200 more asked; room frees in 60.0 s)"
    )

    lease.settle(100)
    lease.settle(100)  # idempotent
    second = await take(limits, tokens=800)
    assert limits.snapshot()[KEY].tokens_in_window == 900

    second.settle(1500)  # the estimate was low: the window is over its cap until it frees
    assert (await refused(limits, tokens=1)).retry_at == 60.0
    lease.release()
    second.release()
    clock.advance(60)
    lease.settle(5)  # gone from the window: nothing to correct
    assert limits.snapshot()[KEY].tokens_in_window == 0


async def test_settle_none_keeps_the_estimate(clock: ManualClock) -> None:
    """No usage reported: the estimate stands."""
    limits = limit_set(clock, p_m=Limits(tpm=1000))
    lease = await take(limits, tokens=400)

    lease.settle(None)

    assert limits.snapshot()[KEY].tokens_in_window == 400


async def test_a_request_over_the_whole_tpm_runs_alone(clock: ManualClock) -> None:
    """Larger than the tpm: admitted when the window is empty, never beside another."""
    limits = limit_set(clock, p_m=Limits(tpm=1000))
    await take(limits, tokens=10)
    clock.advance(20)

    refusal = await refused(limits, tokens=5000)
    assert refusal == Refused(
        'skipped (the request\'s ~5000 tokens exceed tpm 1000 of target "p/m": '
        "it runs alone once the window is empty, in 40.0 s)",
        60.0,
    )
    clock.advance(40)
    await take(limits, tokens=5000)
    assert (await refused(limits, tokens=1)).retry_at == 120.0


async def test_both_windows_full_names_the_later(clock: ManualClock) -> None:
    """rpm frees at 60 s, tpm only at 70 s: the refusal waits for both."""
    limits = limit_set(clock, p_m=Limits(rpm=2, tpm=100))
    await take(limits, tokens=10)
    clock.advance(10)
    await take(limits, tokens=90)

    refusal = await refused(limits, tokens=50)

    assert refusal.retry_at == 70.0
    assert refusal.reason.startswith('skipped (tpm 100 of target "p/m" reached')


Step = tuple[float, int]  # (seconds to advance first, tokens asked)


def steps(max_tokens: int) -> st.SearchStrategy[list[Step]]:
    gaps = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 7.5, 20.0, 59.75, 60.0, 61.0])
    return st.lists(st.tuples(gaps, st.integers(0, max_tokens)), max_size=80)


def in_window(admitted: list[Step], at: float) -> list[int]:
    """The tokens of the admitted requests that count at `at` (made in (at - 60, at])."""
    return [tokens for when, tokens in admitted if when + 60 > at]


def fits(admitted: list[Step], at: float, tokens: int, rpm: int, tpm: int) -> bool:
    """The rule, by brute force: a request fits when rpm and tpm hold with it, or (tpm
    only) when it is over the whole tpm and the window is empty."""
    counted = in_window(admitted, at)
    return len(counted) + 1 <= rpm and (sum(counted) + tokens <= tpm or sum(counted) == 0)


@settings(max_examples=150, deadline=None)
@given(
    rpm=st.integers(1, 6),
    tpm=st.integers(1, 300),
    schedule=steps(400),
)
def test_windows_match_a_brute_force_checker(rpm: int, tpm: int, schedule: list[Step]) -> None:
    """Random schedules: admitted exactly when the rule allows; `retry_at` is the first
    time it does; and ANY 60 s interval holds at most rpm requests and tpm tokens (a
    request over the whole tpm alone in it)."""

    async def run() -> list[Step]:
        clock = ManualClock()
        limits = limit_set(clock, p_m=Limits(rpm=rpm, tpm=tpm))
        admitted: list[Step] = []
        for gap, tokens in schedule:
            clock.advance(gap)
            now = clock.now()
            outcome = await limits.acquire(KEY, tokens)
            expected = fits(admitted, now, tokens, rpm, tpm)
            assert isinstance(outcome, Lease) == expected, (now, tokens, admitted)
            if isinstance(outcome, Lease):
                outcome.release()
                admitted.append((now, tokens))
                continue
            retry_at = outcome.retry_at
            assert retry_at is not None and retry_at > now
            assert fits(admitted, retry_at, tokens, rpm, tpm)
            assert not fits(admitted, retry_at - 1e-9, tokens, rpm, tpm)
        return admitted

    admitted = asyncio.run(run())
    for start, _ in admitted:
        counted = [tokens for when, tokens in admitted if start <= when < start + 60]
        assert len(counted) <= rpm
        assert sum(counted) <= tpm or len([t for t in counted if t]) == 1


async def test_a_waiting_caller_sleeps_until_the_window_frees(clock: ManualClock) -> None:
    """With a wait_until, a full window is slept out on the clock, exactly."""
    limits = limit_set(clock, p_m=Limits(rpm=1))
    await take(limits)
    clock.advance(15)

    await take(limits, wait_until=100.0)

    assert clock.now() == 60.0
    assert clock.sleeps == [45.0]


async def test_a_refusal_outlasting_wait_until_is_returned_at_once(clock: ManualClock) -> None:
    """No sleep that cannot end in an admission."""
    limits = limit_set(clock, p_m=Limits(rpm=1))
    await take(limits)

    refusal = await refused(limits, wait_until=59.0)

    assert (refusal.retry_at, clock.now(), clock.sleeps) == (60.0, 0.0, [])


# --------------------------------------------------------------------------- pause


async def test_pause_refuses_until_its_end_and_never_shortens(clock: ManualClock) -> None:
    """A pause refuses with retry_at = its end; a shorter one changes nothing."""
    limits = limit_set(clock, p_m=Limits(rpm=100))
    limits.pause(KEY, 30.0)
    limits.pause(KEY, 10.0)

    refusal = await refused(limits)

    assert refusal == Refused(
        'skipped (target "p/m" is paused after a rate limit; it resumes in 30.0 s)', 30.0
    )
    clock.advance(29.5)
    await refused(limits)
    clock.advance(0.5)
    await take(limits)


async def test_pause_stops_only_the_target(clock: ManualClock) -> None:
    """The provider's other targets keep going; an unlimited target can be paused."""
    limits = limit_set(clock, p=Limits(rpm=100))
    limits.pause("p/a", 30.0)

    await refused(limits, "p/a")
    await take(limits, "p/b")
    assert limits.limited("p/a")
    assert limits.snapshot()["p/a"].paused_until == 30.0

    lease = await take(limits, "p/a", wait_until=60.0)  # sleeps the pause out
    assert clock.now() == 30.0
    lease.release()
    limits.set("p/a", Limits())
    assert "p/a" not in limits.snapshot()


# --------------------------------------------------------------------------- the pair


async def test_the_pair_is_all_or_nothing(clock: ManualClock) -> None:
    """The provider refuses: the target's slot and window entries are given back."""
    limits = limit_set(
        clock, p=Limits(max_concurrency=1, tpm=100), p_m=Limits(max_concurrency=1, rpm=5, tpm=100)
    )
    other = await take(limits, "p/other", tokens=50)

    refusal = await refused(limits, tokens=10)  # the provider's slot is taken
    assert refusal.reason == 'skipped (at its limit: max_concurrency 1 of provider "p")'
    assert limits.snapshot()[KEY] == LimitState(
        Limits(max_concurrency=1, rpm=5, tpm=100), 0, 0, 0, 0, None
    )

    other.release()
    refusal = await refused(limits, tokens=60)  # the provider's tpm is spent
    assert refusal.retry_at == 60.0
    assert limits.snapshot()[KEY].requests_in_window == 0
    assert limits.snapshot()[KEY].tokens_in_window == 0
    assert_idle(limits)


async def test_waiting_on_the_provider_holds_nothing_of_the_target(clock: ManualClock) -> None:
    """While queued on the provider, the target's slot is free for its other callers
    (holding it could deadlock against a caller holding the provider)."""
    limits = limit_set(clock, p=Limits(max_concurrency=1), p_m=Limits(max_concurrency=1))
    other = await take(limits, "p/other")
    waiter = asyncio.create_task(take(limits, wait_until=math.inf))
    await settle_loop()

    state = limits.snapshot()
    assert (state[KEY].in_use, state["p"].waiting) == (0, 1)
    other.release()
    (await waiter).release()
    assert_idle(limits)


async def test_a_handed_provider_slot_goes_on_when_the_target_refuses(
    clock: ManualClock,
) -> None:
    """Handed the provider's slot but refused by its (paused) target: the slot goes to
    the next provider waiter at once, and the first sleeps the pause out."""
    limits = limit_set(clock, p=Limits(max_concurrency=1))
    blocker = await take(limits, "p/other")
    first = asyncio.create_task(take(limits, wait_until=100.0))
    await settle_loop()
    second = asyncio.create_task(take(limits, "p/other", wait_until=100.0))
    await settle_loop()
    limits.pause(KEY, 30.0)

    blocker.release()  # to `first`, which passes it to `second`
    await settle_loop()

    assert second.done() and not first.done()
    (await second).release()
    (await first).release()
    assert clock.now() == 30.0
    assert_idle(limits)


# --------------------------------------------------------------------------- cancellation


async def run_until_cancelled(
    build: Callable[[], Awaitable[tuple[LimitSet, Callable[[int], None], FakeBudget | None]]],
) -> None:
    """Cancel one waiting acquire after 0, 1, 2, ... loop iterations, until it finishes
    first: wherever it was, nothing stays held, queued, counted or reserved.

    `build` makes the scene; its `tick(step)` runs after each iteration, and with -1 at
    the end (to let go of whatever the scene holds).
    """
    for steps_before_cancel in itertools.count():
        assert steps_before_cancel < 60, "the acquire never finished"
        limits, tick, budget = await build()
        windows = {
            name: (state.requests_in_window, state.tokens_in_window)
            for name, state in limits.snapshot().items()
        }
        reserved = len(budget.reservations) if budget is not None else 0
        task = asyncio.create_task(limits.acquire(KEY, 10, wait_until=1000.0))
        for step in range(steps_before_cancel):
            await asyncio.sleep(0)
            tick(step)
        finished = task.done()
        task.cancel()
        try:
            outcome: Lease | Refused | None = await task
        except asyncio.CancelledError:
            outcome = None
        assert finished == (outcome is not None)
        tick(-1)
        if isinstance(outcome, Lease):
            outcome.release()
        await settle_loop()

        assert_idle(limits)
        got = int(isinstance(outcome, Lease))
        for name, (requests, tokens) in windows.items():
            state = limits.snapshot()[name]
            local = budget is None
            assert state.requests_in_window == (
                None if requests is None else requests + got * local
            )
            assert state.tokens_in_window == (None if tokens is None else tokens + 10 * got * local)
        if budget is not None:
            assert len(budget.reservations) == reserved + 2 * got  # the target's and the provider's
        if finished:
            assert got
            return


async def test_cancellation_at_every_await_of_a_local_pair(clock: ManualClock) -> None:
    """The caller queues on the target, is handed its slot, is refused by the
    provider's pause, sleeps it out, and is admitted; cancelled anywhere along the way
    it leaks nothing."""

    async def build() -> tuple[LimitSet, Callable[[int], None], None]:
        limits = limit_set(
            clock, p=Limits(max_concurrency=3, tpm=1000), p_m=Limits(max_concurrency=1, rpm=5)
        )
        target = await take(limits)
        limits.pause("p", clock.now() + 5)

        def tick(step: int) -> None:
            if step in (1, -1):
                target.release()

        return limits, tick, None

    await run_until_cancelled(build)


async def test_cancellation_at_every_await_with_a_shared_budget(clock: ManualClock) -> None:
    """The same through a shared budget: cancelled during a reservation, after a
    refusal, in the sleep, after a grant on the target while the provider is asked."""

    async def build() -> tuple[LimitSet, Callable[[int], None], FakeBudget]:
        budget = FakeBudget(clock)
        limits = limit_set(clock, budget, p=Limits(rpm=2), p_m=Limits(max_concurrency=1, tpm=1000))
        target = await take(limits)  # one reservation on p/m and one on p
        budget.paused[KEY] = clock.now() + 3  # the next reservation on p/m is refused

        def tick(step: int) -> None:
            if step in (1, -1):
                target.release()

        return limits, tick, budget

    await run_until_cancelled(build)


# --------------------------------------------------------------------------- shared budget


async def test_the_budget_is_shared_by_a_fleet(clock: ManualClock) -> None:
    """Two processes (two sets) on one budget: rpm counts across both; concurrency
    stays per process."""
    budget = FakeBudget(clock)
    first = limit_set(clock, budget, p=Limits(max_concurrency=1, rpm=2))
    second = limit_set(clock, budget, p=Limits(max_concurrency=1, rpm=2))
    lease = await take(first)
    other = await take(second)  # its own concurrency slot: concurrency is not shared

    assert await refused(first) == Refused(
        'skipped (at its limit: max_concurrency 1 of provider "p")', None
    )
    lease.release()
    assert await refused(first) == Refused(
        'skipped (the fleet\'s shared rpm 2 of provider "p" is spent; a slot frees in 60.0 s)',
        60.0,
    )
    assert budget.calls[0] == ("reserve", "p", 2, None, 0)
    other.release()
    assert_idle(first)
    assert_idle(second)


async def test_settle_and_never_sent_go_to_the_budget(clock: ManualClock) -> None:
    """settle corrects the reservation; a refused pair cancels the half it took."""
    budget = FakeBudget(clock)
    limits = limit_set(clock, budget, p=Limits(max_concurrency=1), p_m=Limits(tpm=1000))
    lease = await take(limits, tokens=300)
    (reservation,) = budget.reservations

    lease.settle(120)
    lease.settle(120)
    await refused(limits, tokens=10)  # p/m reserved, then the provider refused
    await settle_loop()

    assert budget.reservations == {reservation: (KEY, 0.0, 120)}
    assert sorted(str(call[0]) for call in budget.calls) == [
        "cancel",
        "correct",
        "reserve",
        "reserve",
    ]
    lease.release()
    assert_idle(limits)


async def test_a_failing_budget_falls_back_to_local_windows(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The budget raises: this process's own windows answer, and it is logged once."""
    caplog.set_level(logging.DEBUG, logger="majordomo_async")
    budget = FakeBudget(clock)
    budget.fail = True
    limits = limit_set(clock, budget, p_m=Limits(rpm=2, tpm=1000))

    first = await take(limits, tokens=100)
    await take(limits, tokens=100)
    refusal = await refused(limits)

    assert refusal.reason.startswith('skipped (rpm 2 of target "p/m" reached')
    assert limits.snapshot()[KEY].tokens_in_window == 200
    first.settle(10)  # the local entry is corrected; the budget is not bothered
    assert limits.snapshot()[KEY].tokens_in_window == 110
    assert {call[0] for call in budget.calls} == {"reserve"}
    records = [record for record in caplog.records if "shared budget failed" in record.message]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG
    assert records[0].exc_info is not None

    budget.fail = False  # back: the budget answers again, the local windows rest
    clock.advance(60)
    await take(limits)
    assert len(budget.reservations) == 1


async def test_a_failing_background_budget_call_is_logged_not_raised(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """correct/cancel/pause run as tasks; their failure is swallowed and logged."""
    caplog.set_level(logging.DEBUG, logger="majordomo_async")
    budget = FakeBudget(clock)
    limits = limit_set(clock, budget, p_m=Limits(tpm=1000))
    lease = await take(limits, tokens=10)
    budget.fail = True

    lease.settle(20)
    await settle_loop()

    assert any("shared budget failed (correct" in record.message for record in caplog.records)


async def test_pause_is_told_to_the_budget(clock: ManualClock) -> None:
    """A pause reaches the fleet; a pause that extends nothing is not repeated."""
    budget = FakeBudget(clock)
    limits = limit_set(clock, budget, p_m=Limits(rpm=5))

    limits.pause(KEY, 12.0)
    limits.pause(KEY, 5.0)
    await settle_loop()

    assert budget.calls == [("pause", KEY, 12.0)]
    assert (await refused(limits)).retry_at == 12.0


def test_budget_calls_without_a_loop_are_dropped(clock: ManualClock) -> None:
    """Outside a loop (a finaliser at exit, say) a budget call is skipped, not raised."""
    budget = FakeBudget(clock)
    limiter = Limiter(KEY, Limits(rpm=1), clock, budget)

    limiter.pause(10.0)

    assert limiter.paused_until == 10.0
    assert budget.calls == []
