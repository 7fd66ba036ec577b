"""A seconds-long run of the benchmark harness (`python -m benchmarks.run --quick`).

It keeps the harness from rotting: every scenario must run and produce sane counts, the
failover rows must really fail over, and peers that are not installed (the dev
environment has neither `openai` nor `litellm`) must be reported as skipped, not crash
the run. Speed targets are never checked here: they belong to a full run of the harness.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHUNKS = 20  # content chunks per stream (the harness default)
OURS = ("raw", "md-1", "md-3", "md-anthropic", "raw-failover", "md-failover")
PEERS = {
    "openai": "openai",
    "litellm": "litellm",
    "router": "litellm",
    "router-failover": "litellm",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the harness once in quick mode; its JSON results (and the Markdown beside them)."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--strict", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [json_path] = out.glob("*.json")
    [markdown_path] = out.glob("*.md")
    results: dict[str, Any] = json.loads(json_path.read_text())
    results["markdown"] = markdown_path.read_text()
    results["stdout"] = done.stdout
    return results


pytestmark = pytest.mark.timeout(180)  # peers, when installed, make the run slower


@pytest.mark.parametrize("name", OURS)
def test_every_scenario_of_our_contenders_ran(quick_run: dict[str, Any], name: str) -> None:
    """Calls, throughput and streams all completed, with every chunk of every stream."""
    entry = quick_run["contenders"][name]
    assert entry["status"] == "ok", entry
    [sample] = entry["rounds"]
    sequential = sample["sequential"]
    assert sequential["calls"] == 20
    assert sequential["p50_ms"] > 0
    assert sequential["cpu_ms_per_call"] > 0
    [cell] = sample["throughput"].values()
    assert cell["concurrency"] == 16
    assert (cell["ok"], cell["errors"]) == (cell["calls"], 0)
    streams = sample["stream_concurrent"]
    assert streams["errors"] == 0
    assert streams["units"] == streams["ok"] * CHUNKS


@pytest.mark.parametrize(
    ("name", "requests_per_call"),
    [("md-1", 1), ("md-3", 1), ("md-failover", 2), ("raw-failover", 2)],
)
def test_each_row_sends_the_requests_it_claims(
    quick_run: dict[str, Any], name: str, requests_per_call: int
) -> None:
    """Benched heads are never called; a failover row calls the failing head every time."""
    [sample] = quick_run["contenders"][name]["rounds"]
    sequential = sample["sequential"]
    assert sequential["server_requests"] == requests_per_call * sequential["calls"]


@pytest.mark.parametrize("name", sorted(PEERS))
def test_peers_run_or_are_skipped_cleanly(quick_run: dict[str, Any], name: str) -> None:
    """A peer that is not importable is a skipped row that says why, never a failure."""
    entry = quick_run["contenders"][name]
    module = PEERS[name]
    if importlib.util.find_spec(module) is None:
        assert entry["status"] == "skipped"
        assert entry["reason"] == f"not installed: {module}"
        assert entry["rounds"] == []
        assert f"| {entry['label']} | not installed: {module} |" in quick_run["markdown"]
    else:
        assert entry["status"] == "ok", entry


def test_memory_probe_held_every_stream(quick_run: dict[str, Any]) -> None:
    """The memory probe had all its streams in flight at once, then closed them."""
    for name in ("raw", "md-1"):
        [probe] = quick_run["contenders"][name]["memory"]
        assert probe["streams"] == probe["in_flight"] == probe["cancelled"] == 20
        assert probe["peak_rss_kib"] >= probe["baseline_rss_kib"] > 0


def test_imports_and_registry_were_measured(quick_run: dict[str, Any]) -> None:
    """Fresh-interpreter import times, and the three registry variants."""
    imports = quick_run["imports"]
    assert len(imports["aiohttp"]) == 1
    assert len(imports["majordomo_async"]) == 1
    assert all(seconds > 0 for samples in imports.values() for seconds in samples)
    registry = quick_run["registry"]
    assert registry["targets"] == 20
    assert list(registry["cpu_us_per_call"]) == [
        "one target",
        "20 targets, calling one alias",
        "20 targets, rotating over all aliases",
    ]


def test_report_has_every_section(quick_run: dict[str, Any]) -> None:
    """The Markdown report is printed and written, with every table."""
    for heading in ("Summary", "Targets (issue 17)", "Calls", "Streams", "Memory", "Import"):
        assert f"### {heading}" in quick_run["markdown"]
    assert quick_run["stdout"].strip() == quick_run["markdown"].strip()


def test_call_counts_rise_layer_by_layer() -> None:
    """`benchmarks.call_counts --own` runs, and the provider and chain layers each add work
    of their own to the layer below (one that cost nothing would mean the script measured
    the wrong thing).

    Only the library's own calls are counted: aiohttp's move with how the loop splits a
    body into reads, which made a tolerance on the totals flake. A generate's own calls
    do not move at all; a stream's move by a handful (our code runs once per read)."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.call_counts", "--calls", "30", "--json", "--own"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout)
    for mode in ("generate", "stream"):
        assert list(counts[mode]) == [
            "raw aiohttp",
            "http",
            "provider",
            "chain",
            "registry",
            "raw failover",
            "failover",
        ]
        assert counts[mode]["raw aiohttp"] == counts[mode]["raw failover"] == 0
        # A failover makes two attempts and maps the first one's error: more of our
        # work than one successful call, and the failed attempt is not free.
        assert counts[mode]["failover"] > counts[mode]["registry"] + 20
    generate, stream = counts["generate"], counts["stream"]
    assert 0 < generate["http"] < generate["provider"] < generate["chain"] <= generate["registry"]
    assert generate["registry"] - generate["chain"] < 5  # the registry adds a lookup only
    # Per stream the provider adds hundreds of calls and the chain dozens; read splitting
    # moves a count by a handful, far less than either step.
    assert stream["provider"] > stream["http"] + 100
    assert stream["chain"] > stream["provider"] + 20
    assert abs(stream["registry"] - stream["chain"]) < 20


