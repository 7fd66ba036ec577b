"""Run the benchmark: every contender, every scenario, against one local mock server.

From the repository root, in the benchmark environment (see benchmarks/README.md):

    python -m benchmarks.run                  # full run, ~10 minutes on 2 cores
    python -m benchmarks.run --quick          # smoke run, seconds (the test suite runs it)
    python -m benchmarks.run --write-readme   # also put the tables into benchmarks/README.md

What happens:

1. The mock server (`benchmarks.mock_server`) starts in its own process, pinned to one
   CPU; this process and every client process are pinned to another (when there are
   at least two).
2. For each round, each contender runs every call and stream scenario in a fresh
   process (`benchmarks.worker round`); the order of contenders rotates per round.
3. Each contender's memory probe runs in a fresh process (1,000 streams held open).
4. Import times: a fresh interpreter per module and sample.
5. The registry probe: per-call CPU with 1,000 registered targets and aliases.
6. Tables (Markdown) and every sample (JSON) go to `benchmarks/results/` and stdout.

Peers that are not installed are reported as skipped, never as failures.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final

from benchmarks import report
from benchmarks.contenders import CONTENDERS, label, missing_modules

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parent
README: Final = HERE / "README.md"
RESULTS: Final = HERE / "results"
README_START: Final = "<!-- results:start -->"
README_END: Final = "<!-- results:end -->"

HIGH_CONCURRENCY: Final = ("raw", "md-1", "md-3", "openai", "litellm", "router")
"""Contenders measured at every concurrency level; the rest only at the first."""
ONCE_ABOVE: Final = 512
"""Peers run concurrency levels above this in the first round only."""
MEMORY: Final = ("raw", "md-1", "openai", "litellm", "router")
"""Contenders whose memory with 1,000 streams in flight is measured."""
UVLOOP_ROWS: Final = ("raw", "md-1")
"""Contenders repeated on uvloop when it is installed."""
IMPORTS: Final = {
    "aiohttp": "import aiohttp",
    "majordomo_async": "import majordomo_async",
    "majordomo_async, then its first parse": (
        "import majordomo_async; majordomo_async.Registry("
        "env={'LLM_X': 'openai+http://k@127.0.0.1:9/v1'}).parse('x/m')"
    ),
    "openai": "import openai",
    "litellm": "import litellm",
}
"""Import rows: what a fresh interpreter times. The third row pays for aiohttp and the
OpenAI provider module, which `import majordomo_async` defers to first use."""
LEAK_MARKERS: Final = re.compile(
    r"Unclosed|never retrieved|was never awaited|Traceback|Exception ignored|Warning:"
)
"""Lines on a client's stderr that betray a leak or a swallowed error (ResourceWarnings are
shown: see `_env`)."""
VERSIONED: Final = ("majordomo-async", "aiohttp", "anyio", "attrs", "openai", "litellm", "uvloop")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seq-calls", type=int, default=500, help="sequential calls per round")
    parser.add_argument("--concurrency", default="64,512,4096", help="levels, comma-separated")
    parser.add_argument("--stream-concurrency", type=int, default=64)
    parser.add_argument("--stream-calls", type=int, default=300, help="most sequential streams")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--cell-seconds", type=float, default=1.0, help="client CPU per cell")
    parser.add_argument("--memory-streams", type=int, default=1000)
    parser.add_argument("--memory-rounds", type=int, default=1)
    parser.add_argument("--import-rounds", type=int, default=5)
    parser.add_argument("--registry-targets", type=int, default=1000)
    parser.add_argument("--registry-calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=30, help="calls and streams per process")
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated, from: {', '.join(CONTENDERS)}",
    )
    parser.add_argument(
        "--uvloop", choices=("auto", "yes", "no"), default="auto", help="uvloop rows"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    parser.add_argument("--write-readme", action="store_true", help="update benchmarks/README.md")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 if any available contender failed"
    )
    parser.add_argument(
        "--note", action="append", default=[], help="a sentence for the report (repeatable)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 1
        args.seq_calls = 20
        args.concurrency = "16"
        args.stream_concurrency = 8
        args.stream_calls = 10
        args.cell_seconds = 0.05
        args.memory_streams = 20
        args.memory_rounds = 1
        args.import_rounds = 1
        args.registry_targets = 20
        args.registry_calls = 20
        args.warmup = 4
    unknown = set(args.contenders.split(",")) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    return args


# --------------------------------------------------------------------------- processes


def _cpus(pin: bool) -> tuple[int | None, int | None]:
    """(client CPU, server CPU), or Nones when pinning is off or there is one CPU."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None, None
    return allowed[0], allowed[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    # LiteLLM fetches its model price map from the internet at import without this.
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    # Show unclosed sessions and never-awaited coroutines (hidden by default); see
    # LEAK_MARKERS.
    env.setdefault("PYTHONWARNINGS", "default::ResourceWarning,default::RuntimeWarning")
    return env


class MockServer:
    """The mock server process: started on a free port, stopped on exit."""

    def __init__(self, chunks: int, cpu: int | None) -> None:
        command = [sys.executable, "-m", "benchmarks.mock_server", "--port", "0"]
        command += ["--chunks", str(chunks)]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.fullmatch(r"PORT (\d+)\s*", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the mock server did not start (said {line!r})")
        self.port = int(match[1])

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_worker(arguments: list[str], timeout: float) -> dict[str, Any]:
    """Run `benchmarks.worker` with `arguments`; its result, or `{"error": ...}`."""
    command = [sys.executable, "-m", "benchmarks.worker", *arguments]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            leaks = [line for line in done.stderr.splitlines() if LEAK_MARKERS.search(line)]
            if leaks:
                result["stderr_warnings"] = leaks[:5]
            return result
    tail = " ".join(done.stderr.strip().splitlines()[-3:])
    return {"error": f"exit {done.returncode}: {tail[-400:]}"}


def time_import(statement: str) -> float | None:
    """Seconds a fresh interpreter spends on `statement` (None if it failed)."""
    code = (
        "import time; _t = time.perf_counter(); "
        f"{statement}; print('IMPORT', time.perf_counter() - _t)"
    )
    command = [sys.executable, "-c", code]
    done = subprocess.run(
        command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120
    )
    match = re.search(r"^IMPORT (\S+)$", done.stdout, re.MULTILINE)
    return float(match[1]) if match else None


# --------------------------------------------------------------------------- the run


def _common(args: argparse.Namespace, port: int, cpu: int | None) -> list[str]:
    common = ["--port", str(port), "--warmup", str(args.warmup)]
    if cpu is not None:
        common += ["--cpu", str(cpu)]
    return common


def _with_uvloop(args: argparse.Namespace, names: list[str]) -> list[str]:
    wanted = args.uvloop == "yes" or (
        args.uvloop == "auto" and not args.quick and _importable("uvloop")
    )
    if not wanted:
        return names
    return names + [f"{name}{report.UVLOOP_SUFFIX}" for name in UVLOOP_ROWS if name in names]


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns every sample and the run's metadata."""
    started = time.perf_counter()
    client_cpu, server_cpu = _cpus(not args.no_pin)
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})  # children (clients, import probes) inherit it
    names = _with_uvloop(args, args.contenders.split(","))
    levels = [int(level) for level in args.concurrency.split(",") if level]
    contenders: dict[str, dict[str, Any]] = {}
    for name in names:
        base = name.removesuffix(report.UVLOOP_SUFFIX)
        entry: dict[str, Any] = {
            "label": label(base) + (" (uvloop)" if name != base else ""),
            "status": "ok",
            "rounds": [],
            "memory": [],
        }
        missing = missing_modules(base)
        if missing:
            entry.update(status="skipped", reason=f"not installed: {', '.join(missing)}")
        contenders[name] = entry
    runnable = [name for name in names if contenders[name]["status"] == "ok"]

    server = MockServer(args.chunks, server_cpu)
    try:
        common = _common(args, server.port, client_cpu)
        for round_index in range(args.rounds):
            shift = round_index % max(len(runnable), 1)
            for name in runnable[shift:] + runnable[:shift]:
                _progress(f"round {round_index + 1}/{args.rounds}: {name}")
                _round(args, name, round_index, common, levels, contenders[name])
        for memory_round in range(args.memory_rounds):
            for name in runnable:
                if name not in MEMORY:
                    continue
                _progress(f"memory {memory_round + 1}/{args.memory_rounds}: {name}")
                result = run_worker(
                    ["memory", "--contender", name, *common, "--streams", str(args.memory_streams)],
                    timeout=600,
                )
                _record(contenders[name], "memory", result)
        _progress("registry")
        registry = run_worker(
            [
                "registry",
                *common,
                "--targets",
                str(args.registry_targets),
                "--registry-calls",
                str(args.registry_calls),
            ],
            timeout=600,
        )
    finally:
        server.stop()

    imports = _imports(args)
    return {
        "meta": _meta(args, levels, client_cpu, server_cpu, time.perf_counter() - started),
        "contenders": contenders,
        "imports": imports,
        "registry": registry,
    }


