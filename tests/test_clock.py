"""Clocks: the real one maps onto the loop's timers; the manual one moves only when told."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import anyio
import pytest

from majordomo_async import Clock, ManualClock, MonotonicClock


async def test_monotonic_clock_deadline_scope_fires_in_real_time() -> None:
    """A deadline a few ms ahead cancels the scope; an infinite one never does."""
    clock = MonotonicClock()
    assert isinstance(clock, Clock)

    with clock.deadline_scope(clock.now() + 0.01) as scope:
        await anyio.sleep(5)
    assert scope.cancelled_caught

    with clock.deadline_scope(math.inf) as endless:
        await clock.sleep(0)
    assert not endless.cancel_called


def test_monotonic_clock_wall_time_is_now() -> None:
    """wall(now()) is the current local time (within a second)."""
    clock = MonotonicClock()

    delta = abs((clock.wall(clock.now()) - datetime.now().astimezone()).total_seconds())

    assert delta < 1
    assert repr(clock) == "MonotonicClock()"
    assert clock.now() <= time.monotonic()


async def test_manual_clock_sleep_jumps_and_records() -> None:
    """sleep() advances the clock at once and records the duration."""
    clock = ManualClock(start=10)

    await clock.sleep(2.5)
    await clock.sleep(-1)  # negative sleeps are waits of zero

    assert clock.now() == 12.5
    assert clock.sleeps == [2.5, -1]
    assert clock.wall(0) == datetime(2030, 1, 1, tzinfo=UTC)
    assert repr(clock) == "ManualClock(now=12.5)"


async def test_manual_clock_cancels_due_scopes_only() -> None:
    """advance() cancels exactly the scopes whose deadline it reaches."""
    clock = ManualClock()
    early, late = clock.deadline_scope(1), clock.deadline_scope(5)
    past = clock.deadline_scope(0)

    clock.advance(1)

    assert (early.cancel_called, late.cancel_called, past.cancel_called) == (True, False, True)
    assert not clock.deadline_scope(math.inf).cancel_called
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_manual_clock_forgets_scopes_that_can_no_longer_fire() -> None:
    """Exited scopes and cancelled ones are not kept: a long test creating a scope per
    call does not accumulate them."""
    clock = ManualClock()
    for _ in range(1000):
        with clock.deadline_scope(clock.now() + 60):
            await clock.sleep(0.001)
    for _ in range(100):
        scope = clock.deadline_scope(clock.now() + 60)
        scope.cancel()  # cancelled by its owner, still referenced until the next one
    kept = clock.deadline_scope(clock.now() + 60)

    clock.advance(0)

    assert list(clock._scopes) == [kept]  # only the one that can still fire
    clock.advance(60)
    assert kept.cancel_called
    assert len(clock._scopes) == 0


def test_manual_clock_advances_outside_the_loop_past_left_and_unentered_scopes() -> None:
    """A test may advance the clock between two runs of its event loop, while an error's
    traceback keeps an exited scope alive: nothing breaks, and a scope made but not
    entered yet is still cancelled when it is entered."""
    clock = ManualClock()

    async def leave_a_scope_and_make_one() -> tuple[object, anyio.CancelScope]:
        with clock.deadline_scope(5) as scope:
            await clock.sleep(0)
        return scope, clock.deadline_scope(8)

    left, waiting = asyncio.run(leave_a_scope_and_make_one())
    clock.advance(10)  # no running loop here

    assert left is not None and waiting.cancel_called

    async def enter() -> bool:
        with waiting:
            await clock.sleep(0)
            return False
        return True  # the scope absorbed its cancellation

    assert asyncio.run(enter())
