"""Per-target health: a circuit breaker with exponential, capped cooldowns.

States of one key ("provider/model-id"):

- healthy: no recorded failures. Admitted from one dict lookup (the hot path).
- failing: fewer consecutive transient failures than the threshold. Still admitted.
- benched: the threshold was reached; refused until the cooldown ends.
- half-open: the cooldown ended. Exactly one caller is admitted as the probe and holds a
  probe token; every other caller is refused until the probe succeeds (healthy again),
  fails (benched again, with the next, longer cooldown), is given back, or outlives its
  lease (`HealthConfig.probe_lease`; a stream being read renews it).

Probes are owned. Only the token's holder ends a probe: a late result of a call admitted
before the bench still counts (a success resets the target, a failure counts toward the
threshold) but cannot give back or fail someone else's probe.

The state lives in a `HealthStore`; `InMemoryHealthStore` is the default. A shared store
(Redis, for fleets of replicas) implements the same few atomic operations.

Locking. Every operation of `InMemoryHealthStore` reads and writes its state without
awaiting, so it runs whole before any other task sees the state: atomic on the event
loop, with no lock (a lock would only add a trip through the loop to every report). The
hand-over of a probe from the chain's attempt to the stream it established is a plain
assignment (`Stream._bind`), atomic for the same reason. Mutations that span an `await`
hold an `anyio.Lock(fast_acquire=True)` (an uncontended acquire does not yield): the
Redis store's writes to its in-process fallback and its reconnection with the write-back
of what the fallback learned (see `RedisHealthStore`). A probe given back from a
garbage-collected stream (`HealthTracker.abandon_probe`) is released at once in process,
or by a task calling the shared store's `release_probe`, which takes that lock itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, final

import attrs

from ._backend import running_loop
from ._clock import Clock, MonotonicClock
from ._exceptions import ConfigurationError
from ._hooks import logger
from ._limits import LimitSet
from ._routing import LoadTracker

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "Admission",
    "Bench",
    "HealthConfig",
    "HealthStore",
    "HealthTracker",
    "InMemoryHealthStore",
    "TargetHealth",
]


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"HealthConfig.{attribute.name} must be positive, got {value}")


@attrs.frozen
class HealthConfig:
    """How quickly a failing target is benched and how long it stays out.

    The defaults bench a target after 2 consecutive transient failures for 1 s, then
    2, 4, 8, 16 and 20 s on each failed probe. The 20 s cap bounds how long a recovered
    target stays unused: at most one cooldown plus the gap until the next call, so a
    service calling every few seconds is back on it within 30 s. A target that is down
    for an hour costs three probes a minute.
    """

    failure_threshold: int = 2
    """Consecutive transient failures that bench a target."""
    base_cooldown: float = attrs.field(default=1.0, validator=_positive)
    """Seconds of the first cooldown."""
    cooldown_factor: float = attrs.field(default=2.0, validator=_positive)
    """Each further cooldown is this many times the previous one."""
    max_cooldown: float = attrs.field(default=20.0, validator=_positive)
    """Seconds: the cooldown stops growing here."""
    max_retry_after: float = attrs.field(default=600.0, validator=_positive)
    """Seconds: a provider's retry-after hint longer than this is clamped to it."""
    probe_lease: float = attrs.field(default=60.0, validator=_positive)
    """Seconds a half-open probe is held at most without news (a stream being read
    renews it): a prober that never reports blocks the next probe this long, no longer."""

    def __attrs_post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ConfigurationError("HealthConfig.failure_threshold must be at least 1")
        if self.cooldown_factor < 1:
            raise ConfigurationError("HealthConfig.cooldown_factor must be at least 1")
        if self.max_cooldown < self.base_cooldown:
            raise ConfigurationError("HealthConfig.max_cooldown must be >= base_cooldown")

    def cooldown(self, benchings: int) -> float:
        """Seconds of the `benchings`-th consecutive cooldown (1-based), capped."""
        exponent = max(benchings - 1, 0)
        # Compare in log space so a long outage cannot overflow the float.
        if self.cooldown_factor > 1 and exponent > 64:
            return self.max_cooldown
        return min(self.base_cooldown * self.cooldown_factor**exponent, self.max_cooldown)


@attrs.frozen
class Admission:
    """The gate's answer for one attempt."""

    admitted: bool
    probe: str | None = None
    """The probe token when this caller is the single half-open probe: its holder must
    report a verdict (`report_success`/`report_failure` with `probe=`) or give it back
    (`release_probe`). None for an ordinary admission or a refusal."""
    until: float | None = None
    """When refused: the store time the cooldown ends (None: another caller is probing)."""