def _round(
    args: argparse.Namespace,
    name: str,
    round_index: int,
    common: list[str],
    levels: list[int],
    entry: dict[str, Any],
) -> None:
    base = name.removesuffix(report.UVLOOP_SUFFIX)
    own_levels = levels if base in HIGH_CONCURRENCY else levels[:1]
    if round_index > 0 and CONTENDERS[base].requires:
        # A peer's single wave of 4,096 calls takes tens of seconds to minutes (the
        # openai SDK's pool of 1,000 connections degrades badly past it): once is enough.
        own_levels = [level for level in own_levels if level <= ONCE_ABOVE]
    arguments = [
        "round",
        "--contender",
        base,
        *common,
        "--seq-calls",
        str(args.seq_calls),
        "--concurrency",
        ",".join(map(str, own_levels)),
        "--stream-calls",
        str(args.stream_calls),
        "--stream-concurrency",
        str(args.stream_concurrency),
        "--cell-seconds",
        str(args.cell_seconds),
    ]
    if name != base:
        arguments += ["--loop", "uvloop"]
    _record(entry, "rounds", run_worker(arguments, timeout=900))


def _record(entry: dict[str, Any], kind: str, result: dict[str, Any]) -> None:
    if "error" in result:
        entry.setdefault("errors", []).append(f"{kind}: {result['error']}")
        _progress(f"  failed: {result['error']}")
        if not entry[kind]:
            entry.update(status="error", reason=f"failed: {result['error'][:160]}")
        return
    if entry.get("status") == "error" and kind == "rounds":
        entry.update(status="ok", reason=None)
    entry[kind].append(result)
    for line in result.get("stderr_warnings", []):
        entry.setdefault("warnings", []).append(f"{kind}: {line}")


