"""One benchmark client process: one contender, one round (or the memory or registry probe).

The harness (`benchmarks.run`) starts a fresh process per contender and round, so a peer's
import (LiteLLM's is large) never slows the garbage collector of the next contender, and
the memory probe's peak RSS is that contender's alone. The last line on stdout is
`RESULT <json>`; anything a library prints before it is ignored.

    python -m benchmarks.worker round --contender md-1 --port 8000
    python -m benchmarks.worker memory --contender raw --port 8000 --streams 1000
    python -m benchmarks.worker registry --port 8000 --targets 1000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.contenders import API_KEY, CONTENDERS, MODEL, PROMPT, Contender, Server
from benchmarks.scenarios import (
    ServerStats,
    budgeted_calls,
    concurrent,
    cpu_seconds,
    current_rss_kib,
    estimate_cpu_s,
    max_rss_kib,
    sequential,
)

RESULT_PREFIX = "RESULT "


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="One benchmark client process.")
    parser.add_argument("mode", choices=("round", "memory", "registry"))
    parser.add_argument("--contender", default="raw", choices=sorted(CONTENDERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--warmup", type=int, default=30, help="calls (and streams) to warm up")
    parser.add_argument("--seq-calls", type=int, default=500)
    parser.add_argument("--concurrency", default="64,512,4096", help="comma-separated levels")
    parser.add_argument("--stream-calls", type=int, default=300, help="most sequential streams")
    parser.add_argument("--stream-concurrency", type=int, default=64)
    parser.add_argument("--cell-seconds", type=float, default=2.0, help="client CPU per cell")
    parser.add_argument("--max-calls", type=int, default=20_000)
    parser.add_argument(
        "--max-cell-wall", type=float, default=30.0, help="cut a throughput cell after this"
    )
    parser.add_argument("--streams", type=int, default=1000, help="memory: streams held")
    parser.add_argument("--targets", type=int, default=1000, help="registry: size")
    parser.add_argument("--registry-calls", type=int, default=1000)
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- round


async def run_round(
    contender: Contender, args: argparse.Namespace, stats: ServerStats
) -> dict[str, Any]:
    """Every call and stream scenario, once, for one contender."""
    result: dict[str, Any] = {"throughput": {}}
    est_call = await estimate_cpu_s(contender.call, args.warmup)
    est_stream = await estimate_cpu_s(contender.stream, max(args.warmup // 3, 1))
    result["estimate_cpu_ms"] = {"call": est_call * 1000, "stream": est_stream * 1000}

    result["sequential"] = await sequential(contender.call, args.seq_calls, stats)

    for level in (int(part) for part in args.concurrency.split(",") if part):
        # At least one full wave; at 64, two, so the pool is reused at least once.
        low = level * 2 if level <= 64 else level
        calls = budgeted_calls(est_call, args.cell_seconds, low, max(args.max_calls, low))
        result["throughput"][str(level)] = await concurrent(
            contender.call, calls, level, stats, max_wall_s=args.max_cell_wall
        )

    streams = budgeted_calls(
        est_stream, args.cell_seconds / 2, min(20, args.stream_calls), args.stream_calls
    )
    result["stream_sequential"] = await sequential(contender.stream, streams, stats)
    level = args.stream_concurrency
    streams = budgeted_calls(
        est_stream, args.cell_seconds, level * 2, max(args.max_calls // 10, level * 2)
    )
    result["stream_concurrent"] = await concurrent(
        contender.stream, streams, level, stats, max_wall_s=args.max_cell_wall
    )
    return result


# --------------------------------------------------------------------------- memory


async def run_memory(
    contender: Contender, args: argparse.Namespace, stats: ServerStats
) -> dict[str, Any]:
    """RSS with up to `args.streams` streams held open at once, each past its first chunk.

    A client whose connection pool is smaller than `args.streams` cannot have them all in
    flight (the held streams never give their connections back): once no new stream
    arrives for `STALL_S`, RSS is read with what is in flight, and `in_flight` says how
    many that was.
    """
    for _ in range(args.warmup):
        await contender.call()
        await contender.stream()
    gc.collect()
    baseline = current_rss_kib()
    count = args.streams
    ready = 0
    progress = asyncio.Event()
    go = asyncio.Event()

    async def after_first() -> None:
        nonlocal ready
        ready += 1
        progress.set()
        await go.wait()

    await stats.hold_streams()
    started = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(contender.stream(after_first)) for _ in range(count)]
            await _wait_for_streams(progress, lambda: ready >= count)
            in_flight, open_s = ready, time.perf_counter() - started
            gc.collect()
            held = current_rss_kib()
            # Measured: close every stream (cancelling exercises each client's cleanup,
            # and reading 20,000 chunks through a slow client would only cost time).
            for task in tasks:
                task.cancel()
    finally:
        go.set()
        await stats.release_held_streams()
    return {
        "streams": count,
        "in_flight": in_flight,
        "cancelled": sum(task.cancelled() for task in tasks),
        "open_s": open_s,
        "baseline_rss_kib": baseline,
        "held_rss_kib": held,
        "rss_per_stream_kib": (held - baseline) / max(in_flight, 1),
        "peak_rss_kib": max_rss_kib(),
    }


STALL_S = 3.0
"""Memory probe: no new stream in flight for this long means the client's pool is full."""


