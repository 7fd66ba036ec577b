"""Concurrency and rate limits per target ("provider/model-id") and per provider.

A `Limiter` holds the caps of one name on one clock:

- `max_concurrency`: attempts in flight. A counter with FIFO waiters. A release hands its
  slot straight to the first live waiter (the slot never looks free in between, so no
  thundering herd and no barging: a caller that will not wait is refused while anyone
  waits). A waiter cancelled after it was handed a slot passes the slot on.
- `rpm` and `tpm`: sliding windows. Each is a log of (time, weight) entries with a
  running sum, so at most `rpm` requests and `tpm` tokens fall in ANY 60 s interval. Not
  a fixed minute, and not a token bucket: both let up to twice the rate through within
  some 60 s (a burst at the end of one minute and another at the start of the next).
  Entries are appended in time order and expire from the front: amortised O(1). An
  entry's weight can be corrected later (the provider's token count replaces the
  estimate) or zeroed (a request that was never sent), without leaving the deque. A
  request estimated above the whole `tpm` could never fit: it is admitted alone, once
  the window is empty.
- a pause: a 429 with a reset hint refuses everything until then (never shortened).

`LimitSet` holds the limiters of a registry and takes a target's and its provider's
together, all or nothing. Waiting never holds one limiter while waiting on another (that
could deadlock two callers): whatever was taken is given back, the caller waits on the
limiter that refused (FIFO for a slot, `clock.sleep` for a window or a pause), then tries
the pair again.

Locking. Every check-and-take runs without awaiting, so it is atomic on the event loop.
The one exception is a `SharedBudget` (Redis, for a fleet): its rpm/tpm reservation is
awaited while the local concurrency slot is already held, and given back on every way
out. Concurrency stays per process.

Leaks. Every path gives back what it took: a refusal, an error, a cancellation at any
await, a `Lease` released twice. A `Lease` garbage-collected unreleased is released by
its `__del__`, counted in `Limiter.leaked`, and its waiters are woken from a loop
callback (a finaliser may run in the middle of other code, or on another thread).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol, final

import anyio
import attrs

from ._backend import running_loop
from ._clock import Clock
from ._exceptions import ConfigurationError
from ._hooks import logger

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "LIMIT_KEYS",
    "LimitSet",
    "LimitState",
    "Lease",
    "Limiter",
    "Limits",
    "Refused",
    "SharedBudget",
]

WINDOW: Final = 60.0
"""Seconds of the rpm and tpm windows."""

LIMIT_KEYS: Final = ("max_concurrency", "rpm", "tpm")
"""The DSN query keys that set `Limits`."""

_MEANINGS: Final = {
    "max_concurrency": "attempts in flight at once",
    "rpm": "requests in any 60 s",
    "tpm": "tokens in any 60 s",
}

_MIN_BUDGET_WAIT: Final = 0.01
"""Seconds: a shared budget refusing with no wait is asked again this much later at the
earliest, so a waiting caller cannot spin on it."""


# --------------------------------------------------------------------------- the caps


def _cap(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is None:
        return
    # bool is an int: `rpm=True` is a mistake, not a cap of 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"Limits.{attribute.name} must be a positive whole number "
            f"({_MEANINGS[attribute.name]}) or None for no cap, got {value!r}"
        )


@attrs.frozen
class Limits:
    """Caps on one target ("provider/model-id") or one provider (all its targets together).

    Every cap is a positive int, or None for no cap.
    """

    max_concurrency: int | None = attrs.field(default=None, validator=_cap)
    """Attempts in flight at once (a stream holds its slot until it ends)."""
    rpm: int | None = attrs.field(default=None, validator=_cap)
    """Requests sent in any 60 s window."""
    tpm: int | None = attrs.field(default=None, validator=_cap)
    """Tokens in any 60 s window (estimated before a request, corrected after). A request
    estimated above the whole cap could never fit: it runs alone, once the window is empty."""

    @property
    def any(self) -> bool:
        """True when at least one cap is set."""
        return self.max_concurrency is not None or self.rpm is not None or self.tpm is not None

    @classmethod
    def from_query(cls, query: Mapping[str, str], label: str) -> tuple[Limits, dict[str, str]]:
        """Split the DSN query keys max_concurrency/rpm/tpm off `query`: (limits, the rest).

        Raises:
            ConfigurationError: naming `label` (say, "the openai DSN") and the key, for a
                value that is not a positive whole number.
        """
        caps = {key: _parse_cap(key, query[key], label) for key in LIMIT_KEYS if key in query}
        rest = {key: value for key, value in query.items() if key not in LIMIT_KEYS}
        limits = cls(
            max_concurrency=caps.get("max_concurrency"), rpm=caps.get("rpm"), tpm=caps.get("tpm")
        )
        return limits, rest


def _parse_cap(key: str, text: str, label: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(
            f"{label}: {key}={text!r} must be a positive whole number ({_MEANINGS[key]}); "
            f"leave {key} out for no cap"
        )
    return value


@attrs.frozen
class Refused:
    """A limiter's refusal: why, and when trying again can succeed."""

    reason: str
    """For `TargetSkippedError`, e.g. 'skipped (at its limit: max_concurrency 4 of
    provider "openai")'."""
    retry_at: float | None
    """Clock time a slot frees for sure (an rpm/tpm window, a pause). None for
    concurrency: a slot frees when someone releases one."""


