"""A deliberately plain reference model of the chain's failover rules.

It walks a chain's targets as the rules in `majordomo_async._chain` say, on the health
reference model (`ReferenceHealth`), with scripted outcomes per target, and predicts
every attempt, skip, wait, the answering target or the error, and the clock. Deadlines,
request fitting and mid-stream failures are out of its scope: the calls it models have
no deadline and fit every target.

Outcomes are labels:

| label        | the target raises          | class                                  |
|--------------|----------------------------|----------------------------------------|
| `ok`         | nothing: it answers        |                                        |
| `503`        | `OverloadedError`          | transient                              |
| `429:S`      | `RateLimitError`, `retry_after=S` | transient, waits at least S     |
| `timeout`    | `ProviderTimeoutError`     | transient, never retried on the target |
| `404`        | `ModelNotFoundError`       | advances without a health penalty      |
| `401`        | `AuthenticationError`      | permanent: raised at once              |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from majordomo_async import ChainConfig

from .reference import ReferenceHealth

OK = "ok"
TRANSIENT = ("503", "timeout")
ADVANCE = "404"
PERMANENT = "401"


def retry_after(label: str) -> float | None:
    """The `retry_after` a transient label carries (`429:S` -> S), else None."""
    return float(label.partition(":")[2]) if label.startswith("429:") else None


def is_transient(label: str) -> bool:
    return label in TRANSIENT or label.startswith("429:")


@dataclass
class Step:
    """One entry of a call's failure list: an attempt that failed, or a skip."""

    key: str
    label: str
    """The outcome label of a failed attempt, or "skip"."""
    attempt: int = 1
    until: float | None = None
    """For a skip: when the target's cooldown ends (None: a probe is in flight)."""


@dataclass
class Prediction:
    """What one call does, by the rules."""

    attempts: list[str] = field(default_factory=list)
    """The key of every attempt, in order."""
    failures: list[Step] = field(default_factory=list)
    answer: str | None = None
    """The answering key, or None when the call raised."""
    error: str | None = None
    """"exhausted" (`ChainExhaustedError`) or "permanent" (the 401 itself), if it raised."""
    sleeps: list[float] = field(default_factory=list)
    """Every clock sleep the call made (retry backoffs, the recovery wait)."""
    recovery_wait: float | None = None
    """How long the call waited for a benched target to recover, if it did."""
    probes: list[str] = field(default_factory=list)
    """Targets the call was admitted to as the half-open probe."""


class _Answered(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Raised(Exception):
    pass


@dataclass
class ReferenceChain:
    """The chain rules over a shared `ReferenceHealth`, with its own clock reading."""

    health: ReferenceHealth
    config: ChainConfig
    now: float = 0.0

    def __post_init__(self) -> None:
        # With no base backoff a retry waits exactly the error's `retry_after`: no jitter.
        assert self.config.retry_backoff == 0, "the reference needs retry_backoff=0"

    def call(self, keys: Sequence[str], outcome: Callable[[str], str]) -> Prediction:
        """Predict one call through the chain `keys`.

        `outcome(key)` gives the label of each attempt on `key`, in order; it is asked
        exactly once per attempt the rules make.
        """
        prediction = Prediction()
        recoveries: list[float] = []
        try:
            for index, key in enumerate(keys):
                self._target(key, keys[index + 1 :], outcome, prediction, recoveries)
            if not prediction.attempts and recoveries:
                # Every target benched: wait for the first to recover, one more pass.
                wait = min(recoveries) - self.now
                if wait <= self.config.max_recovery_wait:
                    prediction.recovery_wait = wait
                    self._sleep(wait, prediction)
                    for index, key in enumerate(keys):
                        self._target(key, keys[index + 1 :], outcome, prediction, recoveries)
            prediction.error = "exhausted"
        except _Answered as answered:
            prediction.answer = answered.key
        except _Raised:
            prediction.error = "permanent"
        return prediction

    def _target(
        self,
        key: str,
        later: Sequence[str],
        outcome: Callable[[str], str],
        prediction: Prediction,
        recoveries: list[float],
    ) -> None:
        """Attempt `key` with its retries; return to advance, raise to end the call."""
        admitted, probe, until = self.health.admit(key, self.now)
        if not admitted:
            prediction.failures.append(Step(key, "skip", until=until))
            if until is not None:
                recoveries.append(until)
            return
        if probe:
            prediction.probes.append(key)
        holds_probe = probe
        attempt = 0
        while True:
            attempt += 1
            prediction.attempts.append(key)
            label = outcome(key)
            if label == OK:
                self.health.success(key)
                raise _Answered(key)
            if label == PERMANENT:
                self._release(key, holds_probe)
                raise _Raised
            prediction.failures.append(Step(key, label, attempt))
            if label == ADVANCE:
                self._release(key, holds_probe)
                return
            hint = retry_after(label)
            benched = self.health.fail(key, self.now, hint, holds_probe or None) is not None
            holds_probe = None
            if benched or attempt > self.config.retries or label == "timeout":
                return
            wait = self.config.backoff(attempt, hint)
            # The last resort (no later target available) waits up to max_recovery_wait
            # (these calls have no deadline).
            if wait > self.config.max_retry_wait and (
                wait > self.config.max_recovery_wait or any(map(self._available, later))
            ):
                return
            self._sleep(wait, prediction)

    def _available(self, key: str) -> bool:
        """Whether `key` would be admitted now (benched targets and probed ones are not)."""
        state = self.health.states.get(key)
        if state is None or state.until is None:
            return True
        return self.now >= state.until and not state.probing(self.now)

    def _release(self, key: str, holds_probe: str | None) -> None:
        if holds_probe:
            self.health.release(key, holds_probe)

    def _sleep(self, seconds: float, prediction: Prediction) -> None:
        prediction.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
