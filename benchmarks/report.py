"""Turn the raw samples of a run into medians, spreads, ratios, Markdown tables and targets.

Every figure is the median over rounds; `±x%` is half the range (max - min) over rounds
as a share of the median; `x` is the ratio to raw aiohttp measured in the same run (to
raw aiohttp on uvloop for uvloop rows).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

FLOOR: Final = "raw"
UVLOOP_SUFFIX: Final = "@uvloop"

IMPORT_OF: Final = {
    "raw": "aiohttp",
    "openai": "openai",
    "litellm": "litellm",
    "router": "litellm",
    "router-failover": "litellm",
}
"""Which import row each contender's import time comes from (majordomo rows: ours)."""
OUR_IMPORT: Final = "majordomo_async"


@dataclass(frozen=True)
class Stat:
    """A median over rounds and its range."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, samples: Sequence[float]) -> Stat | None:
        """The statistic of `samples`, or None when there are none."""
        if not samples:
            return None
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    @property
    def spread(self) -> float:
        """Half the range as a share of the median (0.03 for ±3%)."""
        return (self.high - self.low) / 2 / self.median if self.median else 0.0


def dig(data: Any, path: Sequence[str]) -> Any:
    """`data[path[0]][path[1]]...`, or None where a key is missing."""
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def stat(entry: dict[str, Any], path: Sequence[str], source: str = "rounds") -> Stat | None:
    """The statistic of the numbers at `path` in every round of one contender."""
    samples = [dig(sample, path) for sample in entry.get(source, [])]
    return Stat.of([value for value in samples if isinstance(value, int | float)])


def floor_of(name: str) -> str:
    """The contender a row's ratios are taken against."""
    return FLOOR + UVLOOP_SUFFIX if name.endswith(UVLOOP_SUFFIX) else FLOOR


def ratio(
    results: dict[str, Any], name: str, path: Sequence[str], source: str = "rounds"
) -> float | None:
    """Median of `name` over median of its floor, at `path`."""
    contenders = results["contenders"]
    mine = stat(contenders.get(name, {}), path, source)
    floor = stat(contenders.get(floor_of(name), {}), path, source)
    if mine is None or floor is None or not floor.median:
        return None
    return mine.median / floor.median


# --------------------------------------------------------------------------- formatting


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt(value: Stat | None, *, spread: bool = True) -> str:
    """`median ±spread%`, or a dash."""
    if value is None:
        return "-"
    text = _number(value.median)
    if spread and value.n > 1:
        text += f" ±{value.spread * 100:.0f}%"
    return text


def fmt_ratio(value: float | None) -> str:
    """`1.23x`, or a dash."""
    return "-" if value is None else f"{value:.2f}x"


def cell(results: dict[str, Any], name: str, path: Sequence[str]) -> str:
    """`median ±spread% (ratio to the floor)` of one contender's metric, or a dash."""
    entry = results["contenders"].get(name, {})
    value = stat(entry, path)
    if value is None:
        return "-"
    return f"{fmt(value)} ({fmt_ratio(ratio(results, name, path))})"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- sections


def _rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return list(results["contenders"].items())


def _unavailable(entry: dict[str, Any], width: int) -> list[str] | None:
    if entry.get("status") == "ok":
        return None
    reason = entry.get("reason", entry.get("status", "?"))
    return [entry["label"], reason, *["" for _ in range(width - 2)]]


def _errors_note(entry: dict[str, Any], path: Sequence[str]) -> str:
    cells = [dig(sample, path) or {} for sample in entry.get("rounds", [])]
    errors = sum(cell.get("errors", 0) for cell in cells)
    cut = sum(bool(cell.get("cut")) for cell in cells)
    notes = [f"{errors} failed"] if errors else []
    if cut:
        notes.append(f"cut short {cut}x")
    return f" ({', '.join(notes)})" if notes else ""


def _import_stat(results: dict[str, Any], name: str) -> Stat | None:
    base = name.removesuffix(UVLOOP_SUFFIX)
    module = IMPORT_OF.get(base, OUR_IMPORT if base.startswith("md") else None)
    if module is None:
        return None
    return Stat.of(results.get("imports", {}).get(module, []))


