"""Per-target health: a circuit breaker with exponential, capped cooldowns.

States of one key ("provider/model-id"):

- healthy: no recorded failures. Admitted from one dict lookup (the hot path).
- failing: fewer consecutive transient failures than the threshold. Still admitted.
- benched: the threshold was reached; refused until the cooldown ends.
- half-open: the cooldown ended. Exactly one caller is admitted as the probe; every
  other caller is refused until the probe succeeds (healthy again) or fails
  (benched again, with the next, longer cooldown). A probe that ends without a
  verdict (cancelled, or an error that says nothing about health) gives the slot back.

The state lives in a `HealthStore`; `InMemoryHealthStore` is the default. A shared store
(Redis, for fleets of replicas) implements the same few atomic operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, final

import attrs

from ._clock import Clock, MonotonicClock
from ._exceptions import ConfigurationError

__all__ = [
    "Admission",
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
    probe: bool = False
    """True when this caller is the single half-open probe: it must report a verdict
    (`report_success`/`report_failure`) or give the slot back (`release_probe`)."""
    until: float | None = None
    """When refused: the clock time the cooldown ends (None: another caller is probing)."""


ADMITTED = Admission(True)
_PROBE = Admission(True, probe=True)
_PROBE_IN_FLIGHT = Admission(False)


@attrs.frozen
class TargetHealth:
    """A diagnostic snapshot of one target."""

    key: str
    state: str
    """"failing", "benched", "half-open" or "probing" (healthy keys are not listed)."""
    consecutive_failures: int
    benchings: int
    """How many cooldowns in a row this target has served."""
    backed_off_until: datetime | None
    """Wall-clock end of the current cooldown, if benched."""


class HealthStore(Protocol):
    """Where health state lives. Each method is one atomic operation on one key.

    Implementations decide their own time source (the in-memory store uses the
    tracker's clock; a shared store should use one clock for the whole fleet).
    """

    async def admit(self, key: str) -> Admission:
        """Admit or refuse an attempt; may hand out the half-open probe slot."""
        ...

    async def record_failure(self, key: str, retry_after: float | None) -> float | None:
        """Count a transient failure. Returns the cooldown's end when the key is benched."""
        ...

    async def record_success(self, key: str) -> None:
        """Forget every failure of `key`."""
        ...

    async def release_probe(self, key: str) -> None:
        """Give back a probe slot without a verdict."""
        ...

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        """Every key with state: (consecutive failures, benchings, until, probing)."""
        ...

    def now(self) -> float:
        """The store's current time, on the timeline `until` values use."""
        ...


class _KeyState:
    __slots__ = ("benchings", "failures", "probing", "refusal", "until")

    def __init__(self) -> None:
        self.failures = 0
        self.benchings = 0
        self.until: float | None = None
        self.probing = False
        self.refusal: Admission | None = None
        """The `Admission` refusing attempts until `until`, kept: a benched key is
        refused on every call that meets it."""


@final
class InMemoryHealthStore:
    """Process-local health state, for the tasks of one event loop.

    Every operation reads and writes the state without awaiting, so each runs whole
    before any other task can see the state: atomic on the event loop, with no lock
    (an `anyio.Lock` would add a trip through the event loop to every failure
    report). Healthy keys have no entry, so admitting them and reporting their success
    costs one dict lookup.
    """

    def __init__(self, config: HealthConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._states: dict[str, _KeyState] = {}

    def now(self) -> float:
        """The tracker's clock."""
        return self._clock.now()

    def admit_now(self, key: str) -> Admission | None:
        """`admit(key)` for a healthy, failing or benched key, without a coroutine; None
        for a half-open one (only `admit` hands out the probe slot)."""
        state = self._states.get(key)
        if state is None or state.until is None:
            return ADMITTED
        until = state.until
        if self._clock.now() < until:
            refusal = state.refusal
            if refusal is None or refusal.until != until:
                refusal = state.refusal = Admission(False, until=until)
            return refusal
        return None

    def is_clear(self, key: str) -> bool:
        """Whether `key` has no recorded state (a success would change nothing)."""
        return key not in self._states

    async def admit(self, key: str) -> Admission:
        """See `HealthStore.admit`."""
        admission = self.admit_now(key)
        if admission is not None:
            return admission
        state = self._states[key]  # half-open: `admit_now` saw the entry
        if state.probing:
            return _PROBE_IN_FLIGHT
        state.probing = True
        return _PROBE

    async def record_failure(self, key: str, retry_after: float | None) -> float | None:
        """See `HealthStore.record_failure`."""
        config = self._config
        hint = min(retry_after, config.max_retry_after) if retry_after else 0.0
        now = self._clock.now()
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _KeyState()
        if state.until is not None and now < state.until:
            # Benched already: a late failure of a call admitted before the bench.
            # It may extend the cooldown with its hint, never escalate it.
            state.failures += 1
            state.until = max(state.until, now + hint)
            return state.until
        state.failures += 1
        if not (state.probing or state.failures >= config.failure_threshold):
            return None
        state.benchings += 1
        state.probing = False
        state.until = now + max(config.cooldown(state.benchings), hint)
        return state.until

    async def record_success(self, key: str) -> None:
        """See `HealthStore.record_success`."""
        self._states.pop(key, None)

    async def release_probe(self, key: str) -> None:
        """See `HealthStore.release_probe`."""
        state = self._states.get(key)
        if state is not None:
            state.probing = False

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        """See `HealthStore.snapshot`."""
        return {
            key: (state.failures, state.benchings, state.until, state.probing)
            for key, state in self._states.items()
        }


@final
class HealthTracker:
    """Tracks which targets are benched. Shared by every chain of a `Registry`.

    Args:
        config: thresholds and cooldowns.
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
        # The in-process store, when it is ours: its sync fast paths skip an await.
        self._local = self.store if isinstance(self.store, InMemoryHealthStore) else None

    async def admit(self, key: str) -> Admission:
        """Gate one attempt on `key` (the chain's entry point; may grant the probe)."""
        return await self.store.admit(key)

    def admit_now(self, key: str) -> Admission | None:
        """`admit(key)` answered without awaiting, or None when only `admit` can say.

        The in-process store answers every key but a half-open one this way: the
        healthy path of a call then costs no coroutine and no lock. Shared stores
        always need `admit`.
        """
        local = self._local
        return local.admit_now(key) if local is not None else None

    def is_clear(self, key: str) -> bool:
        """True when `key` is known to have no recorded state, so `report_success(key)`
        would change nothing (False when only the store could tell)."""
        local = self._local
        return local is not None and local.is_clear(key)

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

    async def report_failure(self, key: str, *, retry_after: float | None = None) -> bool:
        """Count a transient failure of `key`. Returns True when `key` is (now) benched.

        `retry_after` (seconds, from the provider) can lengthen a cooldown, never shorten it.
        """
        return await self.store.record_failure(key, retry_after) is not None

    async def report_success(self, key: str) -> None:
        """`key` answered: forget its failures and cooldowns."""
        await self.store.record_success(key)

    async def release_probe(self, key: str) -> None:
        """Give back a probe slot without a verdict (the probe was cancelled, say)."""
        await self.store.release_probe(key)

    async def snapshot(self) -> dict[str, TargetHealth]:
        """Every target with recorded state (healthy targets are absent)."""
        now = self.store.now()
        result: dict[str, TargetHealth] = {}
        for key, (failures, benchings, until, probing) in (await self.store.snapshot()).items():
            if probing:
                state = "probing"
            elif until is None:
                state = "failing"
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
            )
        return result

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