@attrs.frozen
class LimitState:
    """A diagnostic snapshot of one limiter."""

    limits: Limits
    in_use: int
    """Concurrency slots held now (counted even without a `max_concurrency` cap)."""
    waiting: int
    """Callers queued for a concurrency slot."""
    requests_in_window: int | None
    """Requests in this process's own rpm window now; None without an rpm cap. With a
    shared budget, only those admitted by the fallback while the budget failed."""
    tokens_in_window: int | None
    """Tokens in this process's own tpm window now; None without a tpm cap (with a
    shared budget, likewise only the fallback's)."""
    paused_until: float | None
    """Clock time a pause ends, while one is on."""


class SharedBudget(Protocol):
    """rpm/tpm windows shared by a fleet (Redis).

    Every method may raise: the Limiter then answers from its local windows (the
    fallback) and logs once at DEBUG.
    """

    async def reserve(
        self, name: str, rpm: int | None, tpm: int | None, tokens: int
    ) -> tuple[bool, float, str]:
        """(granted, seconds until a retry could succeed (0 when granted), reservation id)."""
        ...

    async def correct(self, name: str, reservation: str, tokens: int) -> None:
        """Replace a reservation's token estimate by the count the provider reported."""
        ...

    async def cancel(self, name: str, reservation: str) -> None:
        """Remove the reservation of a request that was never sent."""
        ...

    async def pause(self, name: str, seconds: float) -> None:
        """Refuse every reservation of `name` for `seconds` (a 429 with a reset hint)."""
        ...


# --------------------------------------------------------------------------- sliding windows


class _Entry:
    __slots__ = ("time", "weight", "window")

    def __init__(self, window: _Window, time: float, weight: int) -> None:
        self.window = window
        self.time = time
        self.weight = weight


class _Window:
    """At most `cap` weight in any `WINDOW` seconds: a time-ordered log and its sum."""

    __slots__ = ("cap", "entries", "total")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.entries: deque[_Entry] = deque()
        self.total = 0

    def expire(self, now: float) -> None:
        """Drop the entries that left the window. An entry made at `t` counts while
        `now < t + WINDOW`: the same sum as `retry_at`, so both agree to the bit."""
        entries = self.entries
        while entries and entries[0].time + WINDOW <= now:
            self.total -= entries.popleft().weight

    def fits_at(self, weight: int, now: float) -> float | None:
        """None when `weight` fits now, else the clock time it will (call `expire` first).

        A weight above the whole cap fits only in an empty window: it would never fit
        otherwise, so it runs alone.
        """
        total = self.total
        if total == 0 or total + weight <= self.cap:
            return None
        # Free entries from the oldest until enough has left; a weight over the cap
        # needs the whole window empty.
        need = total + weight - self.cap if weight <= self.cap else total
        freed = 0
        for entry in self.entries:
            freed += entry.weight
            if freed >= need:
                return entry.time + WINDOW
        return now + WINDOW  # unreachable while `total` is the sum of the entries

    def add(self, weight: int, now: float) -> _Entry:
        """Record `weight` at `now`."""
        entry = _Entry(self, now, weight)
        self.entries.append(entry)
        self.total += weight
        return entry

    def reweigh(self, entry: _Entry, weight: int, now: float) -> None:
        """Set the weight of `entry` (0: a request never sent), if it is still in the
        window; one that has left no longer counts anyway."""
        self.expire(now)
        if entry.time + WINDOW > now:
            self.total += weight - entry.weight
            entry.weight = weight