@pytest.mark.slow
@pytest.mark.timeout(600)  # two clients under callgrind, twice each: minutes on a busy machine
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instruction_counts_measure_each_layer_apart_from_start_up() -> None:
    """`benchmarks.instructions` runs under callgrind and subtracts the interpreter's start
    and imports: a request's worth of instructions per call (hundreds of thousands, not
    the start-up's hundreds of millions), and the chain costs more than raw aiohttp
    (it runs the same request, and its own work on top; 1.3x at 300 calls)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--modes",
            "generate",
            "--layers",
            "raw aiohttp,chain",
            "--base",
            "5",
            "--calls",
            "40",
            "--jobs",
            "2",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=570,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    per_call = json.loads(done.stdout)["generate"]
    raw, chain = per_call["raw aiohttp"], per_call["chain"]
    assert 100_000 < raw < 5_000_000
    assert chain > raw * 1.05


def test_instruction_counts_refuse_unknown_layers() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.instructions", "--layers", "raw aiohttp,chian"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert ("unknown layer: chian" in done.stderr) or ("valgrind is not installed" in done.stderr)


def test_the_routing_benchmark_runs_and_leaks_nothing(tmp_path: Path) -> None:
    """`benchmarks.routing` with small numbers: every balance row answers every call
    (the failing member's requests failed over within their calls), the ordered rows
    send everything to the head, and the leak run ends with nothing held (the script's
    own exit status says so too)."""
    out = tmp_path / "routing.json"
    command = ["benchmarks.routing", "--calls", "200", "--leak-calls", "600", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", *command, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = results["balance"]
    strategies = [row["strategy"] for row in rows]
    assert strategies == ["ordered", "least-busy", "latency", "random", "ordered", "least-busy"]
    for row in rows:
        assert row["errors"] == 0, row["first_error"]
        assert abs(sum(row["share"].values()) - 1) < 1e-9
        assert row["share"].get("down/m_fail-503", 0) == 0
    assert rows[0]["share"] == {"fast/m_slow-10ms": 1.0}
    assert rows[4]["share"]["fast/m_slow-10ms"] == 1.0
    leak = results["leak"]
    assert sum(leak["outcomes"].values()) == 600
    assert leak["outcomes"].get("cancelled", 0) > 0
    held = [leak[what] for what in ("slots_in_use", "waiting", "in_flight")]
    assert all(not any(counts.values()) for counts in held), held
    assert "| group | least-busy |" in done.stdout
