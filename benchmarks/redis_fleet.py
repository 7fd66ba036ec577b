"""Failed attempts a fleet of replicas sends to a target that is down, and how quickly
one replica's bench reaches the others, with the Redis health store.

Two measurements, both against a private redis-server on loopback
(`tests/helpers/redis_server.py`):

1. Failed attempts (separate processes). A local server plays a chain's head that is down
   (503) for `--down` seconds, then up. The same total load (`--callers` concurrent call
   loops) runs as one process with the in-process store (the reference: one health state
   for every caller, free), and as `--replicas` processes sharing a Redis store, with
   Pub/Sub (the default) and without it (`pubsub=no`: changes from other replicas arrive
   with the 0.5 s poll only). Each replica is a real process with its own event loop,
   Registry and store (`tests/helpers/redis_server.py` runs them). The figure is the
   number of 503s the head answered, and its ratio to the single process's.
2. Propagation (one process, separate stores). A writer store benches a target; a reader
   store with its own connections (its poll made hourly, so only the subscription can
   tell it) is timed from the writer's answer to the change reaching the reader's view.
   One process keeps both ends on one clock: the figure includes the Redis round trip
   and the publication, and both stores share one event loop (as two replicas on one
   host would not).

    python -m benchmarks.redis_fleet [--rounds 3] [--down 4] [--benches 200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the replica processes live in tests/helpers

import anyio  # noqa: E402

from majordomo_async import HealthConfig, RedisHealthStore  # noqa: E402
from tests.helpers.redis_server import RedisServer, run_fleet  # noqa: E402


async def failed_attempts(url: str, args: argparse.Namespace) -> dict[str, dict[str, list[float]]]:
    """Failed attempts, and seconds until every replica was back on the recovered head,
    per round, per setup."""
    per_replica = max(args.callers // args.replicas, 1)
    setups: dict[str, dict[str, Any]] = {
        f"one process, {args.callers} loops": {
            "store": "memory", "workers": 1, "callers": args.callers,
        },
        f"{args.replicas} replicas, Redis + Pub/Sub": {
            "store": url, "workers": args.replicas, "callers": per_replica,
        },
        f"{args.replicas} replicas, Redis, poll only": {
            "store": url, "workers": args.replicas, "callers": per_replica,
            "options": "pubsub=no",
        },
        f"{args.replicas} replicas, in-process stores": {
            "store": "memory", "workers": args.replicas, "callers": per_replica,
        },
        f"one process, {per_replica} loops": {
            "store": "memory", "workers": 1, "callers": per_replica,
        },
    }  # fmt: skip
    results: dict[str, dict[str, list[float]]] = {
        name: {"failed": [], "back": []} for name in setups
    }
    for round_ in range(args.rounds):
        # Rotate the order, so no setup always runs on a warmer machine.
        names = list(setups)[round_ % len(setups) :] + list(setups)[: round_ % len(setups)]
        for name in names:
            setup = setups[name]
            run = await run_fleet(
                setup["store"],
                f"bench:{uuid.uuid4().hex[:8]}:",
                workers=setup["workers"],
                callers=setup["callers"],
                cooldown=args.cooldown,
                down=args.down,
                up=args.up,
                options=setup.get("options", ""),
            )
            errors = sum(summary["error_count"] for summary in run["summaries"])
            if errors:
                raise RuntimeError(f"{name}: {errors} calls failed")
            results[name]["failed"].append(run["failed_attempts"])
            results[name]["back"].append(run["all_back_after"] or math.nan)
            print(
                f"  round {round_ + 1}: {name}: {run['failed_attempts']} failed attempts, "
                f"all back on the head {run['all_back_after'] or math.nan:.3f} s after it was",
                flush=True,
            )
    return results


async def propagation(url: str, benches: int) -> tuple[list[float], list[float]]:
    """Seconds until the reader's view has a bench: from the writer's call, and from its
    answer (the change is published before the answer is sent: about as early)."""
    config = HealthConfig(failure_threshold=1, base_cooldown=60, max_cooldown=60)
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    writer = RedisHealthStore(url, config, prefix=prefix, timeout=2)
    reader = RedisHealthStore(url, config, prefix=prefix, timeout=2, refresh_interval=3600)
    seen: dict[str, float] = {}
    arrived = asyncio.Event()
    fold = reader._on_message

    def timed(data: object) -> None:
        fold(data)
        for key, entry in reader._view.items():
            if entry.until is not None and key not in seen:
                seen[key] = time.perf_counter()
                arrived.set()

    reader._on_message = timed  # type: ignore[method-assign]
    delays: list[float] = []
    after_answer: list[float] = []
    try:
        await writer.admit("warm/up")
        await reader.admit("warm/up")
        while not reader.subscribed:  # noqa: ASYNC110  (no event to wait on from outside)
            await asyncio.sleep(0.005)
        for index in range(benches):
            key = f"p/{index}"
            arrived.clear()
            sent = time.perf_counter()
            bench = await writer.record_failure(key, None)
            answered = time.perf_counter()
            assert bench is not None and bench.new
            with anyio.fail_after(5):
                await arrived.wait()
            delays.append(seen[key] - sent)
            after_answer.append(max(seen[key] - answered, 0.0))
    finally:
        await writer.aclose()
        await reader.aclose()
    return delays, after_answer


async def main(args: argparse.Namespace) -> None:
    server = RedisServer().start() if args.url is None else None
    url = args.url or (server.url if server else "")
    try:
        print(
            f"failed attempts: head down {args.down} s, cooldown {args.cooldown} s, "
            f"{args.callers} call loops in all, {args.rounds} rounds",
            flush=True,
        )
        results = await failed_attempts(url, args)
        names = list(results)
        whole = statistics.mean(results[names[0]]["failed"])
        shape = statistics.mean(results[names[-1]]["failed"])
        print(
            f"{'setup':40} {'failed':>7} {'vs one process':>15} {'vs one replica':>15} back on head"
        )
        for name, figures in results.items():
            mean = statistics.mean(figures["failed"])
            back = statistics.median(figures["back"])
            print(
                f"  {name:38} {mean:7.1f} {mean / whole:14.2f}x {mean / shape:14.2f}x "
                f"{back:8.3f} s   (rounds: {[int(value) for value in figures['failed']]})"
            )
        from_call, from_answer = await propagation(url, args.benches)
        for what, values in (("the writer's call", from_call), ("its answer", from_answer)):
            delays = sorted(values)
            print(
                f"bench seen by another store, from {what} ({len(delays)} benches): "
                f"median {statistics.median(delays) * 1000:.2f} ms, "
                f"p99 {delays[max(int(len(delays) * 0.99) - 1, 0)] * 1000:.2f} ms, "
                f"max {delays[-1] * 1000:.2f} ms"
            )
    finally:
        if server is not None:
            server.close()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a Redis to use (default: start a private one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--callers", type=int, default=8, help="call loops in all")
    parser.add_argument("--down", type=float, default=4.0, help="seconds the head is down")
    parser.add_argument("--up", type=float, default=1.0, help="seconds it is up after")
    parser.add_argument("--cooldown", type=float, default=0.2)
    parser.add_argument("--benches", type=int, default=200)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
