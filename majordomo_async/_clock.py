"""Time, behind one seam: the health tracker's cooldowns, the chain's waits and deadlines.

`MonotonicClock` is the default. `ManualClock` is public so users' own tests can step
through cooldowns and deadlines without sleeping.
"""

from __future__ import annotations

import math
import time
import weakref
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import anyio

from ._backend import primitives

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


@runtime_checkable
class Clock(Protocol):
    """A source of time for health and chain bookkeeping.

    `now()` is in seconds on a monotonic timeline with an arbitrary origin.
    """

    def now(self) -> float:
        """Seconds on this clock's monotonic timeline."""
        ...

    def wall(self, when: float) -> datetime:
        """Convert a time on this clock to a wall-clock `datetime` (for messages)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time (a checkpoint even for 0)."""
        ...

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """A cancel scope that is cancelled when this clock reaches `deadline`."""
        ...


class MonotonicClock:
    """Real time: `time.monotonic()` and the event loop's own timers."""

    __slots__ = ()

    def now(self) -> float:
        """Seconds from `time.monotonic()`."""
        return time.monotonic()

    def wall(self, when: float) -> datetime:
        """The local wall-clock time at monotonic time `when`."""
        return datetime.now().astimezone() + timedelta(seconds=when - time.monotonic())

    async def sleep(self, seconds: float) -> None:
        """`anyio.sleep(seconds)`."""
        await anyio.sleep(max(seconds, 0.0))

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """A scope whose deadline is `deadline` translated to the loop's clock."""
        anyio_ = primitives()
        if math.isinf(deadline):
            return anyio_.create_cancel_scope()
        loop_deadline = anyio_.current_time() + (deadline - time.monotonic())
        return anyio_.create_cancel_scope(deadline=loop_deadline)

    def __repr__(self) -> str:
        return "MonotonicClock()"


class ManualClock:
    """A clock that moves only when told: `advance()`, or `sleep()` that jumps ahead.

    `sleep(s)` advances the clock by `s` at once (like trio's autojump clock), so a
    chain that waits out a backoff or a cooldown finishes instantly and deterministically.
    Scopes from `deadline_scope()` are cancelled as soon as the clock passes their deadline.

    Args:
        start: the clock's initial reading, in seconds.
        epoch: the wall-clock time that reading 0.0 corresponds to (for messages).

    Example:
        ```python
        clock = ManualClock()
        registry = Registry(clock=clock, load_env=False)
        ...
        clock.advance(30)  # every cooldown shorter than 30 s is over
        ```
    """

    def __init__(
        self,
        start: float = 0.0,
        *,
        epoch: datetime = datetime(2030, 1, 1, tzinfo=UTC),
    ) -> None:
        self._now = start
        self._epoch = epoch
        # Scopes that can still fire, with their deadlines. Weak: a scope that was exited
        # (and dropped) by its owner goes by itself; `advance()` drops cancelled ones. A
        # long test creating a scope per call must not accumulate them.
        self._scopes: weakref.WeakKeyDictionary[anyio.CancelScope, float] = (
            weakref.WeakKeyDictionary()
        )
        self.sleeps: list[float] = []
        """Every `sleep()` duration asked for, in order (for assertions)."""

    def now(self) -> float:
        """The current reading."""
        return self._now

    def wall(self, when: float) -> datetime:
        """`epoch + when` seconds."""
        return self._epoch + timedelta(seconds=when)

    def advance(self, seconds: float) -> None:
        """Move the clock forward and cancel every deadline scope that is now due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        for scope, deadline in list(self._scopes.items()):
            if deadline <= self._now or scope.cancel_called:
                del self._scopes[scope]
                try:
                    scope.cancel()  # idempotent for one already cancelled
                except RuntimeError:
                    # No running loop: a test advancing the clock between two runs of
                    # its loop. No task can be waiting in the scope then (it was left,
                    # or not entered yet), and anyio marks it cancelled before it asks
                    # for the running task: entering it later still cancels.
                    if not scope.cancel_called:
                        raise

    async def sleep(self, seconds: float) -> None:
        """Record the sleep, jump the clock forward by it, then yield to the loop once."""
        self.sleeps.append(seconds)
        self.advance(max(seconds, 0.0))
        await anyio.lowlevel.checkpoint()

    def deadline_scope(self, deadline: float) -> anyio.CancelScope:
        """A scope cancelled by the `advance()` that reaches `deadline`."""
        scope = anyio.CancelScope()
        if deadline <= self._now:
            scope.cancel()
        elif not math.isinf(deadline):
            self._scopes[scope] = deadline
        return scope

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:g})"
