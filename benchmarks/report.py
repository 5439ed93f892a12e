"""Benchmark reports: the JSON of a run, its Markdown table and latency plot, and the README tables generated
from the newest committed result files (how a run writes its files: docs/design.md §8d).

    python -m benchmarks.report --commit build/bench/<run>.json  # copy to benchmarks/results/, then git add it
    python -m benchmarks.report --readme README.md   # rewrite the tables between the bench- and kernel-table markers
    python -m benchmarks.report build/bench/<run>.json   # print one run's Markdown
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from benchmarks.environment import device_slug
from benchmarks.records import (
    BenchRun,
    GoalVerdict,
    GpuLoad,
    KernelBenchRun,
    KernelVerdict,
    Measured,
    RouteRecord,
)
from benchmarks.routes import FUSED_SUFFIX
from pipeline.common.artifacts import atomic_path, write_json
from pipeline.common.errors import PipelineError
from pipeline.common.records import JsonRecord

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
RUNS_DIR = ROOT / "build" / "bench"  # every run's files, git-ignored: a run never edits a tracked file
Markers = tuple[str, str]  #: (start, end) comment lines around a generated README block
README_START, README_END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
BENCH_MARKERS: Markers = (README_START, README_END)
KERNEL_MARKERS: Markers = ("<!-- kernel-table:start -->", "<!-- kernel-table:end -->")
RESULT_GLOB = "bench_*.json"
KERNEL_GLOB = "kernel_bench*.json"

#: docs/design.md §7: what users compare against (published; not measured by this project).
REFERENCE_NUMBERS = [
    ("Swin paper, V100, img/s (top-1 %)", "T 755 (81.3) · S 437 (83.0) · B 278 (83.5) · B-384 85 (84.5) · "
                                          "L-384 22K 42 (87.3)"),
    ("FasterTransformer plugin, Swin-T 224, T4, ms at batch 1 / 32", "FP16 1.59 / 28.74 · INT8 1.40 / 20.48"),
    ("FasterTransformer plugin, Swin-T 224, A10, ms at batch 1 / 32", "FP16 0.97 / 12.99"),
    ("FasterTransformer plugin, Swin-T 224, A100, ms at batch 1 / 32", "FP16 1.47 / 6.24 · INT8 1.45 / 5.05"),
    ("Community TensorRT 8.2, Swin-T FP16, T4, img/s", "510 at batch 1 · 833 at batch 64"),
]

RouteAt = tuple[str, str, int]  #: (route name, precision, batch)


@dataclasses.dataclass(frozen=True)
class Goal:
    """A target on real hardware: ``metric`` of ``numerator`` over that of ``denominator`` compared with ``target``,
    for runs of ``variants`` (None: every variant)."""

    id: str
    goal: str
    numerator: RouteAt
    denominator: RouteAt
    metric: str
    comparison: str  #: "<=", "<" or ">="
    target: float
    variants: tuple[str, ...] | None = None

    def met(self, value: float) -> bool:
        return {"<=": value <= self.target, "<": value < self.target, ">=": value >= self.target}[self.comparison]


def _fused_vs_compile(variant: str, batch: int, comparison: str, target: float, wording: str) -> Goal:
    return Goal(f"fused_vs_compile_fp16_{variant.lower()}_b{batch}",
                f"Swin-{variant} FP16 batch {batch}: torch.compile of the fused model {wording} torch.compile alone",
                ("torch-compile-cuda-fused", "fp16", batch), ("torch-compile-cuda", "fp16", batch), "p50_ms",
                comparison, target, (variant,))


#: The issues' targets on real hardware (the plugin engine's, and the fused attention kernel's in whole networks).
GOALS = (
    Goal("plugin_vs_native_fp16_b1", "plugin engine FP16 batch-1 latency ≤ 0.8× TensorRT's native ONNX engine",
         ("tensorrt-plugin", "fp16", 1), ("tensorrt-native", "fp16", 1), "p50_ms", "<=", 0.8),
    *(Goal(f"plugin_vs_attention_fp16_b{batch}", f"plugin engine FP16 batch-{batch} latency below TensorRT's own "
           "attention engine (--attention tensorrt, no plugin): else the plugin's niche is window 12, padding and "
           "older TensorRT", ("tensorrt-plugin", "fp16", batch), ("tensorrt-attention", "fp16", batch), "p50_ms",
           "<", 1.0) for batch in (1, 32)),
    Goal("int8_vs_fp16_throughput_b32", "plugin engine INT8 throughput ≥ 1.3× FP16 at batch 32",
         ("tensorrt-plugin", "int8", 32), ("tensorrt-plugin", "fp16", 32), "throughput_img_s", ">=", 1.3),
    *(_fused_vs_compile("T", batch, "<=", 0.8, "≤ 0.8×") for batch in (1, 32, 64)),
    *(_fused_vs_compile("B384", batch, "<", 1.0, "faster than") for batch in (1, 8, 32)),
)


def _measured(routes: Sequence[RouteRecord]) -> dict[RouteAt, Measured]:
    return {(route.name, route.precision, r.batch): r.measured for route in routes if route.status == "measured"
            for r in route.results if r.measured is not None}


def evaluate_goals(routes: Sequence[RouteRecord], variant: str) -> list[GoalVerdict]:
    """Each goal of ``variant``'s runs: its ratio and verdict, or why it could not be evaluated in this run."""
    measured = _measured(routes)
    goals = []
    for goal in GOALS:
        if goal.variants is not None and variant.upper() not in goal.variants:
            continue
        missing = [f"{name}/{precision} at batch {batch}" for name, precision, batch in (goal.numerator,
                                                                                         goal.denominator)
                   if (name, precision, batch) not in measured]
        if missing:
            goals.append(GoalVerdict(goal.id, goal.goal, goal.target,
                                     reason=f"not measured in this run: {', '.join(missing)}"))
            continue
        value = getattr(measured[goal.numerator], goal.metric) / getattr(measured[goal.denominator], goal.metric)
        goals.append(GoalVerdict(goal.id, goal.goal, goal.target, round(value, 3), goal.met(value)))
    return goals