def summary_section(results: dict[str, Any]) -> str:
    """The headline table, in the shape of the issue's table of peers."""
    levels = results["meta"]["concurrency"]
    c = str(levels[0]) if levels else "?"
    sc = str(results["meta"]["stream_concurrency"])
    header = [
        "stack",
        "client CPU ms/call, sequential",
        f"at c={c}",
        f"req/s at c={c}",
        f"stream chunks/s at c={sc}",
        "peak RSS (1,000 streams)",
        "import",
    ]
    rows = []
    for name, entry in _rows(results):
        missing = _unavailable(entry, len(header))
        if missing:
            rows.append(missing)
            continue
        peak = stat(entry, ["peak_rss_kib"], "memory")
        imported = _import_stat(results, name)
        rows.append(
            [
                entry["label"],
                cell(results, name, ["sequential", "cpu_ms_per_call"]),
                cell(results, name, ["throughput", c, "cpu_ms_per_call"]),
                cell(results, name, ["throughput", c, "per_s"])
                + _errors_note(entry, ["throughput", c]),
                cell(results, name, ["stream_concurrent", "units_per_s"]),
                "-" if peak is None else f"{peak.median / 1024:.0f} MiB",
                "-" if imported is None else f"{imported.median:.2f} s",
            ]
        )
    return table(header, rows)


def calls_section(results: dict[str, Any]) -> str:
    """Latency, CPU and throughput of non-streaming calls."""
    levels = [str(level) for level in results["meta"]["concurrency"]]
    header = ["stack", "p50 ms", "p99 ms", "CPU ms/call (x)"]
    header += [f"req/s c={level} (x)" for level in levels]
    header += ["server CPU ms/call"]
    rows = []
    for name, entry in _rows(results):
        missing = _unavailable(entry, len(header))
        if missing:
            rows.append(missing)
            continue
        row = [
            entry["label"],
            fmt(stat(entry, ["sequential", "p50_ms"])),
            fmt(stat(entry, ["sequential", "p99_ms"])),
            cell(results, name, ["sequential", "cpu_ms_per_call"]),
        ]
        row += [
            cell(results, name, ["throughput", level, "per_s"])
            + _errors_note(entry, ["throughput", level])
            for level in levels
        ]
        row.append(fmt(stat(entry, ["sequential", "server_cpu_ms_per_call"])))
        rows.append(row)
    return table(header, rows)


def streams_section(results: dict[str, Any]) -> str:
    """Time to read a whole stream, CPU per stream, chunks per second."""
    sc = results["meta"]["stream_concurrency"]
    chunks = results["meta"]["chunks"]
    header = [
        "stack",
        f"{chunks}-chunk stream p50 ms",
        "p99 ms",
        "CPU ms/stream (x)",
        f"chunks/s c={sc} (x)",
        f"CPU ms/stream c={sc}",
    ]
    rows = []
    for name, entry in _rows(results):
        missing = _unavailable(entry, len(header))
        if missing:
            rows.append(missing)
            continue
        rows.append(
            [
                entry["label"],
                fmt(stat(entry, ["stream_sequential", "p50_ms"])),
                fmt(stat(entry, ["stream_sequential", "p99_ms"])),
                cell(results, name, ["stream_sequential", "cpu_ms_per_call"]),
                cell(results, name, ["stream_concurrent", "units_per_s"])
                + _errors_note(entry, ["stream_concurrent"]),
                fmt(stat(entry, ["stream_concurrent", "cpu_ms_per_call"])),
            ]
        )
    return table(header, rows)


def memory_section(results: dict[str, Any]) -> str:
    """Peak RSS and RSS per in-flight stream, each contender in a fresh process."""
    streams = results["meta"]["memory_streams"]
    header = [
        "stack",
        "peak RSS MiB",
        "RSS before the streams MiB",
        "streams in flight",
        "RSS per in-flight stream KiB",
        "vs raw aiohttp",
    ]
    floor = stat(results["contenders"].get(FLOOR, {}), ["rss_per_stream_kib"], "memory")
    rows = []
    for _, entry in _rows(results):
        if entry.get("status") != "ok" or not entry.get("memory"):
            continue
        per_stream = stat(entry, ["rss_per_stream_kib"], "memory")
        peak = stat(entry, ["peak_rss_kib"], "memory")
        base = stat(entry, ["baseline_rss_kib"], "memory")
        delta = (
            "-"
            if per_stream is None or floor is None
            else f"{per_stream.median - floor.median:+.1f} KiB"
        )
        rows.append(
            [
                entry["label"],
                "-" if peak is None else f"{peak.median / 1024:.1f}",
                "-" if base is None else f"{base.median / 1024:.1f}",
                _in_flight(entry, streams),
                fmt(per_stream),
                delta,
            ]
        )
    return table(header, rows)


