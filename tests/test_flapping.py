"""A provider that goes down and comes back, on a fake clock, with the default health config.

The promises (README, Health): while the head is down the chain answers from the
fallback and probes the head once per expired cooldown, never several callers at once;
it is back on the head within 30 s of its recovery; a head that stays down for an hour
costs at most a few probes a minute.
"""

from __future__ import annotations

from itertools import pairwise

import anyio
import pytest

from majordomo_async import (
    Capabilities,
    Chain,
    ChainConfig,
    HealthConfig,
    HealthTracker,
    ManualClock,
    OverloadedError,
    Request,
    Response,
    Stream,
    Target,
    Usage,
)

CALL_EVERY = 3.0
"""Seconds between calls: a service with steady, light traffic."""


class Outage:
    """A model that answers 503 while `down_from <= now < up_at`, and records its attempts."""

    def __init__(self, key: str, clock: ManualClock, down_from: float, up_at: float) -> None:
        self.key = key
        self.clock = clock
        self.down_from = down_from
        self.up_at = up_at
        self.attempts: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def generate(self, request: Request | str, *options: object) -> Response:
        now = self.clock.now()
        self.attempts.append(now)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await anyio.lowlevel.checkpoint()  # let concurrent callers interleave
        finally:
            self.in_flight -= 1
        if self.down_from <= now < self.up_at:
            raise OverloadedError("down", provider="head", model="m", status=503)
        return Response(text="head", model=self.key, usage=Usage(1, 1))

    async def stream(self, request: Request | str, *options: object) -> Stream:
        raise NotImplementedError


class Fallback:
    key = "tail/m"
    capabilities = Capabilities()

    async def generate(self, request: Request | str, *options: object) -> Response:
        return Response(text="tail", model=self.key, usage=Usage(1, 1))

    async def stream(self, request: Request | str, *options: object) -> Stream:
        raise NotImplementedError


def chain_over(head: Outage, clock: ManualClock) -> Chain:
    tracker = HealthTracker(HealthConfig(), clock=clock)
    return Chain(
        [Target("head/m", head), Target("tail/m", Fallback())],  # type: ignore[arg-type]
        tracker,
        ChainConfig(),
    )


async def run_calls(chain: Chain, clock: ManualClock, until: float) -> list[tuple[float, str]]:
    answers: list[tuple[float, str]] = []
    while clock.now() < until:
        started = clock.now()
        response = await chain.generate("hi")
        answers.append((started, response.model))
        clock.advance(CALL_EVERY - (clock.now() - started))
    return answers


@pytest.mark.parametrize("extra", [0.0, 2.5, 7.0, 11.5, 16.0, 19.5, 24.0, 29.5, 33.0, 38.5])
async def test_a_minute_long_outage_is_served_by_the_fallback_and_recovers_fast(
    clock: ManualClock, extra: float
) -> None:
    """`extra` moves the recovery against the probe schedule, worst cases included."""
    up_at = 70 + extra
    head = Outage("head/m", clock, down_from=10, up_at=up_at)
    chain = chain_over(head, clock)
    answers = await run_calls(chain, clock, until=up_at + 100)

    during = [model for at, model in answers if 10 <= at < up_at]
    assert set(during) == {"tail/m"}, "every call during the outage was answered"
    back = min(at for at, model in answers if at >= up_at and model == "head/m")
    assert back - up_at <= 30, f"back on the head {back - up_at:.1f} s after it recovered"
    assert all(model == "head/m" for at, model in answers if at >= back)

    # While down, the head saw its first call (with one retry) and then one probe per
    # expired cooldown: 1, 2, 4, 8, 16, 20, 20... s apart at least.
    down_attempts = [at for at in head.attempts if 10 <= at < up_at]
    probes = down_attempts[2:]
    gaps = [later - earlier for earlier, later in pairwise(probes)]
    assert all(gap >= 1.0 for gap in gaps), gaps
    assert len(probes) <= 5 + (up_at - 10 - 31) / 20 + 1


async def test_an_hour_long_outage_costs_a_few_probes_a_minute(clock: ManualClock) -> None:
    head = Outage("head/m", clock, down_from=0, up_at=math_inf())
    chain = chain_over(head, clock)
    answers = await run_calls(chain, clock, until=3600)

    assert {model for _, model in answers} == {"tail/m"}
    per_minute = [
        sum(1 for at in head.attempts if minute * 60 <= at < (minute + 1) * 60)
        for minute in range(60)
    ]
    # After the first two minutes the cooldown has reached its cap.
    assert max(per_minute[2:]) <= 3, per_minute
    assert sum(per_minute) <= 3 * 60 + 10


@pytest.mark.parametrize("callers", [8])
async def test_only_one_caller_probes_an_expired_cooldown(clock: ManualClock, callers: int) -> None:
    head = Outage("head/m", clock, down_from=0, up_at=math_inf())
    chain = chain_over(head, clock)
    for _ in range(120):
        async with anyio.create_task_group() as tg:
            for _ in range(callers):
                tg.start_soon(chain.generate, "hi")
        clock.advance(CALL_EVERY)
    # Apart from the first burst (before the target was benched), one attempt per instant.
    later = [at for at in head.attempts if at > 0]
    assert len(later) == len(set(later)), "two callers probed the same expired cooldown"


def math_inf() -> float:
    return float("inf")