# ---------------------------------------------------------------------------------------------------------
# Markdown


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _route_label(route: RouteRecord) -> str:
    graph = route.graph_used()
    marker = "" if graph is None else " [CUDA graph]" if graph else " [no CUDA graph]"
    return f"{route.label}{marker}" + (f" ({route.note})" if route.note else "")


NO_GRAPH_NOTE = ("[no CUDA graph]: launched kernel by kernel from Python on every iteration, so at small batches the "
                 "time includes Python's launch overhead, not only the GPU's work; [CUDA graph]: one graph replay "
                 "per iteration.")


def load_line(load: GpuLoad | None) -> str | None:
    """The SM clock and power sampled while GPU routes were timed (benchmarks.gpu_load), or None."""
    if load is None or not load.samples:
        return None
    parts = []
    if load.sm_clock_mhz is not None:
        clock = load.sm_clock_mhz
        parts.append(f"SM clock {clock.min:.0f}–{clock.max:.0f} MHz (median {clock.median:.0f})")
    if load.power_w is not None:
        power = load.power_w
        parts.append(f"power {power.min:.0f}–{power.max:.0f} W (median {power.median:.0f})")
    return f"under load: {', '.join(parts)}, {load.samples} samples" if parts else None


def environment_line(environment: dict[str, Any], load: GpuLoad | None = None) -> str:
    """The machine in one line, from benchmarks.environment's record."""
    gpu = environment["gpu"]
    cpu = environment["cpu"]
    parts = [gpu.get("device") or f"CPU only: {cpu['model']}, {cpu['cores']} cores, load average "
                                  f"{cpu.get('load_average_1m')} at start"]
    under_load = load_line(load)
    if under_load:
        parts.append(under_load)
    if environment.get("nvidia_smi"):
        smi = environment["nvidia_smi"][0]
        # Read once before anything ran: an idle GPU's clock (345 MHz on the H100), not the one it measured at.
        parts.append(f"SM clock at start {smi.get('clocks.sm')} (max {smi.get('clocks.max.sm')}), power limit "
                     f"{smi.get('power.limit')}, driver {smi.get('driver_version')}")
    if environment.get("jetson"):
        parts.append(f"Jetson {environment['jetson']['l4t']}, nvpmodel: {environment['jetson']['nvpmodel']}")
    packages = environment["packages"]
    parts.append(", ".join(f"{name} {packages[name]}" for name in ("torch", "onnxruntime", "tensorrt")
                           if name in packages))
    return "; ".join(parts)


