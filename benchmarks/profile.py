"""Profile majordomo's 1-target chain against the mock server: calls, then streams.

    python -m benchmarks.profile [--calls 5000] [--streams 1000] [--top 20]

Runs cProfile around a loop of sequential calls (then of 20-chunk streams) through a
one-target chain, and prints the functions with the most own time (`tottime`), first
inside `majordomo_async`, then over everything, and the cumulative view of ours. Shares
are of the whole profiled time, event loop and aiohttp included. cProfile inflates
function-call-heavy code; use the shares to rank, the harness to measure.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.contenders import Majordomo, Server
from benchmarks.run import MockServer

OURS = "majordomo_async"


async def _profile(call: Callable[[], Awaitable[int]], count: int) -> pstats.Stats:
    for _ in range(max(count // 10, 10)):  # warm up: connections, lazy imports, caches
        await call()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        await call()
    profiler.disable()
    return pstats.Stats(profiler)


def _where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    short = filename[filename.rindex(OURS) :] if OURS in filename else os.path.basename(filename)
    return f"{name} ({short}:{line})"


def _print(stats: pstats.Stats, title: str, count: int, top: int) -> None:
    # pstats keeps its table in an attribute typeshed does not declare.
    table: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values()) or 1.0
    print(f"\n## {title}: {count} calls, {total / count * 1e6:.0f} us profiled per call\n")
    ours = {func: entry for func, entry in table.items() if OURS in func[0]}
    own = sum(entry[2] for entry in ours.values())
    print(f"own time inside {OURS}: {own / total:.1%} of the total\n")
    for heading, rows, column in (
        (f"own time, {OURS}", ours, 2),
        ("own time, everything", table, 2),
        (f"cumulative time, {OURS}", ours, 3),
    ):
        print(f"### {heading}\n")
        print("| share | us/call | calls/call | function |\n|---|---|---|---|")
        ranked = sorted(rows.items(), key=lambda item: item[1][column], reverse=True)[:top]
        for func, entry in ranked:
            print(
                f"| {entry[column] / total:.1%} | {entry[column] / count * 1e6:.1f} "
                f"| {entry[1] / count:.1f} | {_where(func)} |"
            )
        print()


async def _main(args: argparse.Namespace, port: int) -> None:
    contender = Majordomo(Server("127.0.0.1", port))
    await contender.start()
    try:
        _print(await _profile(contender.call, args.calls), "generate", args.calls, args.top)
        _print(await _profile(contender.stream, args.streams), "stream", args.streams, args.top)
    finally:
        await contender.aclose()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    server = MockServer(chunks=20, cpu=allowed[1] if len(allowed) > 1 else None)
    if len(allowed) > 1:
        os.sched_setaffinity(0, {allowed[0]})
    try:
        asyncio.run(_main(args, server.port))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