def _resized(window: _Window | None, cap: int | None) -> _Window | None:
    """`window` with cap `cap` (keeping its entries), a new one, or None for no cap."""
    if cap is None:
        return None
    if window is None:
        return _Window(cap)
    window.cap = cap
    return window


def _label(name: str) -> str:
    kind = "target" if "/" in name else "provider"
    return f'{kind} "{name}"'


# --------------------------------------------------------------------------- leases


class _Part:
    """What one limiter gave an admitted attempt: a slot, window entries, a reservation."""

    __slots__ = ("limiter", "request", "reservation", "tokens")

    def __init__(
        self,
        limiter: Limiter,
        request: _Entry | None = None,
        tokens: _Entry | None = None,
        reservation: str | None = None,
    ) -> None:
        self.limiter = limiter
        self.request = request
        self.tokens = tokens
        self.reservation = reservation

    def settle(self, tokens: int) -> None:
        limiter = self.limiter
        if self.tokens is not None:
            self.tokens.window.reweigh(self.tokens, tokens, limiter.clock.now())
        reservation = self.reservation
        if reservation is not None and limiter.limits.tpm is not None:
            name = limiter.name
            limiter._tell_budget(
                "correct", lambda budget: budget.correct(name, reservation, tokens)
            )

    def give_back(self) -> None:
        """Undo everything: the request was never sent."""
        limiter = self.limiter
        limiter._release_slot()
        now = limiter.clock.now()
        for entry in (self.request, self.tokens):
            if entry is not None:
                entry.window.reweigh(entry, 0, now)
        reservation = self.reservation
        if reservation is not None:
            name = limiter.name
            limiter._tell_budget("cancel", lambda budget: budget.cancel(name, reservation))


@final
class Lease:
    """What an admitted attempt holds.

    Both methods are synchronous, idempotent and never raise. A Lease garbage-collected
    unreleased is released by its finaliser (a safety net, counted in `Limiter.leaked`).
    """

    __slots__ = ("_parts", "_released", "_settled")

    def __init__(self, parts: tuple[_Part, ...]) -> None:
        self._parts = parts
        self._released = False
        self._settled: int | None = None

    @property
    def released(self) -> bool:
        """True once `release()` ran."""
        return self._released

    def release(self) -> None:
        """Free the concurrency slot(s): each goes to its limiter's first FIFO waiter.

        The rpm/tpm entries stay: the request was sent, and counts for its 60 s.
        """
        if self._released:
            return
        self._released = True
        for part in self._parts:
            part.limiter._release_slot()

    def settle(self, tokens: int | None) -> None:
        """tpm: replace the estimate by the tokens the provider reported (None: keep it).

        The last report wins; repeating one changes nothing. Works before or after
        `release()`.
        """
        if tokens is None or tokens == self._settled:
            return
        self._settled = tokens
        for part in self._parts:
            part.settle(max(tokens, 0))

    def __del__(self) -> None:
        if self._released:
            return
        self._released = True
        for part in self._parts:
            part.limiter._leak()

    def __repr__(self) -> str:
        names = ", ".join(part.limiter.name for part in self._parts)
        return f"<Lease {names or 'unlimited'}{' released' if self._released else ''}>"


# --------------------------------------------------------------------------- one limiter


class _Waiter:
    """A caller queued for a slot: handed one when `future` has a result."""

    __slots__ = ("future", "queued")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.queued = True
        """In the count of `Limiter.waiting`; False once handed a slot or gone."""


