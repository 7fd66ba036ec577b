"""Per-call overhead of the failover chain itself, in process (no network, no provider).

Compares awaiting a trivial model directly with awaiting it through a one-target chain,
through a three-target chain whose two heads are benched, and through a two-target chain
whose head fails every call with a 503 (judged, counted by the health tracker, recorded
on the answer; never benched, never retried: the harness's failover row without HTTP).
Reports the median of several rounds and the spread, in microseconds per call.

    python benchmarks/chain_overhead.py [--calls 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from majordomo_async import (
    Capabilities,
    Chain,
    ChainConfig,
    HealthConfig,
    HealthTracker,
    OverloadedError,
    Request,
    Response,
    Target,
)

RESPONSE_TEMPLATE = Response(text="ok")


class InstantModel:
    """Answers at once with a prebuilt response (the cheapest possible provider)."""

    def __init__(self, key: str) -> None:
        self.response = Response(text="ok", model=key)
        # Built once, as the real providers do: the chain reads it before every attempt.
        self._capabilities = Capabilities()

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def generate(self, request: Any, *options: Any) -> Response:
        return self.response

    async def stream(self, request: Any, *options: Any) -> Any:
        raise NotImplementedError


class OverloadedModel(InstantModel):
    """Fails every call as a provider answering 503 would (a new error each time)."""

    async def generate(self, request: Any, *options: Any) -> Response:
        raise OverloadedError(
            "503 server_error: overloaded", provider="p", model="fail", status=503
        )


async def per_call_us(call: Any, calls: int) -> float:
    request = Request("hello")
    start = time.perf_counter()
    for _ in range(calls):
        await call(request)
    return (time.perf_counter() - start) / calls * 1e6


async def main(calls: int, rounds: int) -> None:
    tracker = HealthTracker(
        HealthConfig(failure_threshold=1, base_cooldown=3600, max_cooldown=3600)
    )
    direct = InstantModel("p/c")
    one = Chain([Target("p/c", direct)], tracker, ChainConfig())
    three = Chain(
        [Target(key, InstantModel(key)) for key in ("p/a", "p/b")] + [Target("p/c", direct)],
        tracker,
        ChainConfig(),
    )
    await tracker.report_failure("p/a")
    await tracker.report_failure("p/b")
    failover = Chain(
        [Target("p/fail", OverloadedModel("p/fail")), Target("p/c", direct)],
        HealthTracker(HealthConfig(failure_threshold=1_000_000_000)),
        ChainConfig(transient_retries=-1),
    )

    contenders = {
        "model.generate (floor)": direct.generate,
        "1-target chain": one.generate,
        "3-target chain, 2 benched": three.generate,
        "2-target chain, 503 head": failover.generate,
    }
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            results[name].append(await per_call_us(call, calls))

    floor = statistics.median(results["model.generate (floor)"])
    print(f"{calls} calls x {rounds} rounds; median us/call (min-max), overhead vs floor")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(
            f"  {name:<28} {median:7.2f} ({min(samples):.2f}-{max(samples):.2f})"
            f"   +{median - floor:6.2f} us"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rounds))