async def _wait_for_streams(progress: asyncio.Event, done: Callable[[], bool]) -> None:
    while not done():
        progress.clear()
        try:
            async with asyncio.timeout(STALL_S):
                await progress.wait()
        except TimeoutError:
            return


# --------------------------------------------------------------------------- registry


async def run_registry(args: argparse.Namespace, stats: ServerStats) -> dict[str, Any]:
    """Per-call CPU through a registry of `args.targets` providers and aliases vs one."""
    from majordomo_async import Registry

    dsn = f"openai+http://{API_KEY}@{args.host}:{args.port}/v1"
    size = args.targets
    small = Registry(env={"LLM_BENCH": dsn})
    big = Registry(env={f"LLM_P{index}": dsn for index in range(size)})
    try:
        for index in range(size):
            big.register_alias(f"a{index}", f"p{index}/{MODEL}")
        aliases = [f"a{index}" for index in range(size)]
        # Every target called once: the chain cache and the health store hold `size` entries.
        for alias in aliases:
            await big.parse(alias).generate(PROMPT)
        await small.parse(f"bench/{MODEL}").generate(PROMPT)

        async def small_call() -> None:
            await small.parse(f"bench/{MODEL}").generate(PROMPT)

        position = 0

        async def big_call() -> None:
            nonlocal position
            position = (position + 1) % size
            await big.parse(aliases[position]).generate(PROMPT)

        async def big_one_call() -> None:
            await big.parse(aliases[size // 2]).generate(PROMPT)

        calls_by_name = {
            "one target": small_call,
            f"{size} targets, calling one alias": big_one_call,
            f"{size} targets, rotating over all aliases": big_call,
        }
        samples: dict[str, list[float]] = {name: [] for name in calls_by_name}
        calls = args.registry_calls
        for _ in range(3):  # alternate, so drift hits every variant alike
            for name, call in calls_by_name.items():
                samples[name].append(await _cpu_us_per_call(call, calls))
        return {"calls": calls, "targets": size, "cpu_us_per_call": samples}
    finally:
        await small.aclose()
        await big.aclose()


async def _cpu_us_per_call(call: Callable[[], Awaitable[None]], calls: int) -> float:
    gc.collect()
    cpu0 = cpu_seconds()
    for _ in range(calls):
        await call()
    return (cpu_seconds() - cpu0) * 1e6 / calls


# --------------------------------------------------------------------------- entry point


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    server = Server(args.host, args.port)
    stats = ServerStats(server.root)
    try:
        if args.mode == "registry":
            return await run_registry(args, stats)
        limit = 0 if args.mode == "memory" else None
        contender = CONTENDERS[args.contender](server, connection_limit=limit)
        await contender.start()
        try:
            if args.mode == "memory":
                return await run_memory(contender, args, stats)
            return await run_round(contender, args, stats)
        finally:
            await contender.aclose()
    finally:
        await stats.aclose()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: print `RESULT <json>` as the last line."""
    args = _parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    runner: Callable[[Any], Any] = asyncio.run
    if args.loop == "uvloop":
        runner = importlib.import_module("uvloop").run
    started = time.perf_counter()
    result = runner(_main(args))
    result["wall_s"] = time.perf_counter() - started
    result["worker_peak_rss_kib"] = max_rss_kib()
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
