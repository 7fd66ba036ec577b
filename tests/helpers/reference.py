"""A deliberately plain reference model of the health rules, and a store that logs its ops.

The tracker's real store is checked against this model op by op: two independent
writings of the same rules must agree on every answer and on the final state.

Probes are owned: the model hands out a probe exactly where the store must, records the
store's token as the holder (with its lease), and lets only that holder end the probe;
a failure from anyone else while the holder's lease is live counts and nothing more.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from majordomo_async import Admission, HealthConfig, HealthStore
from majordomo_async._health import Bench

LogEntry = tuple[str, str, float, Any, Any]
"""(op, key, time, argument, result). The argument of "fail" is (retry_after, probe);
of "success", "release" and "renew" the caller's probe token; of "admit" None."""


@dataclass
class RefState:
    failures: int = 0
    benchings: int = 0
    until: float | None = None
    holder: str | None = None
    """The token of the probe out, if any (its lease may have run out)."""
    lease: float = 0.0

    def probing(self, now: float | None) -> bool:
        """A probe is out and its lease is live (`now` None: assume it is)."""
        return self.holder is not None and (now is None or now < self.lease)


@dataclass
class ReferenceHealth:
    config: HealthConfig
    states: dict[str, RefState] = field(default_factory=dict)
    _tokens: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def cooldown(self, benchings: int) -> float:
        value = self.config.base_cooldown
        for _ in range(benchings - 1):
            value = min(value * self.config.cooldown_factor, self.config.max_cooldown)
        return min(value, self.config.max_cooldown)

    def admit(
        self, key: str, now: float, token: str | None = None
    ) -> tuple[bool, str | None, float | None]:
        """(admitted, probe token, until). When the model hands out the probe, `token` (the
        store's) becomes the holder; without one the model makes up its own."""
        state = self.states.get(key)
        if state is None or state.until is None:
            return (True, None, None)
        if now < state.until:
            return (False, None, state.until)
        if state.probing(now):
            return (False, None, None)
        state.holder = token if token is not None else f"ref:{next(self._tokens)}"
        state.lease = now + self.config.probe_lease
        return (True, state.holder, None)

    def fail(
        self, key: str, now: float, retry_after: float | None, probe: str | None
    ) -> Bench | None:
        hint = min(retry_after, self.config.max_retry_after) if retry_after else 0.0
        state = self.states.setdefault(key, RefState())
        state.failures += 1
        if state.until is not None and now < state.until:
            state.until = max(state.until, now + hint)
            return Bench(state.until, new=False)
        holder_reports = state.probing(now) and probe == state.holder
        if state.probing(now) and not holder_reports:
            return None  # a late failure: counted, but someone else's probe is out
        if holder_reports or state.failures >= self.config.failure_threshold:
            state.benchings += 1
            state.holder = None
            state.until = now + max(self.cooldown(state.benchings), hint)
            return Bench(state.until, new=True)
        return None

    def success(self, key: str) -> None:
        self.states.pop(key, None)

    def release(self, key: str, probe: str) -> None:
        state = self.states.get(key)
        if state is not None and state.holder == probe:
            state.holder = None

    def renew(self, key: str, now: float, probe: str) -> bool:
        state = self.states.get(key)
        if state is None or state.holder != probe or not state.probing(now):
            return False
        state.lease = now + self.config.probe_lease
        return True

    def snapshot(self, now: float | None = None) -> dict[str, tuple[int, int, float | None, bool]]:
        """Every key with state; `probing` as of `now` (None: every lease still live)."""
        return {
            k: (s.failures, s.benchings, s.until, s.probing(now)) for k, s in self.states.items()
        }


class RecordingStore:
    """Wraps a store and logs every operation with its time and result, in apply order."""

    def __init__(self, inner: HealthStore) -> None:
        self.inner = inner
        self.log: list[LogEntry] = []

    def now(self) -> float:
        return self.inner.now()

    async def admit(self, key: str) -> Admission:
        result = await self.inner.admit(key)
        self.log.append(("admit", key, self.inner.now(), None, result))
        return result

    async def record_failure(
        self, key: str, retry_after: float | None, probe: str | None = None
    ) -> Bench | None:
        result = await self.inner.record_failure(key, retry_after, probe)
        self.log.append(("fail", key, self.inner.now(), (retry_after, probe), result))
        return result

    async def record_success(self, key: str, probe: str | None = None) -> None:
        await self.inner.record_success(key, probe)
        self.log.append(("success", key, self.inner.now(), probe, None))

    async def release_probe(self, key: str, probe: str) -> None:
        await self.inner.release_probe(key, probe)
        self.log.append(("release", key, self.inner.now(), probe, None))

    async def renew_probe(self, key: str, probe: str) -> bool:
        result = await self.inner.renew_probe(key, probe)
        self.log.append(("renew", key, self.inner.now(), probe, result))
        return result

    async def snapshot(self) -> Mapping[str, tuple[int, int, float | None, bool]]:
        return await self.inner.snapshot()


def replay(log: list[LogEntry], config: HealthConfig) -> ReferenceHealth:
    """Replay a recorded log on the reference model, asserting every answer matches.

    A probe token must be handed out exactly where the model hands out the probe, and
    never twice.
    """
    model = ReferenceHealth(config)
    tokens: set[str] = set()
    for index, (op, key, now, argument, result) in enumerate(log):
        where = f"op #{index} {op}({key}) at {now}"
        if op == "admit":
            token = result.probe
            admitted, probe, until = model.admit(key, now, token)
            expected = (admitted, probe is not None, until)
            actual = (result.admitted, token is not None, result.until)
            assert _same(actual, expected), f"{where}: {actual} != {expected}"
            if token is not None:
                assert isinstance(token, str) and token not in tokens, f"{where}: {token!r}"
                tokens.add(token)
        elif op == "fail":
            retry_after, probe = argument
            expected_bench = model.fail(key, now, retry_after, probe)
            same = (result is None) == (expected_bench is None) and (
                result is None
                or expected_bench is None
                or (result.new == expected_bench.new and _same(result.until, expected_bench.until))
            )
            assert same, f"{where}: {result} != {expected_bench}"
        elif op == "success":
            model.success(key)
        elif op == "release":
            model.release(key, argument)
        elif op == "renew":
            expected_renewed = model.renew(key, now, argument)
            assert result == expected_renewed, f"{where}: {result} != {expected_renewed}"
        else:
            raise AssertionError(f"{where}: unknown op")
    return model


def _same(actual: object, expected: object) -> bool:
    """Equal, with times compared to a few ulps: the model multiplies a cooldown up step by
    step where the tracker raises the factor to a power, and the two round differently."""
    if isinstance(actual, float) and isinstance(expected, float):
        return math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)
    if isinstance(actual, tuple) and isinstance(expected, tuple):
        return len(actual) == len(expected) and all(map(_same, actual, expected))
    return actual == expected