def summary_table(report: BenchRun) -> list[str]:
    """One row per measured route: median latency (ms) and throughput (img/s) per batch."""
    batches = sorted({r.batch for route in report.routes for r in route.measured_results()})
    lines = ["| route | " + " | ".join(f"batch {b}: p50 ms (img/s)" for b in batches) + " |",
             "|---|" + "---|" * len(batches)]
    for route in report.routes:
        if route.status != "measured":
            continue
        by_batch = {r.batch: r.measured for r in route.results}
        cells = [f"{_fmt(m.p50_ms)} ({_fmt(m.throughput_img_s, 1)})" if (m := by_batch.get(batch)) else "—"
                 for batch in batches]
        lines.append(f"| {_route_label(route)} | " + " | ".join(cells) + " |")
    return lines


def skipped_lines(report: BenchRun) -> list[str]:
    lines = []
    for route in report.routes:
        if route.status != "measured":
            lines.append(f"- {route.label}: {route.status}: {route.reason}")
        else:
            lines += [f"- {route.label} batch {r.batch}: skipped: {r.reason}" for r in route.results
                      if r.measured is None]
    return lines


def _launched(reports: Iterable[BenchRun]) -> bool:
    """Whether a table has a route timed without a CUDA graph (then NO_GRAPH_NOTE goes with it)."""
    return any(route.graph_used() is False for report in reports for route in report.routes
               if route.status == "measured")


