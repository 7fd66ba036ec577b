"""2,000+ concurrent calls through shared chains with randomly failing targets.

Afterwards the tracker's every answer and its final state match the reference model,
every attempt is accounted for, and nothing is left running.
"""

from __future__ import annotations

import contextvars
import random
from typing import Any

import anyio
import pytest

from majordomo_async import (
    AuthenticationError,
    Capabilities,
    ChainConfig,
    ChainExhaustedError,
    HealthConfig,
    InMemoryHealthStore,
    ManualClock,
    ModelNotFoundError,
    OverloadedError,
    RateLimitError,
    Registry,
    Request,
    Response,
    Usage,
)

from .helpers.reference import RecordingStore, replay

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

CALLS = 2_400
attempts_in_this_call: contextvars.ContextVar[list[str]] = contextvars.ContextVar("attempts")


class RandomModel:
    """Fails at random (seeded): mostly 503s, some 429s with hints, rare permanent errors."""

    def __init__(self, key: str, rng: random.Random, clock: ManualClock, fail_rate: float):
        self.key = key
        self.rng = rng
        self.clock = clock
        self.fail_rate = fail_rate
        self.calls = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def generate(self, request: Any, *options: Any) -> Response:
        self.calls += 1
        attempts_in_this_call.get().append(self.key)
        await self.clock.sleep(self.rng.choice((0.0, 0.001, 0.003)))
        roll = self.rng.random()
        provider, _, model = self.key.partition("/")
        if roll < self.fail_rate:
            raise OverloadedError("busy", provider=provider, model=model, status=503)
        if roll < self.fail_rate + 0.05:
            raise RateLimitError(
                "slow down", provider=provider, model=model, status=429, retry_after=0.05
            )
        if roll < self.fail_rate + 0.07:
            raise ModelNotFoundError("gone", provider=provider, model=model, status=404)
        if roll < self.fail_rate + 0.075:
            raise AuthenticationError("bad key", provider=provider, model=model, status=401)
        return Response(text="ok", model=self.key, usage=Usage(1, 1))

    async def stream(self, request: Any, *options: Any) -> Any:
        raise NotImplementedError


class RandomProvider:
    def __init__(self, rng: random.Random, clock: ManualClock) -> None:
        self.rng = rng
        self.clock = clock
        self.models: dict[str, RandomModel] = {}
        self.rates = {"a": 0.6, "b": 0.3, "c": 0.1}

    @property
    def name(self) -> str:
        return "r"

    def model(self, model_id: str) -> RandomModel:
        if model_id not in self.models:
            self.models[model_id] = RandomModel(
                f"r/{model_id}", self.rng, self.clock, self.rates[model_id]
            )
        return self.models[model_id]


async def test_thousands_of_concurrent_calls_match_the_reference_model() -> None:
    """2,400 concurrent calls: tracker answers equal the reference, attempts all counted."""
    clock = ManualClock()
    health = HealthConfig(failure_threshold=2, base_cooldown=0.5, max_cooldown=4)
    store = RecordingStore(InMemoryHealthStore(health, clock))
    provider = RandomProvider(random.Random(20261123), clock)
    outcomes_by_call: dict[int, Response | BaseException] = {}
    attempts: dict[int, list[str]] = {}

    async with Registry(
        env={},
        clock=clock,
        health=health,
        health_store=store,
        chain=ChainConfig(max_retry_wait=0.5, max_recovery_wait=1.0),
    ) as registry:
        registry.register_provider(provider)
        chains = [registry.parse(spec) for spec in ("r/a,r/b,r/c", "r/b,r/c", "r/c,r/a")]

        async def call(index: int) -> None:
            mine: list[str] = []
            attempts_in_this_call.set(mine)
            attempts[index] = mine
            try:
                outcomes_by_call[index] = await chains[index % 3].generate(Request(f"q{index}"))
            except (ChainExhaustedError, AuthenticationError) as exc:
                outcomes_by_call[index] = exc

        # Two waves. Before the second, every target is benched and its cooldown allowed to
        # expire, so the second wave starts with all targets half-open: probes race too.
        for wave in (range(CALLS // 2), range(CALLS // 2, CALLS)):
            async with anyio.create_task_group() as tg:
                for index in wave:
                    tg.start_soon(call, index)
            for key in ("r/a", "r/b", "r/c"):
                while not await registry.health.report_failure(key):
                    pass
            clock.advance(health.max_cooldown + 1)

        reference = replay(store.log, health)
        assert dict(await store.snapshot()) == reference.snapshot()

    assert len(outcomes_by_call) == CALLS
    outcomes = [outcomes_by_call[index] for index in range(CALLS)]
    answered = [o for o in outcomes if isinstance(o, Response)]
    exhausted = [o for o in outcomes if isinstance(o, ChainExhaustedError)]
    assert answered and exhausted  # the run exercised both endings
    assert any(
        entry[4] is not None and entry[4].probe for entry in store.log if entry[0] == "admit"
    )

    # Per call, every model call shows up as a failed attempt, in order, or as the answer.
    for outcome, made in zip(outcomes, [attempts[i] for i in range(CALLS)], strict=True):
        if isinstance(outcome, Response):
            tried = [f.key for f in outcome.failed_attempts if not f.skipped]
            assert made == [*tried, outcome.model]
            # No target was attempted more than retries+1 times within one call.
            assert all(tried.count(key) <= 2 for key in tried)
        elif isinstance(outcome, ChainExhaustedError):
            assert made == [f.key for f in outcome.failures if not f.skipped]
        else:
            assert made[-1] == outcome.key  # fail-fast: the auth error's own target
            assert len(made) == 1 or "after earlier attempts" in "".join(outcome.__notes__)
