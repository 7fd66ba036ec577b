"""Balanced groups, limits and hedging against a local upstream: throughput, p99, the share
of calls each member gets, and the slots still held after many calls cancelled at random.

One mock server process (`benchmarks.mock_server`) plays four upstreams, told apart by
provider name and model id: `fast` answers after 10 ms, `mid` after 30 ms, `slow` after
100 ms, and `down` answers every request with a 503. The group under test is

    fast/m_slow-10ms|mid/m_slow-30ms|slow/m_slow-100ms|down/m_fail-503

Two measurements:

1. Balance. For each strategy, `--calls` generate calls with `--concurrency` in flight:
   calls per second, p50 and p99 latency, the share of answers per member, and how many
   requests the failing member got (each failed over within its call; the warm-up wave
   included). A one-target chain on `fast` runs beside them as the reference.
2. Leaks. `--leak-calls` calls (100,000 by default) on the same group with
   `max_concurrency` on every member, hedging after 5 ms, a mix of generates and
   streams (read to the end, closed after the first event, or dropped unclosed for the
   garbage collector), and about a quarter of all calls cancelled at a random moment.
   Afterwards every limiter must have no slot in use and nobody waiting, and no member a
   call in flight: the run exits with status 1 otherwise.

    python -m benchmarks.routing [--calls 4000] [--concurrency 32] [--leak-calls 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anyio  # noqa: E402

from benchmarks.run import MockServer  # noqa: E402
from benchmarks.scenarios import percentile  # noqa: E402
from majordomo_async import CallInfo, ChainConfig, Hooks, Registry  # noqa: E402

MEMBERS: Final = {
    "fast": "fast/m_slow-10ms",
    "mid": "mid/m_slow-30ms",
    "slow": "slow/m_slow-100ms",
    "down": "down/m_fail-503",
}
GROUP: Final = "|".join(MEMBERS.values())
REFERENCE: Final = MEMBERS["fast"]
STRATEGIES: Final = ("least-busy", "latency", "random", "ordered")
LEAK_LIMIT: Final = 16
"""`max_concurrency` of every member in the leak run."""
HEDGE_AFTER: Final = 0.005
"""`hedge_after` of the leak run."""
BALANCE_HEDGE: Final = 0.04
"""`hedge_after` of the last balance row: past the fast and mid members' 10 and 30 ms, short of the
slow member's 100 ms."""
CANCEL_WITHIN: Final = 0.1
"""A cancelled call of the leak run is cancelled this many seconds after it starts, at most."""


def registry_for(port: int, **options: Any) -> Registry:
    """A Registry with one provider per member, all on the mock server."""
    dsn = f"openai+http://127.0.0.1:{port}/v1"
    return Registry(env={f"LLM_{name.upper()}": dsn for name in MEMBERS}, **options)


# --------------------------------------------------------------------------- balance


class HedgeCounter(Hooks):
    """Counts hedges started and won."""

    def __init__(self) -> None:
        self.started = 0
        self.won = 0

    def hedge_started(self, call: CallInfo, key: str, *, after: float) -> None:
        self.started += 1

    def hedge_won(self, call: CallInfo, key: str, *, loser: str) -> None:
        self.won += 1


async def balance(
    port: int,
    spec: str,
    strategy: str,
    calls: int,
    concurrency: int,
    hedge_after: float | None = None,
) -> dict[str, Any]:
    """`calls` generates of `spec` with `concurrency` in flight."""
    config = ChainConfig(strategy=strategy, hedge_after=hedge_after)  # type: ignore[arg-type]
    hedges = HedgeCounter()
    async with registry_for(port, hooks=[hedges]) as registry:
        chain = registry.parse(spec, config=config)
        latencies: list[float] = []
        answered: Counter[str] = Counter()
        failed_over = Counter[str]()

        async def warm_up() -> None:
            for failure in (await chain.generate("hi")).failed_attempts:
                if not failure.skipped:
                    failed_over[failure.key] += 1

        async with anyio.create_task_group() as warm:  # one wave: the connections open
            for _ in range(concurrency):
                warm.start_soon(warm_up)
        errors: list[str] = []
        started = 0

        async def worker() -> None:
            nonlocal started
            while started < calls:
                started += 1
                begin = time.perf_counter()
                try:
                    response = await chain.generate("hi")
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                latencies.append(time.perf_counter() - begin)
                answered[response.model] += 1
                for failure in response.failed_attempts:
                    if not failure.skipped:
                        failed_over[failure.key] += 1

        gc.collect()
        wall0 = time.perf_counter()
        async with anyio.create_task_group() as group:
            for _ in range(concurrency):
                group.start_soon(worker)
        wall = time.perf_counter() - wall0
        snapshot = await registry.health.snapshot()
    return {
        "spec": spec,
        "strategy": strategy,
        "hedge_after": hedge_after,
        "hedges_started": hedges.started,
        "hedges_won": hedges.won,
        "calls": calls,
        "concurrency": concurrency,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "share": {key: answered[key] / max(len(latencies), 1) for key in spec.split("|")},
        "failed_over": dict(failed_over),
        "states": {key: health.state for key, health in snapshot.items()},
    }


# --------------------------------------------------------------------------- leaks