def markdown(report: BenchRun) -> str:
    """The full Markdown of one run: summary, per-batch statistics, skipped routes, goals, reference numbers."""
    lines = [f"# Swin-{report.variant} {report.image_size[0]}×{report.image_size[1]} benchmark, "
             f"{report.created[:10]}", ""]
    if report.complete is False:
        lines += [f"Incomplete: {_progress(report.interrupted_during, report.pending)}.", ""]
    lines += [environment_line(report.environment, report.gpu_load), "", *summary_table(report), ""]
    if _launched([report]):
        lines += [NO_GRAPH_NOTE, ""]
    lines += ["| route | batch | p50 ms | p90 ms | p99 ms | mean ms | img/s | iterations | timer | memory MB | "
              "SM MHz, W (median under load) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for route in report.routes:
        for r in route.results:
            if (m := r.measured) is not None:
                lines.append(f"| {_route_label(route)} | {r.batch} | {_fmt(m.p50_ms)} | {_fmt(m.p90_ms)} | "
                             f"{_fmt(m.p99_ms)} | {_fmt(m.mean_ms)} | {_fmt(m.throughput_img_s, 1)} | "
                             f"{m.iterations} ({m.stopped_by}) | {route.timer} | {_fmt(m.memory_mb, 0)} | "
                             f"{_load_cell(r.gpu_load)} |")
    skipped = skipped_lines(report)
    if skipped:
        lines += ["", "Not measured:", *skipped]
    lines += ["", "Goals (on real hardware):"]
    for goal in report.goals:
        verdict = goal.reason if goal.met is None else f"{goal.value} → {'met' if goal.met else 'MISSED'}"
        lines.append(f"- {goal.goal}: {verdict}")
    return "\n".join([*lines, "", *_reference_lines()]) + "\n"


def _reference_lines() -> list[str]:
    return ["Reference numbers (docs/design.md §7, published, not measured here):", "", "| source | numbers |",
            "|---|---|", *(f"| {s} | {n} |" for s, n in REFERENCE_NUMBERS)]


def _load_cell(load: GpuLoad | None) -> str:
    if load is None or not load.samples:
        return "—"
    clock, power = load.sm_clock_mhz, load.power_w
    return (f"{clock.median:.0f} MHz" if clock else "— MHz") + (f", {power.median:.0f} W" if power else ", — W")


def _progress(interrupted_during: str | None, pending: Sequence[str] = ()) -> str:
    """What an interrupted run did not reach (its JSON holds the routes it finished)."""
    during = f"interrupted during {interrupted_during}" if interrupted_during else "stopped before the end"
    return during + (f", not reached: {', '.join(pending)}" if pending else "")


# ---------------------------------------------------------------------------------------------------------
# Plot and files


def line_styles(routes: Sequence[RouteRecord]) -> list[dict[str, str]]:
    """Each plotted route's color and line style: a fused route (``*-fused``) dashed in its unfused route's color, so
    the pairs read at a glance (and matplotlib's 10 cycle colors repeat later)."""
    colors: dict[tuple[str, str], str] = {}
    styles = []
    for route in routes:
        unfused = route.name.removesuffix(FUSED_SUFFIX)
        styles.append({"color": colors.setdefault((unfused, route.precision), f"C{len(colors) % 10}"),
                       "linestyle": "-" if unfused == route.name else "--"})
    return styles


def plot(report: BenchRun, path: Path) -> Path:
    """Median latency vs batch per measured route (log-log), bars from p50 to p99."""
    import matplotlib

    matplotlib.use("Agg")  # no display on CI machines; must precede pyplot
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    figure, axes = plt.subplots(figsize=(8, 5))
    all_batches: set[int] = set()
    plotted = [route for route in report.routes if route.measured_results()]
    for route, style in zip(plotted, line_styles(plotted), strict=True):
        results = route.measured_results()
        batches = [r.batch for r in results]
        all_batches.update(batches)
        p50 = [r.measured.p50_ms for r in results if r.measured]
        spread = [[0.0] * len(results), [r.measured.p99_ms - r.measured.p50_ms for r in results if r.measured]]
        axes.errorbar(batches, p50, yerr=spread, marker="o", capsize=3, **style,
                      label=f"{route.label} ({route.device})")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xticks(sorted(all_batches))  # label the measured batches as plain numbers, not powers of two
    for axis in (axes.xaxis, axes.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    axes.set_xlabel("batch")
    axes.set_ylabel("latency, ms (p50, bar to p99)")
    axes.set_title(f"Swin-{report.variant}: {environment_line(report.environment).split(';')[0]}")
    axes.grid(True, which="both", alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def utc_now() -> datetime.datetime:
    """Now, to the second: a run's ``created`` (when it started) and its files' time stamp, and its ``finished``."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def timestamped(name: str, created: datetime.datetime) -> str:
    """``<name>_<UTC date>T<time>Z``: names of one device sort by time, after the date-only names of earlier
    committed runs (``.`` sorts before ``T``), and need no characters a file system may reject (``:``)."""
    return f"{name}_{created.astimezone(datetime.timezone.utc):%Y-%m-%dT%H%M%SZ}"


def _link_all(sources: dict[str, Path], stem: Path) -> list[Path]:
    """Hard-link each source to ``<stem><suffix>``: all of them, or none where one of the names is taken."""
    linked: list[Path] = []
    try:
        for suffix, source in sources.items():
            linked.append(Path(f"{stem}{suffix}"))
            os.link(source, linked[-1])  # atomic like a rename, but fails rather than replaces
    except FileExistsError:
        for path in linked[:-1]:  # the last one is the taken name, not ours
            path.unlink()
        raise
    return linked


def write_new(stem: Path, writers: dict[str, Callable[[Path], object]], *, new_name_on_clash: bool = True,
              reserve: tuple[str, ...] = ()) -> list[Path]:
    """``<stem><suffix>`` for each writer, written in a hidden staging folder beside them and then linked into
    place, so never half-written and never replacing a file. A taken name makes the stem ``<stem>_2``, ``_3``…
    (a finished run is never lost), or with ``new_name_on_clash=False`` an error. ``reserve``: suffixes written
    later under the same stem, whose names must be free too."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{stem.name}.", suffix=".partial", dir=stem.parent) as staging:
        staged = {suffix: Path(staging) / f"{stem.name}{suffix}" for suffix in writers}
        for suffix, write in writers.items():
            write(staged[suffix])
        target, attempt = stem, 1
        while True:
            taken = next((name for name in (Path(f"{target}{s}") for s in reserve) if name.exists()), None)
            if taken is None:
                try:
                    return _link_all(staged, target)
                except FileExistsError as clash:
                    taken = clash.filename2
            if not new_name_on_clash:
                raise PipelineError(f"{taken} exists already and is never replaced; remove it first (git rm) to "
                                    "replace it")
            attempt += 1
            target = stem.with_name(f"{stem.name}_{attempt}")


def write_report(report: BenchRun, stem: Path) -> list[Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png``, or ``<stem>_2.*``… where a file has that name."""
    return write_new(stem, {".json": lambda path: write_json(path, report.to_json()),
                            ".md": lambda path: path.write_text(markdown(report)),
                            ".png": lambda path: plot(report, path)})


def start_run(report: JsonRecord, stem: Path) -> Path:
    """Claim ``<stem>.json`` for a run that is starting (``<stem>_2.json``… where that name, or the .md or .png
    beside it, is taken) by writing ``report`` to it; the run then rewrites it with :func:`update_run`."""
    [json_path] = write_new(stem, {".json": lambda path: write_json(path, report.to_json())}, reserve=(".md", ".png"))
    return json_path


def update_run(json_path: Path, report: JsonRecord) -> Path:
    """Rewrite the run's own JSON, atomically: a reader (or a kill) sees the previous version or this one."""
    return write_json(json_path, report.to_json())


def finish_run(json_path: Path, report: BenchRun) -> list[Path]:
    """The run's last JSON and its .md and .png beside it (linked into place from a staging folder, never over a
    file: start_run found their names free, and every writer here claims a stem by its .json first)."""
    update_run(json_path, report)
    stem = json_path.with_suffix("")
    with tempfile.TemporaryDirectory(prefix=f".{stem.name}.", suffix=".partial", dir=stem.parent) as staging:
        staged = {".md": Path(staging) / f"{stem.name}.md", ".png": Path(staging) / f"{stem.name}.png"}
        staged[".md"].write_text(markdown(report))
        plot(report, staged[".png"])
        try:
            return [json_path, *_link_all(staged, stem)]
        except FileExistsError as clash:
            raise PipelineError(f"{clash.filename2} appeared during the run and is never replaced; the run's "
                                f"results are in {json_path}: `python -m benchmarks.report {json_path}` prints "
                                "its Markdown") from None


def commit_run(run: Path, results_dir: Path) -> list[Path]:
    """Copy a run's JSON and the .md/.png beside it into ``results_dir`` under the same name, for git."""
    if run.suffix != ".json" or not run.is_file():
        raise PipelineError(f"{run}: no such .json file; pass a run that `make bench` wrote under "
                            f"{RUNS_DIR.relative_to(ROOT)}/")
    files = [f for f in (run, run.with_suffix(".md"), run.with_suffix(".png")) if f.is_file()]
    return write_new(results_dir / run.stem, {f.suffix: functools.partial(shutil.copyfile, f) for f in files},
                     new_name_on_clash=False)


# ---------------------------------------------------------------------------------------------------------
# README


def committed_results(results_dir: Path, pattern: str = RESULT_GLOB) -> list[Path]:
    """Files matching ``pattern`` in ``results_dir`` or one folder down (where ``device_check --file-results`` puts
    a GPU run's files) that are under version control (all of them outside a git checkout): the README shows what
    others can reproduce from the repository, not a local run that was never committed."""
    files = sorted([*results_dir.glob(pattern), *results_dir.glob(f"*/{pattern}")])
    try:
        # Run in results_dir, git lists the tracked files below it by their paths relative to it.
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=results_dir, capture_output=True, text=True,
                                check=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        return files
    tracked = set(listed)
    return [f for f in files if f.relative_to(results_dir).as_posix() in tracked]


def _utc(stamp: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


R = TypeVar("R", BenchRun, KernelBenchRun)


@dataclasses.dataclass(frozen=True)
class Committed(Generic[R]):
    """A committed result and its file's path relative to the results folder (the README links to it)."""

    record: R
    file: str


def load_results(files: Iterable[Path], kind: type[R], results_dir: Path | None = None) -> list[Committed[R]]:
    """Each file as a ``kind`` record, with its path relative to ``results_dir`` (default: its own folder), the part
    of the README's link after ``benchmarks/results/``. Kernel files of the first GPU run's format are left out."""
    loaded = []
    for file in files:
        data = json.loads(file.read_text())
        if kind is KernelBenchRun and not KernelBenchRun.current_format(data):
            continue
        loaded.append(Committed(kind.from_json(data), file.relative_to(results_dir or file.parent).as_posix()))
    return loaded


def newest_by(results: Iterable[Committed[R]], key: Callable[[R], Any],
              when: Callable[[R], datetime.datetime]) -> list[Committed[R]]:
    """The newest result per ``key``, newest first: a complete one before an interrupted one (whose JSON holds only
    what it finished), then by ``when`` it ran (then by file name, so that a tie is decided the same every time)."""
    newest: dict[Any, Committed[R]] = {}

    def rank(result: Committed[R]) -> tuple[bool, datetime.datetime, str]:
        return result.record.complete is not False, when(result.record), result.file

    for result in results:
        if key(result.record) not in newest or rank(result) > rank(newest[key(result.record)]):
            newest[key(result.record)] = result
    return sorted(newest.values(), key=lambda result: when(result.record), reverse=True)


def newest_per_device(files: Iterable[Path], results_dir: Path | None = None) -> list[Committed[BenchRun]]:
    """The newest run per (variant, device slug), newest first (:func:`newest_by`, by when it started)."""
    return newest_by(load_results(files, BenchRun, results_dir), lambda r: (r.variant, r.device),
                     lambda r: _utc(r.created))


def newest_kernel_per_device(files: Iterable[Path], results_dir: Path | None = None) -> list[Committed[KernelBenchRun]]:
    """The newest kernel benchmark (benchmarks.kernel_bench's JSON) per device whose goals judge at least one row,
    newest first. Runs with no row of the goals' precision (the FP32 run beside the FP16 one) are left out: they
    have nothing for the goal table."""
    judged = [r for r in load_results(files, KernelBenchRun, results_dir)
              if any(verdict.row is not None for verdict in r.record.goals)]
    return newest_by(judged, lambda r: device_slug(r.environment), lambda r: _utc(r.environment["collected_at"]))


def _heading(title: str, details: list[str], result: Committed[R], progress: str) -> str:
    """A result's bold title, then what it ran on, whether it is incomplete and the link to its file."""
    incomplete = [f"incomplete: {progress}"] if result.record.complete is False else []
    link = f"[`{result.file}`](benchmarks/results/{result.file})"
    return f"**{title}** ({'; '.join([*details, *incomplete, link])})"


def readme_section(reports: list[Committed[BenchRun]]) -> str:
    if not reports:
        return "(no benchmark results committed yet)\n"
    lines = ["Generated by `python -m benchmarks.report --readme README.md` from the newest committed file per "
             "device in `benchmarks/results/`; rerun `make bench` on your machine for its numbers. Throughput is "
             "batch / mean latency, so latency spikes (other processes on a CPU machine) lower it below batch / p50."]
    if _launched(r.record for r in reports):
        lines += ["", NO_GRAPH_NOTE]
    for result in reports:
        report = result.record
        lines += ["", _heading(f"Swin-{report.variant}, {report.created[:10]}",
                               [environment_line(report.environment, report.gpu_load)], result,
                               _progress(report.interrupted_during, report.pending)),
                  "", *summary_table(report)]
        skipped = skipped_lines(report)
        if skipped:
            lines += ["", "<details><summary>not measured on this machine</summary>", "", *skipped, "",
                      "</details>"]
    return "\n".join([*lines, "", *_reference_lines()]) + "\n"


def _percent(fraction: float | None) -> str:
    # An unknown DRAM peak (a card missing from kernel_bench's table) makes the fraction NaN.
    return "—" if fraction is None or not math.isfinite(fraction) else f"{100 * fraction:.1f}%"


def kernel_goal_table(record: KernelBenchRun) -> list[str]:
    """One line per row and batch that the record's kernel goals judge, in the order of the run: its times and the
    verdict of each goal that judges it."""
    verdicts: dict[tuple[str, str, int | None], list[str]] = {}
    for verdict in record.goals:
        if verdict.row is not None:
            outcome = "not measured" if verdict.met is None else "met" if verdict.met else "MISSED"
            verdicts.setdefault((verdict.row, verdict.dtype, verdict.batch), []).append(f"{verdict.id} {outcome}")
    lines = ["| row | batch | kernel µs | % of DRAM peak | × torch.compile | × baseline | goals |",
             "|---|---|---|---|---|---|---|"]
    for row in record.results:
        judged = verdicts.get((row.shape, row.dtype, row.batch))
        kernel = row.timings.get("kernel")
        if judged:
            lines.append(f"| {row.shape} {row.dtype} | {row.batch} | {_fmt(kernel and kernel.us, 1)} | "
                         f"{_percent(kernel and kernel.fraction_of_peak)} | {_fmt(row.speedups.get('compile'))} | "
                         f"{_fmt(row.speedups.get('baseline'))} | {', '.join(judged)} |")
    return lines


def goal_lines(verdicts: Sequence[KernelVerdict]) -> list[str]:
    """One line per goal of ``verdicts`` (``kernel_bench.evaluate_kernel_goals``): rows meeting it, and the worst
    measured value against the target."""
    lines = []
    for goal_id in dict.fromkeys(v.id for v in verdicts):
        mine = [v for v in verdicts if v.id == goal_id]
        comparison, target = mine[0].comparison, mine[0].target
        values = [v.value for v in mine if v.value is not None]
        worst = (min(values) if comparison == ">=" else max(values)) if values else None
        met = sum(v.met is True for v in mine)
        lines.append(f"{goal_id}: {met}/{len(mine)} rows met (worst {'-' if worst is None else f'{worst:.3g}'}, "
                     f"target {comparison} {target:g})")
    return lines


def kernel_readme_section(records: list[Committed[KernelBenchRun]]) -> str:
    if not records:
        return ("(no kernel benchmark in the current format committed yet: `python -m benchmarks.device_check` on a "
                "GPU makes one, `--file-results` files it under `benchmarks/results/`)\n")
    lines = ["Generated by `python -m benchmarks.report --readme README.md` from the newest committed "
             "`kernel_bench*.json` per device in `benchmarks/results/` (or a folder below it): the rows the goals "
             "judge, µs per call of CUDA-graph replays; × is the other candidate's time over the kernel's."]
    for result in records:
        record, environment = result.record, result.record.environment
        peak = f"DRAM peak {_fmt(environment.get('peak_dram_gbs'), 0)} GB/s ({environment.get('peak_source')})"
        lines += ["", _heading(f"SwinWindowAttention kernel, {environment['collected_at'][:10]}",
                               [environment_line(environment, record.gpu_load), peak], result, _progress(None)),
                  "", *kernel_goal_table(record), ""]
        descriptions = {verdict.id: verdict.goal for verdict in record.goals}
        # goal_lines has one line per goal, in the order the goals first appear (as descriptions has them).
        lines += [f"- {line} — {description}"
                  for line, description in zip(goal_lines(record.goals), descriptions.values(), strict=True)]
    return "\n".join(lines) + "\n"


def update_readme(readme: Path, sections: dict[Markers, str]) -> bool:
    """Replace the text between each pair of markers by its section, all or none (every pair is checked before
    the file is written); return whether the file changed."""
    original = text = readme.read_text()
    for (start_marker, end_marker), section in sections.items():
        start, end = text.find(start_marker), text.find(end_marker)
        if start < 0 or end < start:
            raise PipelineError(f"{readme} lacks the markers {start_marker} … {end_marker}; add them where that "
                                "table should go")
        text = text[:start + len(start_marker)] + "\n" + section + text[end:]
    if text == original:
        return False
    with atomic_path(readme) as tmp:
        tmp.write_text(text)
    return True


def readme_sections(results_dir: Path) -> dict[Markers, str]:
    """Each generated README block, by its markers, from the committed files in ``results_dir``."""
    return {BENCH_MARKERS: readme_section(newest_per_device(committed_results(results_dir), results_dir)),
            KERNEL_MARKERS: kernel_readme_section(newest_kernel_per_device(committed_results(results_dir, KERNEL_GLOB),
                                                                           results_dir))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="*", type=Path, help="result JSONs to print as Markdown")
    parser.add_argument("--commit", nargs="+", type=Path, default=[], metavar="JSON",
                        help="copy these runs (with their .md and .png) into --results-dir, to be added with git; "
                             "a file already there is never replaced")
    parser.add_argument("--readme", type=Path, help="README to update from the newest committed results (the "
                        "whole-network and the kernel table)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="committed results (default benchmarks/results)")
    args = parser.parse_args(argv)
    try:
        for run in args.commit:
            for path in commit_run(run, args.results_dir):
                print(f"wrote {path}")
        if args.commit:
            print("next: `git add` these files, then `python -m benchmarks.report --readme README.md`")
        if args.readme:
            # Every block: markers missing for one is an error, never a block silently left stale.
            changed = update_readme(args.readme, readme_sections(args.results_dir))
            print(f"{args.readme}: {'updated' if changed else 'already up to date'}")
        for file in args.results:
            print(markdown(BenchRun.from_json(json.loads(file.read_text()))))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