def _in_flight(entry: dict[str, Any], streams: int) -> str:
    counts = [probe.get("in_flight", streams) for probe in entry["memory"]]
    low = min(counts)
    if low >= streams:
        return f"{streams:,}"
    return f"{low:,} of {streams:,} (its pool is full)"


def imports_section(results: dict[str, Any]) -> str:
    """Import time in a fresh interpreter, per module."""
    imports: dict[str, list[float]] = results.get("imports", {})
    floor = Stat.of(imports.get("aiohttp", []))
    rows = []
    for module, samples in imports.items():
        value = Stat.of(samples)
        if value is None:
            continue
        rows.append(
            [
                f"`{module}`",
                f"{value.median:.3f} s",
                f"{value.low:.3f}-{value.high:.3f} s",
                fmt_ratio(value.median / floor.median if floor else None),
            ]
        )
    return table(["import", "median", "range", "x aiohttp"], rows)


def registry_section(results: dict[str, Any]) -> str:
    """Per-call CPU through a large registry against a one-target registry."""
    registry = results.get("registry") or {}
    samples: dict[str, list[float]] = registry.get("cpu_us_per_call", {})
    if not samples:
        return "_not measured_"
    base = Stat.of(next(iter(samples.values())))
    rows = []
    for name, values in samples.items():
        value = Stat.of(values)
        rows.append(
            [
                name,
                fmt(value),
                fmt_ratio(value.median / base.median if value and base else None),
            ]
        )
    return table(["registry", "client CPU µs/call", "x one target"], rows)


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One target (issue 17's, and issue 4's peer factors): how to measure it and the
    bound it must meet."""

    text: str
    measure: Callable[[dict[str, Any]], float | None]
    bound: float
    higher_is_better: bool = False

    def met(self, value: float | None) -> bool | None:
        """Whether `value` meets the bound (None when not measured)."""
        if value is None:
            return None
        return value >= self.bound if self.higher_is_better else value <= self.bound


SEQUENTIAL_CPU: Final = ("sequential", "cpu_ms_per_call")
C64_CPU: Final = ("throughput", "64", "cpu_ms_per_call")


def _cpu_factor(
    peer: str, path: Sequence[str] = SEQUENTIAL_CPU
) -> Callable[[dict[str, Any]], float | None]:
    """How many times more client CPU per call `peer` spends than the 1-target chain."""

    def measure(results: dict[str, Any]) -> float | None:
        contenders = results["contenders"]
        ours = stat(contenders.get("md-1", {}), path)
        theirs = stat(contenders.get(peer, {}), path)
        return None if ours is None or theirs is None else theirs.median / ours.median

    return measure


def _import_ratio(results: dict[str, Any]) -> float | None:
    imports = results.get("imports", {})
    ours, theirs = Stat.of(imports.get(OUR_IMPORT, [])), Stat.of(imports.get("aiohttp", []))
    return None if ours is None or theirs is None else ours.median / theirs.median


def _rss_delta(results: dict[str, Any]) -> float | None:
    contenders = results["contenders"]
    ours = stat(contenders.get("md-1", {}), ["rss_per_stream_kib"], "memory")
    floor = stat(contenders.get(FLOOR, {}), ["rss_per_stream_kib"], "memory")
    return None if ours is None or floor is None else ours.median - floor.median


def _registry_growth(results: dict[str, Any]) -> float | None:
    samples: list[list[float]] = list(
        (results.get("registry") or {}).get("cpu_us_per_call", {}).values()
    )
    if len(samples) < 2:
        return None
    return float(statistics.median(samples[1]) / statistics.median(samples[0]))


def _versus(name: str, base: str, path: Sequence[str]) -> Callable[[dict[str, Any]], float | None]:
    """Median of `name` over median of `base` (another row than the floor), at `path`."""

    def measure(results: dict[str, Any]) -> float | None:
        contenders = results["contenders"]
        mine, theirs = stat(contenders.get(name, {}), path), stat(contenders.get(base, {}), path)
        if mine is None or theirs is None or not theirs.median:
            return None
        return mine.median / theirs.median

    return measure


def _throughput(level: str) -> Target:
    return Target(
        f"throughput at c={level} ≥ 0.95x raw aiohttp (same pool size)",
        lambda r: ratio(r, "md-1", ["throughput", level, "per_s"]),
        0.95,
        higher_is_better=True,
    )


def targets(results: dict[str, Any]) -> list[tuple[Target, float | None]]:
    """Every target of issue 17 (issue 4's peer factors beside them), measured."""
    levels = [str(level) for level in results["meta"]["concurrency"]]
    high = [level for level in ("512", "4096") if level in levels] or levels[-1:]
    checks = [
        Target(
            "1-target chain: client CPU/call (sequential) ≤ 1.05x raw aiohttp",
            lambda r: ratio(r, "md-1", SEQUENTIAL_CPU),
            1.05,
        ),
        Target(
            "1-target chain: client CPU/call at c=64 ≤ 1.15x raw aiohttp",
            lambda r: ratio(r, "md-1", C64_CPU),
            1.15,
        ),
        Target(
            "3-target chain, 2 heads benched: client CPU/call (sequential) ≤ 1.10x raw aiohttp",
            lambda r: ratio(r, "md-3", SEQUENTIAL_CPU),
            1.10,
        ),
        Target(
            "failover from a 503 head: client CPU/call (sequential) ≤ 1.10x raw aiohttp's",
            _versus("md-failover", "raw-failover", SEQUENTIAL_CPU),
            1.10,
        ),
        Target(
            "failover from a 503 head: client CPU/call at c=64 ≤ 1.10x raw aiohttp's",
            _versus("md-failover", "raw-failover", C64_CPU),
            1.10,
        ),
        *(_throughput(level) for level in high),
        Target(
            "stream chunks/s ≥ 0.97x raw aiohttp",
            lambda r: ratio(r, "md-1", ["stream_concurrent", "units_per_s"]),
            0.97,
            higher_is_better=True,
        ),
        Target("RSS per in-flight stream ≤ raw aiohttp + 4 KiB", _rss_delta, 4.0),
        Target("`import majordomo_async` ≤ 0.6x `import aiohttp`", _import_ratio, 0.6),
        Target(
            "≥ 20x less client CPU/call than LiteLLM's Router (sequential)",
            _cpu_factor("router"),
            20.0,
            higher_is_better=True,
        ),
        Target(
            "≥ 8x less client CPU/call than the openai SDK (sequential)",
            _cpu_factor("openai"),
            8.0,
            higher_is_better=True,
        ),
        Target(
            "registry of 1,000 targets: per-call CPU does not grow (≤ 1.1x one target)",
            _registry_growth,
            1.1,
        ),
    ]
    return [(check, check.measure(results)) for check in checks]


def targets_section(results: dict[str, Any]) -> str:
    """The targets, measured (never asserted)."""
    rows = []
    for check, value in targets(results):
        met = check.met(value)
        shown = (
            "-"
            if value is None
            else (f"{value:+.1f} KiB" if "KiB" in check.text else f"{value:.2f}x")
        )
        rows.append(
            [check.text, shown, {True: "met", False: "**not met**", None: "not measured"}[met]]
        )
    return table(["target", "measured", ""], rows)


# --------------------------------------------------------------------------- whole report


def markdown(results: dict[str, Any]) -> str:
    """The whole report: context, then every table."""
    meta = results["meta"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    notes = meta.get("notes") or []
    parts = [
        f"Run {meta['date']} on {meta['machine']}; Python {meta['python']}; {versions}.",
        f"Client and server pinned to CPUs {meta['pinning']}. {meta['rounds']} rounds "
        f"(fresh client process per contender and round); medians, ±half the range "
        f"over rounds; x = ratio to raw aiohttp in the same run. Took {meta['elapsed_s']:.0f} s.",
        *notes,
        "### Summary\n\n" + summary_section(results),
        "### Targets (issue 17)\n\n" + targets_section(results),
        "### Calls\n\n" + calls_section(results),
        "### Streams\n\n" + streams_section(results),
        "### Memory (fresh process per contender)\n\n" + memory_section(results),
        "### Import time (fresh interpreter per sample)\n\n" + imports_section(results),
        "### Registry size\n\n" + registry_section(results),
    ]
    return "\n\n".join(parts) + "\n"
