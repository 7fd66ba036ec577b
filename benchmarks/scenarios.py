"""Measurements, run inside one client process: latency, throughput, streams, memory.

Client CPU comes from `getrusage(RUSAGE_SELF)` (user + system, every thread of the
process: a peer's background threads count as its cost). The server runs in another
process, so none of its CPU is in these figures; `ServerStats` reads its share from the
mock's `/stats` endpoint.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

Call = Callable[[], Awaitable[int]]


def cpu_seconds() -> float:
    """CPU seconds (user + system) this process has used so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def max_rss_kib() -> int:
    """This process's peak resident set size, in KiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    """This process's resident set size right now, in KiB (from /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return 0
    return pages * resource.getpagesize() // 1024


def percentile(samples: list[float], fraction: float) -> float:
    """The `fraction` quantile (0.99 for p99) by the nearest-rank method."""
    ordered = sorted(samples)
    rank = max(1, round(fraction * len(ordered) + 0.5))
    return ordered[min(rank, len(ordered)) - 1]


class ServerStats:
    """Reads the mock server's CPU seconds and request count between two points."""

    def __init__(self, root: str) -> None:
        self._url = root + "/stats"
        self._session: aiohttp.ClientSession | None = None

    async def read(self) -> dict[str, Any]:
        """The server's counters now."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        async with self._session.get(self._url) as response:
            data: dict[str, Any] = await response.json()
        return data

    async def hold_streams(self) -> None:
        """From now on the server pauses every stream after its first content chunk."""
        await self._control("hold")

    async def release_held_streams(self) -> None:
        """Tell the server to finish every held stream (and stop holding new ones)."""
        await self._control("release")

    async def _control(self, action: str) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        base = self._url.removesuffix("/stats")
        async with self._session.post(f"{base}/control/{action}") as response:
            await response.read()

    async def aclose(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()


def _server_cpu_ms(before: dict[str, Any], after: dict[str, Any], calls: int) -> float:
    used = float(after["cpu_user_s"] + after["cpu_system_s"]) - float(
        before["cpu_user_s"] + before["cpu_system_s"]
    )
    return used * 1000 / max(calls, 1)


async def sequential(call: Call, calls: int, stats: ServerStats) -> dict[str, Any]:
    """`calls` awaited one after another: latency percentiles and CPU per call."""
    gc.collect()
    latencies: list[float] = []
    before = await stats.read()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - start)
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    after = await stats.read()
    return {
        "calls": calls,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "cpu_ms_per_call": cpu * 1000 / calls,
        "calls_per_s": calls / wall,
        "server_cpu_ms_per_call": _server_cpu_ms(before, after, calls),
        "server_requests": after["requests"] - before["requests"],
    }


async def concurrent(
    call: Call,
    calls: int,
    concurrency: int,
    stats: ServerStats,
    *,
    max_wall_s: float | None = None,
) -> dict[str, Any]:
    """`calls` calls with at most `concurrency` in flight: rate and CPU per call.

    `concurrency` workers each take the next call until `calls` were started, so every
    worker is busy from the first moment (one full wave when `calls == concurrency`).
    Failed calls are counted, not retried, and not included in the rate. After
    `max_wall_s` the calls still in flight are cancelled (`cut` says so) and the rate
    counts the calls done by then: a client that collapses under load cannot stall the run.
    """
    gc.collect()
    started = 0
    errors: list[str] = []
    results: list[int] = []

    async def worker() -> None:
        nonlocal started
        while started < calls:
            started += 1
            try:
                results.append(await call())
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    before = await stats.read()
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    cut = False
    try:
        async with asyncio.timeout(max_wall_s), asyncio.TaskGroup() as group:
            for _ in range(min(concurrency, calls)):
                group.create_task(worker())
    except TimeoutError:
        cut = True
    wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    after = await stats.read()
    done = len(results)
    return {
        "calls": calls,
        "concurrency": concurrency,
        "ok": done,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "cut": cut,
        "per_s": done / wall,
        "units": sum(results),
        "units_per_s": sum(results) / wall,
        "cpu_ms_per_call": cpu * 1000 / max(done, 1),
        "wall_s": wall,
        "server_cpu_ms_per_call": _server_cpu_ms(before, after, done),
        "server_requests": after["requests"] - before["requests"],
    }


async def estimate_cpu_s(call: Call, calls: int) -> float:
    """Client CPU seconds per call, from the second half of `calls` sequential calls.

    The first half only warms up: connections, lazy imports and caches.
    """
    for _ in range(max(calls // 2, 1)):
        await call()
    timed = max(calls - calls // 2, 1)
    cpu0 = cpu_seconds()
    for _ in range(timed):
        await call()
    return max((cpu_seconds() - cpu0) / timed, 1e-6)


def budgeted_calls(cpu_per_call_s: float, budget_s: float, low: int, high: int) -> int:
    """How many calls fit in `budget_s` of client CPU, within [low, high]."""
    return max(low, min(high, int(budget_s / cpu_per_call_s)))