@attrs.frozen
class Bench:
    """A failure's answer when the target is benched."""

    until: float
    """The store time the cooldown ends."""
    new: bool
    """True when this failure benched the target; False when it was benched already (a
    late failure of a call admitted before the bench), so the bench is not announced twice."""


ADMITTED = Admission(True)
_PROBE_IN_FLIGHT = Admission(False)


@attrs.frozen
class TargetHealth:
    """A diagnostic snapshot of one target."""

    key: str
    state: str
    """"failing", "benched", "half-open" or "probing"; "healthy" for a target listed only
    for its load (a group member, or one with limits: other healthy targets are absent)."""
    consecutive_failures: int
    benchings: int
    """How many cooldowns in a row this target has served."""
    backed_off_until: datetime | None
    """Wall-clock end of the current cooldown, if benched."""
    in_flight: int = 0
    """Calls on this target not yet ended (tracked for members of a balanced group,
    targets with limits, and the targets of a chain that hedges)."""
    latency: float | None = None
    """Recent seconds to first content (a moving average), when tracked and measured."""
    groups: tuple[str, ...] = ()
    """The balanced groups ("a/x|b/x") of parsed specs this target is a member of."""


class HealthStore(Protocol):
    """Where health state lives. Each method is one atomic operation on one key.

    Implementations decide their own time source (the in-memory store uses the
    tracker's clock; a shared store should use one clock for the whole fleet). The rules
    every store follows are `InMemoryHealthStore`'s.
    """

    async def admit(self, key: str) -> Admission:
        """Admit or refuse an attempt; may hand out the half-open probe token."""
        ...

    async def record_failure(
        self, key: str, retry_after: float | None, probe: str | None
    ) -> Bench | None:
        """Count a transient failure (`probe`: the token, if the caller holds one).
        Returns the bench when the key is benched (newly or already), else None."""
        ...

    async def record_success(self, key: str, probe: str | None) -> None:
        """Forget every failure of `key`."""
        ...

    async def release_probe(self, key: str, probe: str) -> None:
        """Give back the probe `probe` without a verdict (no-op unless it is the holder)."""
        ...

    async def renew_probe(self, key: str, probe: str) -> bool:
        """Extend the lease of `probe`; False when it is no longer the holder."""
        ...

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        """Every key with state: (consecutive failures, benchings, until, probing)."""
        ...

    def now(self) -> float:
        """The store's current time, on the timeline `until` values use."""
        ...


_tokens = itertools.count(1)


def new_probe_token(owner: str = "local") -> str:
    """A probe token unique within the process (a shared store prefixes its own id)."""
    return f"{owner}:{next(_tokens)}"