@final
class Limiter:
    """The limits of one name (a target key or a provider name), on one clock.

    Args:
        name: "provider/model-id" or "provider".
        limits: the caps.
        clock: the time source of the windows, pauses and waits.
        budget: rpm/tpm windows shared by a fleet; the local windows then serve only
            as the fallback while the budget fails. Concurrency stays local.
    """

    def __init__(
        self, name: str, limits: Limits, clock: Clock, budget: SharedBudget | None = None
    ) -> None:
        self.name = name
        self.clock = clock
        self.budget = budget
        self.leaked = 0
        """Leases released by the garbage collector instead of their holder (a bug)."""
        self._label = _label(name)
        self._limits = Limits()
        self._requests: _Window | None = None
        self._tokens: _Window | None = None
        self._shared = False
        self._in_use = 0
        # FIFO waiters for a slot. One that left stays until it reaches an end of the
        # deque (removing from the middle is O(n)); `_waiting` counts the queued ones.
        self._waiters: deque[_Waiter] = deque()
        self._waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused_until = -math.inf
        self._budget_down = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._configure(limits)

    # ----------------------------------------------------------------- read-only state

    @property
    def limits(self) -> Limits:
        """The caps."""
        return self._limits

    @property
    def in_use(self) -> int:
        """Concurrency slots held now (a slot handed to a waiter counts)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Callers queued for a concurrency slot now."""
        return self._waiting

    @property
    def paused_until(self) -> float | None:
        """Clock time the pause ends, while one is on."""
        return self._paused_until if self.clock.now() < self._paused_until else None

    @property
    def state(self) -> LimitState:
        """A diagnostic snapshot (the local windows: a shared budget is not asked)."""
        now = self.clock.now()
        counts: list[int | None] = []
        for window in (self._requests, self._tokens):
            if window is not None:
                window.expire(now)
            counts.append(None if window is None else window.total)
        return LimitState(
            limits=self._limits,
            in_use=self._in_use,
            waiting=self._waiting,
            requests_in_window=counts[0],
            tokens_in_window=counts[1],
            paused_until=self.paused_until,
        )

    # ----------------------------------------------------------------- control

    def pause(self, until: float) -> None:
        """A 429 with a reset hint: refuse until clock time `until` (never shortens a
        pause). With a shared budget the fleet is told too."""
        if until <= self._paused_until:
            return
        self._paused_until = until
        seconds = until - self.clock.now()
        if self.budget is not None and seconds > 0:
            name = self.name
            self._tell_budget("pause", lambda budget: budget.pause(name, seconds))

    def _configure(self, limits: Limits) -> None:
        """New caps, keeping the slots held and the entries in the windows."""
        self._limits = limits
        self._requests = _resized(self._requests, limits.rpm)
        self._tokens = _resized(self._tokens, limits.tpm)
        self._shared = self.budget is not None and (
            limits.rpm is not None or limits.tpm is not None
        )
        self._wake()  # a higher cap (or none) frees slots for the waiters

    def _retire(self) -> None:
        """Removed from its set: no caps, no pause; every waiter is let through."""
        self._paused_until = -math.inf
        self._configure(Limits())

    # ----------------------------------------------------------------- admission

    def _admit(self, tokens: int, held: bool) -> _Part | Refused:
        """Check and take at once, from the local windows (`held`: the caller was handed
        a slot already)."""
        now = self.clock.now()
        refused = self._check_slot(now, held)
        if refused is None:
            refused = self._check_windows(tokens, now)
        if refused is not None:
            return refused
        if not held:
            self._in_use += 1
        return self._record(tokens, now)

    async def _reserve(self, tokens: int, held: bool) -> _Part | Refused:
        """Like `_admit`, with the rpm/tpm windows of the shared budget. The slot is
        taken first and held across the await, so the budget is not asked in vain and
        no other caller can take it meanwhile; it is given back on every way out but
        success. (A reservation granted on the server while this task was cancelled
        cannot be cancelled: its id never arrived. It ages out of the window.)"""
        budget = self.budget
        assert budget is not None
        refused = self._check_slot(self.clock.now(), held)
        if refused is not None:
            return refused
        if not held:
            self._in_use += 1
        answer: _Part | Refused
        try:
            answer = await self._ask_budget(budget, tokens)
        except BaseException:
            if not held:
                self._release_slot()
            raise
        if isinstance(answer, Refused) and not held:
            self._release_slot()
        return answer

    async def _ask_budget(self, budget: SharedBudget, tokens: int) -> _Part | Refused:
        limits = self._limits
        try:
            granted, seconds, reservation = await budget.reserve(
                self.name, limits.rpm, limits.tpm, tokens
            )
        except Exception:
            self._budget_failed("reserve")
            now = self.clock.now()
            refused = self._check_windows(tokens, now)
            return self._record(tokens, now) if refused is None else refused
        self._budget_down = False
        if granted:
            return _Part(self, reservation=reservation)
        seconds = max(seconds, _MIN_BUDGET_WAIT)
        caps = ", ".join(
            f"{key} {cap}" for key, cap in (("rpm", limits.rpm), ("tpm", limits.tpm)) if cap
        )
        return Refused(
            f"skipped (the fleet's shared {caps} of {self._label} is spent; "
            f"a slot frees in {seconds:.1f} s)",
            self.clock.now() + seconds,
        )

    def _check_slot(self, now: float, held: bool) -> Refused | None:
        """The pause, then a free concurrency slot (unless the caller holds one)."""
        if now < self._paused_until:
            return Refused(
                f"skipped ({self._label} is paused after a rate limit; "
                f"it resumes in {self._paused_until - now:.1f} s)",
                self._paused_until,
            )
        cap = self._limits.max_concurrency
        # No barging: while anyone waits, a free-looking slot is theirs.
        if held or cap is None or (self._in_use < cap and not self._waiting):
            return None
        queue = f", {self._waiting} waiting" if self._waiting else ""
        return Refused(
            f"skipped (at its limit: max_concurrency {cap} of {self._label}{queue})", None
        )

    def _check_windows(self, tokens: int, now: float) -> Refused | None:
        """The rpm and tpm windows; a refusal names the one that frees last."""
        refused: Refused | None = None
        requests, window = self._requests, self._tokens
        if requests is not None:
            requests.expire(now)
            at = requests.fits_at(1, now)
            if at is not None:
                refused = Refused(
                    f"skipped (rpm {requests.cap} of {self._label} reached; "
                    f"a slot frees in {at - now:.1f} s)",
                    at,
                )
        if window is not None:
            window.expire(now)
            at = window.fits_at(tokens, now)
            # Both full: the later time is the one a retry must wait for.
            if at is not None and (refused is None or at > (refused.retry_at or -math.inf)):
                refused = Refused(self._tpm_reason(window, tokens, at - now), at)
        return refused

    def _tpm_reason(self, window: _Window, tokens: int, wait: float) -> str:
        if tokens > window.cap:
            return (
                f"skipped (the request's ~{tokens} tokens exceed tpm {window.cap} of "
                f"{self._label}: it runs alone once the window is empty, in {wait:.1f} s)"
            )
        return (
            f"skipped (tpm {window.cap} of {self._label} reached: {window.total} tokens in "
            f"the last 60 s, ~{tokens} more asked; room frees in {wait:.1f} s)"
        )

    def _record(self, tokens: int, now: float) -> _Part:
        requests, window = self._requests, self._tokens
        return _Part(
            self,
            request=None if requests is None else requests.add(1, now),
            tokens=None if window is None else window.add(tokens, now),
        )

    # ----------------------------------------------------------------- slots and waiters

    async def _wait_for_slot(self, until: float) -> bool:
        """Queue for a slot until clock time `until`. True: a slot was handed over (the
        caller holds it). False: out of time. Leaves the queue on every way out."""
        loop = running_loop()
        if loop is None:  # anyio on trio: asyncio's futures cannot serve
            raise RuntimeError("waiting for a limit's slot needs an asyncio event loop")
        self._loop = loop
        waiter = _Waiter(loop.create_future())
        self._waiters.append(waiter)
        self._waiting += 1
        try:
            with self.clock.deadline_scope(until):
                await waiter.future
        except BaseException:
            if self._leave(waiter):
                self._release_slot()  # handed a slot, then cancelled: pass it on
            raise
        return self._leave(waiter)

    def _leave(self, waiter: _Waiter) -> bool:
        """Take `waiter` out of the queue; True when it had been handed a slot."""
        future = waiter.future
        if future.done() and not future.cancelled():
            return True  # `_wake` counted it out when it handed the slot over
        future.cancel()
        if waiter.queued:
            waiter.queued = False
            self._waiting -= 1
        # Trim the departed off both ends (those in the middle go when `_wake` reaches
        # them), so a queue timing out over and over does not grow.
        waiters = self._waiters
        while waiters and not waiters[0].queued:
            del waiters[0]
        while waiters and not waiters[-1].queued:
            del waiters[-1]
        return False

    def _release_slot(self) -> None:
        self._in_use -= 1
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the first queued waiters, in order."""
        waiters = self._waiters
        while self._waiting:
            cap = self._limits.max_concurrency
            if cap is not None and self._in_use >= cap:
                return
            waiter = waiters.popleft()
            if not waiter.queued:
                continue  # left already, and counted itself out
            waiter.queued = False
            self._waiting -= 1
            future = waiter.future
            # Cancelled, its task not yet run to leave: it is out now. A closed loop:
            # its task is gone with it.
            if future.done() or future.get_loop().is_closed():
                continue
            self._in_use += 1
            future.set_result(None)

    def _leak(self) -> None:
        """A Lease's finaliser: free the slot now, wake waiters from a loop callback.

        A finaliser can run in the middle of `_wake` (the collector runs on any
        allocation) or on another thread, so it must not hand slots over itself. The
        decrement is safe there: an update of a small int allocates nothing (so the
        collector cannot run inside it), and no thread switch falls inside it.
        """
        self.leaked += 1
        self._in_use -= 1
        loop = self._loop
        if self._waiting and loop is not None:
            # A closed loop raises RuntimeError: nobody waits on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    # ----------------------------------------------------------------- the shared budget

    def _tell_budget(self, what: str, call: Callable[[SharedBudget], Awaitable[None]]) -> None:
        """Run a budget call from synchronous code as a task, kept until it ends. Without
        a running loop it is dropped: the reservation ages out of the window."""
        budget = self.budget
        if budget is None:
            return
        loop = running_loop()
        if loop is None:
            return
        task = loop.create_task(self._budget_call(what, budget, call))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _budget_call(
        self, what: str, budget: SharedBudget, call: Callable[[SharedBudget], Awaitable[None]]
    ) -> None:
        try:
            await call(budget)
        except Exception:
            self._budget_failed(what)

    def _budget_failed(self, what: str) -> None:
        """Log a budget failure once per outage (call from an `except` block)."""
        if self._budget_down:
            return
        self._budget_down = True
        logger.debug(
            "the shared budget failed (%s for %s): this process's own windows apply "
            "until it answers again",
            what,
            self._label,
            exc_info=True,
        )

    def __repr__(self) -> str:
        return f"Limiter({self.name!r}, {self._limits!r})"


# --------------------------------------------------------------------------- a registry's set


@final
class LimitSet:
    """Every limiter of a registry: per target key and per provider name. Cheap when empty.

    Args:
        clock: the time source of every limiter.
        budget: rpm/tpm windows shared by a fleet, for every limiter.
    """

    def __init__(self, clock: Clock, budget: SharedBudget | None = None) -> None:
        self.clock = clock
        self.budget = budget
        self._limiters: dict[str, Limiter] = {}

    @property
    def limiters(self) -> Mapping[str, Limiter]:
        """Every limiter by name (read-only)."""
        return MappingProxyType(self._limiters)

    def set(self, name: str, limits: Limits) -> None:
        """Set the caps of `name` ("provider/model-id" or "provider"); `Limits()` removes
        them. Slots held and window entries carry over to the new caps."""
        limiter = self._limiters.get(name)
        if not limits.any:
            if limiter is not None:
                del self._limiters[name]
                limiter._retire()
        elif limiter is None:
            self._limiters[name] = Limiter(name, limits, self.clock, self.budget)
        else:
            limiter._configure(limits)

    def limited(self, key: str) -> bool:
        """True when `key` ("provider/model-id") has a target or a provider limiter."""
        limiters = self._limiters
        return bool(limiters) and (key in limiters or key.partition("/")[0] in limiters)

    async def acquire(
        self, key: str, tokens: int, *, wait_until: float | None = None
    ) -> Lease | Refused:
        """Take the target's limiter, then its provider's: all or nothing.

        Args:
            key: "provider/model-id".
            tokens: the request's estimated tokens (for tpm; `Lease.settle` corrects it).
            wait_until: None answers now. A clock time waits until then: FIFO for a
                concurrency slot, `clock.sleep` until a window or a pause frees; a
                refusal that cannot end by then is returned at once.

        Returns:
            A `Lease` to release when the attempt ends, or the last `Refused`.
        """
        tokens = max(tokens, 0)
        held: Limiter | None = None  # a limiter that handed this caller a slot
        while True:
            # Looked up on every round: the caps may change while a caller waits.
            outcome = await self._try(self._pair(key), tokens, held)
            held = None
            if isinstance(outcome, Lease):
                return outcome
            refused, limiter = outcome
            if wait_until is None:
                return refused
            now = self.clock.now()
            if refused.retry_at is None:
                if now >= wait_until or not await limiter._wait_for_slot(wait_until):
                    return refused
                held = limiter
            elif refused.retry_at > wait_until:
                return refused
            else:
                await self.clock.sleep(refused.retry_at - now)

    async def acquire_first(
        self, keys: Sequence[str], tokens: int, *, wait_until: float
    ) -> tuple[int, Lease] | None:
        """Wait for the first of `keys` to grant a lease (each as `acquire` does, all at
        once): its index in `keys` and the lease, or None when none did by `wait_until`.

        A call whose every candidate is at its limit takes whichever slot frees first,
        not the first candidate's. Leases granted to the others in the same instant are
        given back, and so is every lease when the caller is cancelled.
        """
        if len(keys) == 1:
            got = await self.acquire(keys[0], tokens, wait_until=wait_until)
            return (0, got) if isinstance(got, Lease) else None
        granted: list[tuple[int, Lease]] = []

        async def wait_for(index: int, key: str, scope: anyio.CancelScope) -> None:
            got = await self.acquire(key, tokens, wait_until=wait_until)
            if isinstance(got, Lease):
                granted.append((index, got))  # no await between the grant and this
                scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                for index, key in enumerate(keys):
                    group.start_soon(wait_for, index, key, group.cancel_scope)
        except BaseException:
            for _, lease in granted:
                lease.release()
            raise
        for _, lease in granted[1:]:
            lease.release()
        return granted[0] if granted else None

    def pause(self, key: str, until: float) -> None:
        """Pause the target's limiter (only the target's) until clock time `until`. A key
        without one gets a limiter without caps, which `set(key, Limits())` removes."""
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = Limiter(key, Limits(), self.clock, self.budget)
        limiter.pause(until)

    def snapshot(self) -> dict[str, LimitState]:
        """Every limiter's state, by name."""
        return {name: limiter.state for name, limiter in self._limiters.items()}

    def _pair(self, key: str) -> tuple[Limiter, ...]:
        """The limiters of `key`: its target's, then its provider's, those that exist."""
        limiters = self._limiters
        if not limiters:
            return ()
        provider = key.partition("/")[0]
        found = (limiters.get(key), limiters.get(provider) if provider != key else None)
        return tuple(limiter for limiter in found if limiter is not None)

    async def _try(
        self, pair: tuple[Limiter, ...], tokens: int, held: Limiter | None
    ) -> Lease | tuple[Refused, Limiter]:
        """One all-or-nothing round over `pair`. The slot of `held` is used, or given back."""
        parts: list[_Part] = []
        refused: tuple[Refused, Limiter] | None = None
        try:
            for limiter in pair:
                mine = limiter is held
                answer = (
                    await limiter._reserve(tokens, mine)
                    if limiter._shared
                    else limiter._admit(tokens, mine)
                )
                if isinstance(answer, Refused):
                    refused = answer, limiter
                    break
                parts.append(answer)
        except BaseException:
            self._undo(parts, held)
            raise
        if refused is not None:
            self._undo(parts, held)
            return refused
        if held is not None and held not in pair:
            held._release_slot()  # its caps were removed while the caller waited
        return Lease(tuple(parts))

    @staticmethod
    def _undo(parts: list[_Part], held: Limiter | None) -> None:
        """Give back a half-taken pair, and the handed slot if no part took it."""
        for part in parts:
            part.give_back()
        if held is not None and all(part.limiter is not held for part in parts):
            held._release_slot()

    def __repr__(self) -> str:
        return f"LimitSet({sorted(self._limiters)!r})"