async def leaks(port: int, calls: int, concurrency: int, seed: int) -> dict[str, Any]:
    """`calls` calls with random cancellations; what is still held afterwards."""
    rng = random.Random(seed)
    hedges = HedgeCounter()
    outcomes: Counter[str] = Counter()
    first_errors: dict[str, str] = {}
    async with registry_for(port, hooks=[hedges]) as registry:
        for name in MEMBERS:
            registry.set_limits(name, max_concurrency=LEAK_LIMIT)
        chain = registry.parse(GROUP, config=ChainConfig(hedge_after=HEDGE_AFTER))
        peak_in_use = 0

        async def one(kind: str) -> None:
            nonlocal peak_in_use
            if kind == "generate":
                await chain.generate("hi")
                return
            stream = await chain.stream("hi")
            in_use = sum(state.in_use for state in registry.health.limits.snapshot().values())
            peak_in_use = max(peak_in_use, in_use)
            if kind == "stream-drop":
                await anext(aiter(stream))
                return  # unclosed: the garbage collector finalizes it
            async with stream:
                async for _ in stream:
                    if kind == "stream-early":
                        break

        async def call() -> None:
            roll = rng.random()
            kind = (
                "generate"
                if roll < 0.7
                else "stream"
                if roll < 0.8
                else "stream-early"
                if roll < 0.9
                else "stream-drop"
            )
            cancel_after = rng.uniform(0, CANCEL_WITHIN) if rng.random() < 0.25 else None
            try:
                with anyio.CancelScope() as scope:
                    if cancel_after is not None:
                        scope.deadline = anyio.current_time() + cancel_after
                    await one(kind)
                outcomes["cancelled" if scope.cancelled_caught else kind] += 1
            except Exception as exc:
                outcomes[type(exc).__name__] += 1
                first_errors.setdefault(type(exc).__name__, str(exc)[:3000])

        started = 0

        async def worker() -> None:
            nonlocal started
            while started < calls:
                started += 1
                await call()

        wall0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)  # the dropped streams say so
            async with anyio.create_task_group() as group:
                for _ in range(concurrency):
                    group.start_soon(worker)
            gc.collect()
            await anyio.sleep(0.1)  # the finalizers' releases hand slots to no one now
        wall = time.perf_counter() - wall0
        limits = registry.health.limits.snapshot()
        snapshot = await registry.health.snapshot()
    return {
        "calls": calls,
        "concurrency": concurrency,
        "wall_s": wall,
        "outcomes": dict(outcomes),
        "first_errors": first_errors,
        "hedges_started": hedges.started,
        "hedges_won": hedges.won,
        "peak_slots_in_use_seen": peak_in_use,
        "slots_in_use": {name: state.in_use for name, state in limits.items()},
        "waiting": {name: state.waiting for name, state in limits.items()},
        "in_flight": {key: health.in_flight for key, health in snapshot.items()},
    }


def leaked(result: dict[str, Any]) -> list[str]:
    """What the leak run left held (empty when nothing)."""
    return [
        f"{what} {name}: {count}"
        for what in ("slots_in_use", "waiting", "in_flight")
        for name, count in result[what].items()
        if count
    ]


# --------------------------------------------------------------------------- report


def report(rows: list[dict[str, Any]], leak: dict[str, Any] | None) -> str:
    """The results as Markdown."""
    names = list(MEMBERS)
    lines = [
        "| spec | strategy | calls/s | p50 ms | p99 ms | "
        + " | ".join(f"{name} share" for name in names)
        + " | requests to down | hedges started (won) |",
        "|---" * (7 + len(names)) + "|",
    ]
    for row in rows:
        shares = [row["share"].get(MEMBERS[name]) for name in names]
        lines.append(
            f"| {'group' if '|' in row['spec'] else row['spec']} | {row['strategy']}"
            + (f", hedge after {row['hedge_after'] * 1000:.0f} ms " if row["hedge_after"] else " ")
            + f"| {row['per_s']:,.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
            + " | ".join("" if share is None else f"{share:.1%}" for share in shares)
            + f" | {row['failed_over'].get(MEMBERS['down'], 0)} "
            + f"| {row['hedges_started']:,} ({row['hedges_won']:,}) |"
        )
    if leak is not None:
        held = leaked(leak)
        lines += [
            "",
            f"Leak run: {leak['calls']:,} calls at concurrency {leak['concurrency']} in "
            f"{leak['wall_s']:.1f} s, max_concurrency {LEAK_LIMIT} per member, hedging after "
            f"{HEDGE_AFTER * 1000:.0f} ms ({leak['hedges_started']:,} hedges started, "
            f"{leak['hedges_won']:,} won).",
            "Outcomes: "
            + ", ".join(f"{kind} {count:,}" for kind, count in sorted(leak["outcomes"].items()))
            + ".",
            "Afterwards: "
            + (", ".join(held) if held else "no slot in use, nobody waiting, no call in flight")
            + ".",
        ]
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000, help="calls per balance row")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--leak-calls", type=int, default=100_000)
    parser.add_argument("--leak-concurrency", type=int, default=256)
    parser.add_argument("--seed", type=int, default=20261207)
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    server = MockServer(chunks=8, cpu=None)
    try:
        rows = [await balance(server.port, REFERENCE, "ordered", args.calls, args.concurrency)]
        rows += [
            await balance(server.port, GROUP, strategy, args.calls, args.concurrency)
            for strategy in STRATEGIES
        ]
        rows.append(
            await balance(
                server.port, GROUP, "least-busy", args.calls, args.concurrency, BALANCE_HEDGE
            )
        )
        leak = None
        if args.leak_calls:
            leak = await leaks(server.port, args.leak_calls, args.leak_concurrency, args.seed)
    finally:
        server.stop()
    return {"balance": rows, "leak": leak}


def main(argv: list[str] | None = None) -> int:
    """Run both measurements, print Markdown; status 1 if anything leaked or failed."""
    args = _parse_args(argv)
    results = asyncio.run(_main(args))
    print(report(results["balance"], results["leak"]))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    errors = [row["first_error"] for row in results["balance"] if row["errors"]]
    held = leaked(results["leak"]) if results["leak"] is not None else []
    for problem in errors + held:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if errors or held else 0


if __name__ == "__main__":
    sys.exit(main())