def byte_compile(module: str) -> None:
    """Byte-compile the package of `module` where it is installed, as installing a wheel
    does (pip compiles what it installs). An editable install, or a machine that sets
    PYTHONDONTWRITEBYTECODE, leaves our own modules as sources, and every fresh
    interpreter would then time compiling them rather than importing them."""
    spec = importlib.util.find_spec(module)
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)


def _imports(args: argparse.Namespace) -> dict[str, list[float]]:
    rows = {
        name: statement
        for name, statement in IMPORTS.items()
        if _importable(name.split(",")[0].strip())
    }
    for module in {name.split(",")[0].strip() for name in rows}:
        byte_compile(module)
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for round_index in range(args.import_rounds):
        for name, statement in rows.items():
            _progress(f"import {round_index + 1}/{args.import_rounds}: {name}")
            seconds = time_import(statement)
            if seconds is not None:
                samples[name].append(seconds)
    return samples


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    found = {}
    for package in VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def _meta(
    args: argparse.Namespace,
    levels: list[int],
    client_cpu: int | None,
    server_cpu: int | None,
    elapsed: float,
) -> dict[str, Any]:
    cores = os.cpu_count() or 0
    pinning = (
        f"{client_cpu} (client) and {server_cpu} (server)"
        if client_cpu is not None
        else "none (fewer than 2 CPUs, or --no-pin)"
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {cores} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": _versions(),
        "pinning": pinning,
        "rounds": args.rounds,
        "concurrency": levels,
        "stream_concurrency": args.stream_concurrency,
        "chunks": args.chunks,
        "memory_streams": args.memory_streams,
        "quick": args.quick,
        "elapsed_s": elapsed,
        "argv": sys.argv[1:],
        "notes": args.note,
    }


# --------------------------------------------------------------------------- output


def write_results(results: dict[str, Any], text: str, out: Path) -> Path:
    """Write `<stamp>.json` and `<stamp>.md` into `out`; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    if results["meta"]["quick"]:
        stamp += "-quick"
    (out / f"{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    path = out / f"{stamp}.md"
    path.write_text(text)
    return path


def write_readme(text: str, readme: Path = README) -> None:
    """Replace the marked results section of `readme` with `text`."""
    content = readme.read_text()
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no {README_START} ... {README_END} section")
    replaced = content[: start + len(README_START)] + "\n\n" + text + "\n" + content[end:]
    readme.write_text(replaced)


def failures(results: dict[str, Any]) -> list[str]:
    """Contenders that could run here but failed, calls that failed, and leaks of ours.

    A peer's own warnings (an unclosed session inside LiteLLM, say) are reported in the
    JSON but are not our failures.
    """
    found = []
    for name, entry in results["contenders"].items():
        if entry["status"] == "error" or entry.get("errors"):
            found.append(f"{name}: {'; '.join(entry.get('errors', [entry.get('reason', '')]))}")
        if (
            entry.get("warnings")
            and not CONTENDERS[name.removesuffix(report.UVLOOP_SUFFIX)].requires
        ):
            found.append(f"{name}: stderr: {'; '.join(entry['warnings'][:3])}")
        for sample in entry.get("rounds", []):
            cells = [*sample.get("throughput", {}).values(), sample.get("stream_concurrent", {})]
            failed = sum(cell.get("errors", 0) for cell in cells)
            if failed:
                found.append(f"{name}: {failed} failed calls")
    registry = results.get("registry", {})
    if "error" in registry:
        found.append(f"registry: {registry['error']}")
    if registry.get("stderr_warnings"):
        found.append(f"registry: stderr: {'; '.join(registry['stderr_warnings'][:3])}")
    return found


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parse_args(argv)
    results = run(args)
    text = report.markdown(results)
    path = write_results(results, text, args.out)
    if args.write_readme:
        write_readme(text)
    print(text)
    print(f"[bench] written to {path} (and .json)", file=sys.stderr)
    problems = failures(results)
    for problem in problems:
        print(f"[bench] FAILED {problem}", file=sys.stderr)
    return 1 if problems and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
