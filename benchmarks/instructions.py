"""Machine instructions per call and per stream, layer by layer (Valgrind's callgrind).

    python -m benchmarks.instructions [--calls 300] [--modes generate,stream]
                                      [--layers "raw aiohttp,chain"] [--json]

CPU time on a shared virtual machine moves by 20-30 % between runs, far more than the
5-10 % the overhead targets are about. The number of instructions the client executes
does not: callgrind counts them exactly, whatever else the machine runs. Each layer of
`benchmarks.call_counts` (raw aiohttp, our transport, one provider model, a chain, the
registry; raw aiohttp failing over by hand and a chain failing over) runs in a fresh
interpreter under callgrind twice, with `--base` and with `--base + --calls` calls after
the same warm-up; the difference divided by `--calls` is the layer's instructions per
call, interpreter start-up and imports excluded. The mock server runs natively in its
own process.

Runs of the same layer agree within about 1.5 % at 300 calls (raw aiohttp: 501k to 513k
instructions per generate in four runs); fewer calls leave more room for a garbage
collection that lands inside the measured ones. A stream's count also depends on the
body arriving in one read: the mock server needs a core of its own, so by default only
one client runs at a time on a 2-core machine (with two, the starved server split the
bodies into more reads and a provider stream counted 2,148k instead of 1,880k).
Needs `valgrind` on the PATH; a client under callgrind runs about 50 times slower, so a
full run takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.call_counts import layer_calls
from benchmarks.run import MockServer

ROOT = Path(__file__).resolve().parent.parent
MODES = ("generate", "stream")
LAYERS = ("raw aiohttp", "http", "provider", "chain", "registry", "raw failover", "failover")
WARM_UP = 30
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


async def _child(mode: str, layer: str, calls: int, port: int) -> None:
    """Inside callgrind: warm up, then make `calls` calls of one layer."""
    async with layer_calls(port) as layers:
        call = layers[mode][layer]
        for _ in range(WARM_UP + calls):
            await call()


def _instructions(mode: str, layer: str, calls: int, port: int) -> int:
    """Instructions a fresh interpreter executes for `calls` calls of one layer."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-m",
        "benchmarks.instructions",
        "--child",
        mode,
        layer,
        str(calls),
        str(port),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    match = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or match is None:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"{mode} / {layer}: exit {done.returncode}: {tail[-300:]}")
    return int(match[1])


def measure(
    port: int, modes: list[str], layers: list[str], base: int, calls: int, jobs: int
) -> dict[str, dict[str, float]]:
    """`{mode: {layer: instructions per call}}`: (runs of base + calls) - (runs of base)."""
    cells = [(mode, layer, n) for mode in modes for layer in layers for n in (base, base + calls)]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        totals = list(pool.map(lambda cell: _instructions(cell[0], cell[1], cell[2], port), cells))
    found: dict[tuple[str, str, int], int] = {
        cell[:3]: total for cell, total in zip(cells, totals, strict=True)
    }
    return {
        mode: {
            layer: (found[mode, layer, base + calls] - found[mode, layer, base]) / calls
            for layer in layers
        }
        for mode in modes
    }


def report(counts: dict[str, dict[str, float]]) -> str:
    """The counts as a Markdown table: thousands of instructions, and x raw aiohttp
    (`failover` x `raw failover`)."""
    lines = ["| layer | " + " | ".join(f"k instructions per {m}" for m in counts) + " |"]
    lines.append("|---|" + "---|" * len(counts))
    layers = next(iter(counts.values()))
    for layer in layers:
        cells = []
        for per_layer in counts.values():
            floor_name = "raw failover" if layer == "failover" else "raw aiohttp"
            value, floor = per_layer[layer], per_layer.get(floor_name)
            ratio = f" ({value / floor:.2f}x)" if floor else ""
            cells.append(f"{value / 1000:.0f}{ratio}")
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:
        mode, layer, calls, port = argv[1:5]
        asyncio.run(_child(mode, layer, int(calls), int(port)))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls measured per layer")
    parser.add_argument("--base", type=int, default=50, help="calls of the shorter run")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--layers", default=",".join(LAYERS))
    parser.add_argument(
        "--jobs",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="clients under callgrind at once (default: one core left for the server)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt install valgrind)")
    modes = [m for m in args.modes.split(",") if m]
    layers = [layer for layer in args.layers.split(",") if layer]
    for name, chosen, known in (("mode", modes, MODES), ("layer", layers, LAYERS)):
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            parser.error(f"unknown {name}: {', '.join(unknown)} (known: {', '.join(known)})")
    server = MockServer(chunks=args.chunks, cpu=None)
    try:
        counts = measure(server.port, modes, layers, args.base, args.calls, args.jobs)
    finally:
        server.stop()
    print(json.dumps(counts) if args.json else report(counts))


if __name__ == "__main__":
    main()
