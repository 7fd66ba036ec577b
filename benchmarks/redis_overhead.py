"""Per-call overhead of the Redis health store against the in-process one.

Runs the same chains over an `InMemoryHealthStore` and a `RedisHealthStore` (no HTTP:
the models answer or fail at once, so the store's cost is what differs):

- healthy: a one-target chain whose target answers (the hot path: no Redis round trip);
- benched head: a two-target chain whose head is benched, so it is skipped (answered
  from the local view: no round trip either);
- failing head: a two-target chain whose head fails every call with a transient error
  and is never benched (a huge threshold), so each call records one failure: one Redis
  round trip per call.

Reports the median of several rounds in microseconds per call, and the difference.
Without `--url`, it starts a private redis-server (Debian's `redis-server`) on a free
loopback port and stops it afterwards.

    python benchmarks/redis_overhead.py [--url redis://127.0.0.1:6379/0] [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from majordomo_async import (
    Capabilities,
    Chain,
    ChainConfig,
    HealthConfig,
    HealthStore,
    HealthTracker,
    InMemoryHealthStore,
    OverloadedError,
    RedisHealthStore,
    Request,
    Response,
    Target,
)
from majordomo_async._clock import MonotonicClock


class Instant:
    """Answers at once with a prebuilt response, or fails at once with a 503."""

    def __init__(self, key: str, *, fail: bool = False) -> None:
        self.key = key
        self.fail = fail
        self.response = Response(text="ok", model=key)
        self._capabilities = Capabilities()

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    async def generate(self, request: Any, *options: Any) -> Response:
        if self.fail:
            raise OverloadedError("down", provider="p", model="m", status=503)
        return self.response

    async def stream(self, request: Any, *options: Any) -> Any:
        raise NotImplementedError


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server on a free loopback port, stopped on exit; yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.01)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.kill()
            process.wait()


class Scenario:
    """A chain to call, the health config of its store, and a target to bench first."""

    def __init__(self, config: HealthConfig, head_fails: bool, *, bench: bool = False) -> None:
        self.config = config
        self.head_fails = head_fails
        self.bench = bench

    def chain(self, store: HealthStore) -> Chain:
        tracker = HealthTracker(self.config, clock=MonotonicClock(), store=store)
        targets = [Target("p/head", Instant("p/head", fail=self.head_fails))]
        if self.head_fails:
            targets.append(Target("p/tail", Instant("p/tail")))
        return Chain(targets, tracker, ChainConfig(transient_retries=-1))


SCENARIOS = {
    "healthy (1 target)": Scenario(HealthConfig(), head_fails=False),
    "benched head skipped": Scenario(
        HealthConfig(failure_threshold=1, base_cooldown=3600, max_cooldown=3600),
        head_fails=True,
        bench=True,
    ),
    # A threshold no run reaches: the head fails every call and is never benched.
    "failing head (1 failure/call)": Scenario(
        HealthConfig(failure_threshold=10**9), head_fails=True
    ),
}


async def per_call_us(call: Callable[[Request], Awaitable[Any]], calls: int) -> float:
    request = Request("hello")
    start = time.perf_counter()
    for _ in range(calls):
        await call(request)
    return (time.perf_counter() - start) / calls * 1e6


async def measure(scenario: Scenario, store: HealthStore, calls: int) -> float:
    """µs per call of the scenario's chain over `store`."""
    chain = scenario.chain(store)
    if scenario.bench:
        await store.record_failure("p/head", None)
    await per_call_us(chain.generate, max(calls // 10, 1))  # warm up (and fill the view)
    return await per_call_us(chain.generate, calls)


async def main(url: str, calls: int, rounds: int) -> None:
    samples: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, scenario in SCENARIOS.items():
            memory = InMemoryHealthStore(scenario.config, MonotonicClock())
            samples.setdefault((name, "in-process"), []).append(
                await measure(scenario, memory, calls)
            )
            prefix = f"bench:{uuid.uuid4().hex[:8]}:"
            async with RedisHealthStore(url, scenario.config, prefix=prefix) as redis:
                result = await measure(scenario, redis, calls)
                if redis.degraded:
                    raise RuntimeError("Redis did not answer during the run")
            samples.setdefault((name, "redis"), []).append(result)

    print(f"{calls} calls x {rounds} rounds; median us/call (min-max)")
    print(f"  {'scenario':<30} {'in-process':>20} {'redis':>20} {'overhead':>9}")
    for name in SCENARIOS:
        cells = []
        medians = []
        for kind in ("in-process", "redis"):
            values = samples[name, kind]
            medians.append(statistics.median(values))
            cells.append(f"{medians[-1]:7.2f} ({min(values):5.1f}-{max(values):5.1f})")
        print(f"  {name:<30} {cells[0]:>20} {cells[1]:>20} {medians[1] - medians[0]:+9.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a Redis URL (default: start a private redis-server)")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.url:
        asyncio.run(main(args.url, args.calls, args.rounds))
    else:
        with private_redis() as url:
            asyncio.run(main(url, args.calls, args.rounds))
