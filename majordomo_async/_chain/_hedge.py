"""Hedged first tokens (`ChainConfig.hedge_after`): when an attempt has produced no content
after a while, the next available target is started beside it, and the first to produce
content wins.

A hedged try runs in two lanes. The first lane tries the target it was given (with its
retries, as the loop always does). If it has not answered when the hedge delay is up, a
second lane starts and takes targets from the same pass (`Cursor`) one after another, as
the loop would have after the first. So never more than two attempts of a call are in
flight, and no target is tried twice in a pass. The first lane to return a result wins;
the other is cancelled, and its attempt is neither counted against its target (it was
cancelled, rule 2) nor reported as failed. A stream the loser established in the same
instant is closed unread. When a lane fails it simply ends: the other goes on alone. A
lane raising (rule 6) cancels the other and raises.

For a generate, "content" is the whole answer: the hedge starts when the first answer is
late.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from .._routing import Cursor
from .._stream import Stream
from ._config import HEDGE_COLD_START, Target, hedge_percentile

if TYPE_CHECKING:
    from ._loop import _Call

__all__ = ["hedge_delay", "hedged"]


async def hedged(call: _Call, first: Target, cursor: Cursor) -> object:
    """Try `first`, hedged by the next targets of `cursor` after the hedge delay; the
    winner's result, or the loop's "advance" sentinel when both lanes failed."""
    from ._loop import _ADVANCE

    delay = hedge_delay(call, first.key)
    if delay is None or delay >= call.deadline - call.clock.now() or not cursor.remaining():
        return await call.try_target(first)
    race = _Race(call, _ADVANCE)
    async with anyio.create_task_group() as group:
        group.start_soon(race.run, race.first, first, None)
        with call.clock.deadline_scope(call.clock.now() + delay):
            await race.first.done.wait()
        # The delay's scope may have absorbed the call's own cancellation with its own
        # (both at once): it must not be lost.
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not race.first.done.is_set():
            call.observer.hedge_started(call.info, first.key, delay)
            group.start_soon(race.run, race.second, None, cursor)
    if race.error is not None:
        raise race.error
    if race.winner is race.second and race.first.key is not None:
        call.observer.hedge_won(call.info, race.second.key or "", race.first.key)
    return race.outcome


def hedge_delay(call: _Call, key: str) -> float | None:
    """Seconds without content after which `key`'s attempt is hedged (None: never)."""
    after = call.config.hedge_after
    if after is None:
        return None
    if not isinstance(after, str):
        return float(after)
    fraction = hedge_percentile(after)
    if fraction is None:  # refused by ChainConfig's validator
        return None
    value = call.tracker.load.percentile(key, fraction)
    return HEDGE_COLD_START if value is None or math.isnan(value) else value


class _Lane:
    __slots__ = ("done", "key", "scope")

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()
        self.key: str | None = None
        """The target the lane is trying (or tried last)."""


class _Race:
    """The two lanes of one hedged try, and what came of them."""

    __slots__ = ("advance", "call", "error", "first", "outcome", "second", "winner")

    def __init__(self, call: _Call, advance: object) -> None:
        self.call = call
        self.advance = advance
        self.first = _Lane()
        self.second = _Lane()
        self.outcome: object = advance
        self.winner: _Lane | None = None
        self.error: Exception | None = None

    async def run(self, lane: _Lane, target: Target | None, cursor: Cursor | None) -> None:
        """One lane: `target` with its retries, or the targets of `cursor` one by one."""
        outcome = self.advance
        try:
            with lane.scope:
                outcome = await self.attempts(lane, target, cursor)
        except Exception as exc:  # rule 6, from either lane: the call raises it
            if not lane.scope.cancel_called and self.error is None and self.winner is None:
                self.error = exc
                self.beat(lane)
            return
        finally:
            lane.done.set()
        if outcome is self.advance or lane.scope.cancel_called:
            return
        if self.winner is not None or self.error is not None:
            await _discard(self.call, lane.key, outcome)  # a photo finish: the other was first
            return
        self.winner, self.outcome = lane, outcome
        self.beat(lane)

    async def attempts(self, lane: _Lane, target: Target | None, cursor: Cursor | None) -> object:
        """The lane's tries: the first lane's one target, or the second's from `cursor`
        until one answers; the result, or "advance"."""
        if target is not None:
            lane.key = target.key
            return await self.call.try_target(target)
        assert cursor is not None
        while self.winner is None and (target := cursor.next()) is not None:
            lane.key = target.key
            outcome = await self.call.try_target(target)
            if outcome is not self.advance:
                return outcome
        return self.advance

    def beat(self, lane: _Lane) -> None:
        """`lane` won (or raised): cancel the other, whose attempt then counts for nothing."""
        other = self.second if lane is self.first else self.first
        if other.key is not None and not other.done.is_set():
            if self.call.abandoned is None:
                self.call.abandoned = set()
            self.call.abandoned.add(other.key)
        other.scope.cancel()


async def _discard(call: _Call, key: str | None, outcome: object) -> None:
    """A result that came second: its stream is closed unread (no penalty, not the call's)."""
    if isinstance(outcome, Stream):
        if key is not None:
            if call.abandoned is None:
                call.abandoned = set()
            call.abandoned.add(key)
        with anyio.CancelScope(shield=True):
            await outcome.aclose()
