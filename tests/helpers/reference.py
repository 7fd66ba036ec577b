"""A deliberately plain reference model of the health rules, and a store that logs its ops.

The tracker's real store is checked against this model op by op: two independent
writings of the same rules must agree on every answer and on the final state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from majordomo_async import Admission, HealthConfig, HealthStore


@dataclass
class RefState:
    failures: int = 0
    benchings: int = 0
    until: float | None = None
    probing: bool = False


@dataclass
class ReferenceHealth:
    config: HealthConfig
    states: dict[str, RefState] = field(default_factory=dict)

    def cooldown(self, benchings: int) -> float:
        value = self.config.base_cooldown
        for _ in range(benchings - 1):
            value = min(value * self.config.cooldown_factor, self.config.max_cooldown)
        return min(value, self.config.max_cooldown)

    def admit(self, key: str, now: float) -> tuple[bool, bool, float | None]:
        """(admitted, probe, until)."""
        state = self.states.get(key)
        if state is None or state.until is None:
            return (True, False, None)
        if now < state.until:
            return (False, False, state.until)
        if state.probing:
            return (False, False, None)
        state.probing = True
        return (True, True, None)

    def fail(self, key: str, now: float, retry_after: float | None) -> float | None:
        hint = min(retry_after, self.config.max_retry_after) if retry_after else 0.0
        state = self.states.setdefault(key, RefState())
        state.failures += 1
        benched_now = state.until is not None and now < state.until
        if benched_now:
            assert state.until is not None
            state.until = max(state.until, now + hint)
            return state.until
        if state.probing or state.failures >= self.config.failure_threshold:
            state.benchings += 1
            state.probing = False
            state.until = now + max(self.cooldown(state.benchings), hint)
            return state.until
        return None

    def success(self, key: str) -> None:
        self.states.pop(key, None)

    def release(self, key: str) -> None:
        if key in self.states:
            self.states[key].probing = False

    def snapshot(self) -> dict[str, tuple[int, int, float | None, bool]]:
        return {k: (s.failures, s.benchings, s.until, s.probing) for k, s in self.states.items()}


class RecordingStore:
    """Wraps a store and logs every operation with its time and result, in apply order."""

    def __init__(self, inner: HealthStore) -> None:
        self.inner = inner
        self.log: list[tuple[str, str, float, Any, Any]] = []

    def now(self) -> float:
        return self.inner.now()

    async def admit(self, key: str) -> Admission:
        result = await self.inner.admit(key)
        self.log.append(("admit", key, self.inner.now(), None, result))
        return result

    async def record_failure(self, key: str, retry_after: float | None) -> float | None:
        result = await self.inner.record_failure(key, retry_after)
        self.log.append(("fail", key, self.inner.now(), retry_after, result))
        return result

    async def record_success(self, key: str) -> None:
        await self.inner.record_success(key)
        self.log.append(("success", key, self.inner.now(), None, None))

    async def release_probe(self, key: str) -> None:
        await self.inner.release_probe(key)
        self.log.append(("release", key, self.inner.now(), None, None))

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        return await self.inner.snapshot()


def replay(log: list[tuple[str, str, float, Any, Any]], config: HealthConfig) -> ReferenceHealth:
    """Replay a recorded log on the reference model, asserting every answer matches."""
    model = ReferenceHealth(config)
    for index, (op, key, now, argument, result) in enumerate(log):
        if op == "admit":
            expected = model.admit(key, now)
            actual = (result.admitted, result.probe, result.until)
            assert actual == expected, f"op #{index} admit({key}) at {now}: {actual} != {expected}"
        elif op == "fail":
            expected_until = model.fail(key, now, argument)
            assert result == expected_until, f"op #{index} fail({key}) at {now}"
        elif op == "success":
            model.success(key)
        else:
            model.release(key)
    return model