class _KeyState:
    __slots__ = ("benchings", "failures", "lease", "probe", "refusal", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.benchings = 0
        self.until: float | None = None
        self.probe: str | None = None
        """The half-open probe's token, while one is out."""
        self.lease = 0.0
        """When the probe's lease runs out."""
        self.refusal: Admission | None = None
        """The `Admission` refusing attempts until `until`, kept: a benched key is
        refused on every call that meets it."""


@final
class InMemoryHealthStore:
    """Process-local health state, for the tasks of one event loop.

    Every operation reads and writes the state without awaiting, so each runs whole
    before any other task can see the state: atomic on the event loop, with no lock.
    Healthy keys have no entry, so admitting them and reporting their success costs one
    dict lookup.
    """

    def __init__(self, config: HealthConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._states: dict[str, _KeyState] = {}

    def now(self) -> float:
        """The tracker's clock."""
        return self._clock.now()

    async def admit(self, key: str) -> Admission:
        """See `HealthStore.admit`."""
        return self._admit(key)

    async def record_failure(
        self, key: str, retry_after: float | None, probe: str | None = None
    ) -> Bench | None:
        """See `HealthStore.record_failure`."""
        return self._record_failure(key, retry_after, probe)

    async def record_success(self, key: str, probe: str | None = None) -> None:
        """See `HealthStore.record_success`. Any success resets the key, probe included."""
        self._states.pop(key, None)

    async def release_probe(self, key: str, probe: str) -> None:
        """See `HealthStore.release_probe`."""
        self._release(key, probe)

    async def renew_probe(self, key: str, probe: str) -> bool:
        """See `HealthStore.renew_probe`."""
        state = self._states.get(key)
        now = self._clock.now()
        if state is None or state.probe != probe or now >= state.lease:
            return False
        state.lease = now + self._config.probe_lease
        return True

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        """See `HealthStore.snapshot`."""
        now = self._clock.now()
        return {
            key: (state.failures, state.benchings, state.until, self._probing(state, now))
            for key, state in self._states.items()
        }

    # The operations themselves, synchronous (so atomic on the loop). Only this module
    # calls them: the tracker skips the coroutine for its own in-process store.

    def _admit(self, key: str) -> Admission:
        state = self._states.get(key)
        if state is None or state.until is None:
            return ADMITTED
        until = state.until
        now = self._clock.now()
        if now < until:
            refusal = state.refusal
            if refusal is None or refusal.until != until:
                refusal = state.refusal = Admission(False, until=until)
            return refusal
        if self._probing(state, now):
            return _PROBE_IN_FLIGHT
        # Half-open, and no live probe (none yet, or its holder went silent past the lease).
        token = state.probe = new_probe_token()
        state.lease = now + self._config.probe_lease
        return Admission(True, probe=token)

    def _record_failure(
        self, key: str, retry_after: float | None, probe: str | None
    ) -> Bench | None:
        config = self._config
        hint = min(retry_after, config.max_retry_after) if retry_after else 0.0
        now = self._clock.now()
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState()
        state.failures += 1
        if state.until is not None and now < state.until:
            # Benched already: a late failure of a call admitted before the bench.
            # It may extend the cooldown with its hint, never escalate it.
            state.until = max(state.until, now + hint)
            return Bench(state.until, new=False)
        holder = self._probing(state, now)
        if holder and probe != state.probe:
            # Someone else's probe is out: this late failure counts, but only the
            # probe's own verdict ends it.
            return None
        if not (holder or state.failures >= config.failure_threshold):
            return None
        state.benchings += 1
        state.probe = None
        state.until = now + max(config.cooldown(state.benchings), hint)
        return Bench(state.until, new=True)

    def _release(self, key: str, probe: str) -> None:
        state = self._states.get(key)
        if state is not None and state.probe == probe:
            state.probe = None

    @staticmethod
    def _probing(state: _KeyState, now: float) -> bool:
        return state.probe is not None and now < state.lease


@final
class HealthTracker:
    """Tracks which targets are benched. Shared by every chain of a `Registry`.

    Every method is a coroutine, so that the store behind it may be shared (Redis).
    With the default in-process store none of them suspends: each runs whole on the
    event loop and needs no lock. The one operation that may span an `await` on a shared
    store without a caller to await it, giving back the probe of a stream that was
    garbage-collected unclosed (`abandon_probe`), runs as a background task; the shared
    store guards its own fallback and reconnection with an `anyio.Lock`.

    Args:
        config: thresholds, cooldowns and the probe lease.
        clock: time source; inject a `ManualClock` to step through cooldowns in tests.
        store: where the state lives; defaults to an `InMemoryHealthStore`.
    """

    def __init__(
        self,
        config: HealthConfig | None = None,
        *,
        clock: Clock | None = None,
        store: HealthStore | None = None,
    ) -> None:
        self.config = config or HealthConfig()
        self.clock = clock or MonotonicClock()
        self.store: HealthStore = store or InMemoryHealthStore(self.config, self.clock)
        # A store on this tracker's own clock shares its timeline: no conversion, which
        # would read the clock twice and could land a hair before the real cooldown end.
        self._same_timeline = (
            isinstance(self.store, InMemoryHealthStore) and self.store._clock is self.clock
        )
        # The in-process store, when it is ours: its operations are called without the
        # coroutine wrapper (the hot path of every call admits and reports here).
        self._local = self.store if isinstance(self.store, InMemoryHealthStore) else None
        self._handovers: set[asyncio.Task[None]] = set()
        self.load = LoadTracker()
        """Calls in flight and recent latency of the targets that routing tracks."""
        self.limits = LimitSet(self.clock)
        """The `max_concurrency`, `rpm` and `tpm` limits of targets and providers."""

    async def admit(self, key: str) -> Admission:
        """Gate one attempt on `key`; may hand out the probe token (see `Admission`)."""
        local = self._local
        if local is not None:
            return local._admit(key)
        return await self.store.admit(key)

    def is_clear(self, key: str, probe: str | None = None) -> bool:
        """True when `report_success(key, probe=probe)` would change nothing: no probe
        to end, and `key` is known to have no recorded state (False when only a shared
        store could tell)."""
        local = self._local
        return probe is None and local is not None and key not in local._states

    async def report_failure(
        self, key: str, *, retry_after: float | None = None, probe: str | None = None
    ) -> Bench | None:
        """Count a transient failure of `key`; the bench when `key` is (now) benched.

        `retry_after` (seconds, from the provider) can lengthen a cooldown, never shorten
        it. `probe`: the caller's probe token, if it holds one.
        """
        local = self._local
        if local is not None:
            return local._record_failure(key, retry_after, probe)
        return await self.store.record_failure(key, retry_after, probe)

    async def report_success(self, key: str, *, probe: str | None = None) -> None:
        """`key` answered: forget its failures and cooldowns."""
        local = self._local
        if local is not None:
            local._states.pop(key, None)
            return
        await self.store.record_success(key, probe)

    async def release_probe(self, key: str, probe: str) -> None:
        """Give back the probe `probe` without a verdict (the probe was cancelled, say)."""
        await self.store.release_probe(key, probe)

    async def renew_probe(self, key: str, probe: str) -> bool:
        """Extend the lease of `probe` (a stream being read); False if it is not held."""
        return await self.store.renew_probe(key, probe)

    def abandon_probe(self, key: str, probe: str) -> None:
        """Give back `probe` from code that cannot await (a garbage-collected stream).

        The in-process store releases it at once. A shared store's release runs as a
        task on the running loop; with no loop running, the probe's lease expires it.
        """
        local = self._local
        if local is not None:
            local._release(key, probe)
            return
        loop = running_loop()
        if loop is None:
            return
        task = loop.create_task(self._hand_over(key, probe))
        self._handovers.add(task)
        task.add_done_callback(self._handovers.discard)

    async def _hand_over(self, key: str, probe: str) -> None:
        try:
            await self.store.release_probe(key, probe)
        except Exception:  # the lease expires it anyway
            logger.debug("giving back the probe of %s failed", key, exc_info=True)

    async def available(self, key: str) -> bool:
        """Whether an attempt on `key` would be admitted now. Takes no probe slot."""
        snapshot = await self.store.snapshot()
        entry = snapshot.get(key)
        if entry is None:
            return True
        _, _, until, probing = entry
        return until is None or (self.store.now() >= until and not probing)

    async def backed_off_until(self, key: str) -> datetime | None:
        """Wall-clock end of `key`'s cooldown, or None when it is not benched."""
        entry = (await self.store.snapshot()).get(key)
        if entry is None or entry[2] is None or self.store.now() >= entry[2]:
            return None
        return self.wall(entry[2])

    async def snapshot(self) -> dict[str, TargetHealth]:
        """Every target with recorded state, and every target whose load is tracked (a
        member of a balanced group, or one with limits) with its calls in flight, recent
        latency and groups. Other healthy targets are absent."""
        now = self.store.now()
        result: dict[str, TargetHealth] = {}
        states = dict(await self.store.snapshot())
        load = self.load
        for key in load.loads:
            states.setdefault(key, (0, 0, None, False))
        for key, (failures, benchings, until, probing) in states.items():
            if probing:
                state = "probing"
            elif until is None:
                state = "failing" if failures else "healthy"
            elif now < until:
                state = "benched"
            else:
                state = "half-open"
            result[key] = TargetHealth(
                key=key,
                state=state,
                consecutive_failures=failures,
                benchings=benchings,
                backed_off_until=self.wall(until) if until is not None and now < until else None,
                in_flight=tracked.in_flight if (tracked := load.loads.get(key)) else 0,
                latency=tracked.latency if tracked else None,
                groups=load.groups(key),
            )
        return result

    @property
    def probe_lease(self) -> float:
        """Seconds a half-open probe is held without news: the store's own lease when it
        keeps one (a shared store may be built with another), else the config's."""
        lease = getattr(self.store, "probe_lease", None)
        return lease if isinstance(lease, int | float) and lease > 0 else self.config.probe_lease

    def local_time(self, until: float) -> float:
        """A time on the store's timeline (`Admission.until`) as a time on `clock`."""
        if self._same_timeline:
            return until
        return self.clock.now() + (until - self.store.now())

    def wall(self, until: float) -> datetime:
        """A time on the store's timeline as wall-clock time (for messages)."""
        return self.clock.wall(self.local_time(until))

    def __repr__(self) -> str:
        return f"HealthTracker({self.config!r})"
