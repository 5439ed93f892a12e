"""The README's generated blocks from committed result files: the kernel goal table (benchmarks.kernel_bench's JSON,
built here from its own pure functions), result files one folder down (benchmarks.device_check --file-results) and
the git filter, on a temporary results folder and on the repository's own."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import environment, report
from benchmarks.kernel_bench import evaluate_kernel_goals, stage_shapes, summarize_row
from benchmarks.records import (
    BatchResult,
    BenchRun,
    BenchSettings,
    KernelBenchConfig,
    KernelBenchRun,
    Measured,
    OnnxInputs,
    RouteRecord,
)
from benchmarks.stats import summarize
from pipeline.common.records import JsonRecord

H100 = "NVIDIA H100 80GB HBM3"
SHAPES = {shape.label: shape for shape in stage_shapes()}


@pytest.fixture(scope="module")
def machine() -> dict[str, Any]:
    return environment.collect()


def kernel_env(machine: dict[str, Any], collected_at: str, gpu: str | None = H100) -> dict[str, Any]:
    """The environment kernel_bench records: the collector's, its DRAM peak, the load sampled while timing."""
    env = copy.deepcopy(machine)
    env["gpu"]["device"] = gpu
    return {**env, "collected_at": collected_at, "peak_dram_gbs": 3350.0, "peak_source": "table", "gpu_load": None}


#: (shape, batch, dtype, µs per candidate): a goal met, one missed, one not measured, one row no goal judges.
ROWS = (("Swin-T s1/Swin-S s1", 1, "fp16", {"kernel": [8.0]}),
        ("Swin-T s1/Swin-S s1", 64, "fp16", {"kernel": [50.0], "baseline": [60.0], "compile": [100.0]}),
        ("Swin-B s1", 64, "fp16", {"kernel": [100.0]}),
        ("Swin-B384 s1", 8, "fp16", {"kernel": [40.0], "compile": [200.0]}),
        ("Swin-T s1/Swin-S s1", 64, "fp32", {"kernel": [90.0], "compile": [100.0]}))


def kernel_record(env: dict[str, Any], rows=ROWS, complete: bool = True) -> KernelBenchRun:
    results = tuple(summarize_row(SHAPES[label], batch, dtype, timings, env["peak_dram_gbs"])
                    for label, batch, dtype, timings in rows)
    config = KernelBenchConfig(("kernel",), 10, 20, 25.0, 5, True, True, None)
    return KernelBenchRun(environment=env, config=config, complete=complete, results=results,
                          network_attention_us=(), kernel_resources=(), goals=tuple(evaluate_kernel_goals(results)))


def bench_record(env: dict[str, Any], created: str) -> BenchRun:
    """A whole-network result (benchmarks.bench's JSON) with one measured route."""
    measured = Measured(**vars(summarize([1.0], 1)), stopped_by="iterations", elapsed_s=1.0, memory_mb=None)
    route = RouteRecord(name="torch-eager-cuda", precision="fp16", device="cuda", cuda_graph=True, status="measured",
                        results=(BatchResult(1, "measured", measured=measured),))
    return BenchRun(variant="T", image_size=(224, 224), device=environment.device_slug(env), created=created,
                    environment=env, settings=BenchSettings(batches={}, budgets={}, cuda_graphs=True),
                    inputs=OnnxInputs(None, None, "not needed"), routes=(route,), complete=True)


def write(path: Path, record: JsonRecord | dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.to_json() if isinstance(record, JsonRecord) else record))


def between(text: str, markers: report.Markers) -> str:
    start, end = markers
    return text[text.index(start) + len(start):text.index(end)]


def test_kernel_table_shows_the_judged_rows_with_their_verdicts(machine):
    record = report.Committed(kernel_record(kernel_env(machine, "2026-12-01T10:00:00+00:00")),
                              "2026-12-01-h100-80gb-hbm3/kernel_bench_fp16.json")
    lines = report.kernel_readme_section([record]).splitlines()
    heading = next(line for line in lines if line.startswith("**SwinWindowAttention kernel, 2026-12-01**"))
    assert "; DRAM peak 3,350 GB/s (table); [`2026-12-01-h100-80gb-hbm3/kernel_bench_fp16.json`](benchmarks/" \
           "results/2026-12-01-h100-80gb-hbm3/kernel_bench_fp16.json))" in heading and H100 in heading
    # µs, then bytes_moved over that time against 3,350 GB/s, then the other candidate's µs over the kernel's.
    assert [line for line in lines if line.startswith("| Swin")] == [
        "| Swin-T s1/Swin-S s1 fp16 | 1 | 8.0 | 9.0% | — | — | latency_b1 met |",
        "| Swin-T s1/Swin-S s1 fp16 | 64 | 50.0 | 92.0% | 2.00 | 1.20 | bandwidth_w7_b64 met, vs_compile_w7_b64 "
        "MISSED |",
        "| Swin-B s1 fp16 | 64 | 100.0 | 61.4% | — | — | bandwidth_w7_b64 met, vs_compile_w7_b64 not measured |",
        "| Swin-B384 s1 fp16 | 8 | 40.0 | 56.5% | 5.00 | — | bandwidth_w12 met |"]
    assert ("- vs_compile_w7_b64: 0/2 rows met (worst 2, target >= 2.5) — FP16 batch 64, window 7 (Swin-T/B "
            "stages 1-3): >= 2.5x torch.compile") in lines
    assert sum(line.startswith("- ") for line in lines) == 4  # one summary line per goal


def test_readme_shows_the_newest_kernel_and_network_results_per_device(tmp_path, machine, capsys):
    results = tmp_path / "results"
    h100 = "2026-12-01-h100-80gb-hbm3"
    write(results / "kernel_bench_h100-80gb-hbm3_2026-11-30T000000Z.json",
          kernel_record(kernel_env(machine, "2026-11-30T00:00:00+00:00")))
    write(results / h100 / "kernel_bench_fp16.json", kernel_record(kernel_env(machine, "2026-12-01T10:00:00+00:00")))
    # Newer, but only FP32 rows (nothing for the goals), or interrupted, or of the old format: not shown.
    write(results / h100 / "kernel_bench_fp32.json",
          kernel_record(kernel_env(machine, "2026-12-01T10:05:00+00:00"), rows=ROWS[-1:]))
    write(results / "2026-12-02-h100-80gb-hbm3" / "kernel_bench_fp16.json",
          kernel_record(kernel_env(machine, "2026-12-02T00:00:00+00:00"), complete=False))
    write(results / "2026-11-25-h100" / "kernel_bench_fp16.json",
          {"environment": kernel_env(machine, "2026-12-05T00:00:00+00:00"),
           "results": [{"model": "Swin-T", "stage": 1, "batch": 64, "kernel_us": 1.0}]})
    write(results / "kernel_bench_cpu.json", kernel_record(kernel_env(machine, "2026-11-29T00:00:00+00:00", None)))
    write(results / "bench_t_h100-80gb-hbm3_2026-11-25.json",
          bench_record(kernel_env(machine, "2026-11-25T00:00:00+00:00"), "2026-11-25T00:00:00+00:00"))
    write(results / h100 / "bench_t.json",
          bench_record(kernel_env(machine, "2026-12-01T11:00:00+00:00"), "2026-12-01T11:00:00+00:00"))

    # Outside a git checkout every file counts.
    assert len(report.committed_results(results, report.KERNEL_GLOB)) == 6
    assert len(report.committed_results(results)) == 2
    newest = report.newest_kernel_per_device(report.committed_results(results, report.KERNEL_GLOB), results)
    cpu = environment.device_slug(kernel_env(machine, "", None))
    assert [(environment.device_slug(r.record.environment), r.file) for r in newest] == [
        ("h100-80gb-hbm3", f"{h100}/kernel_bench_fp16.json"), (cpu, "kernel_bench_cpu.json")]

    readme = tmp_path / "README.md"
    readme.write_text("".join(f"{start}\nold\n{end}\n" for start, end in (report.BENCH_MARKERS,
                                                                            report.KERNEL_MARKERS)))
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 0
    text = readme.read_text()
    assert "\nold\n" not in text
    network = between(text, report.BENCH_MARKERS)
    assert f"[`{h100}/bench_t.json`](benchmarks/results/{h100}/bench_t.json)" in network
    assert "bench_t_h100-80gb-hbm3_2026-11-25.json" not in network  # the same device's older run
    kernel = between(text, report.KERNEL_MARKERS)
    assert f"(benchmarks/results/{h100}/kernel_bench_fp16.json)" in kernel
    assert "(benchmarks/results/kernel_bench_cpu.json)" in kernel and "fp32.json" not in kernel

    # A README without the kernel markers is an error that names them, not a table silently left out.
    readme.write_text(f"{report.README_START}\n{report.README_END}\n")
    capsys.readouterr()
    assert report.main(["--readme", str(readme), "--results-dir", str(results)]) == 2
    assert "lacks the markers <!-- kernel-table:start --> … <!-- kernel-table:end -->" in capsys.readouterr().err
    assert readme.read_text() == f"{report.README_START}\n{report.README_END}\n"  # all blocks or none


def test_without_a_current_kernel_file_the_block_says_how_to_make_one(tmp_path, machine):
    write(tmp_path / "2026-11-25-h100" / "kernel_bench_fp16.json",
          {"environment": kernel_env(machine, "2026-11-25T00:00:00+00:00"), "results": []})
    assert report.newest_kernel_per_device(report.committed_results(tmp_path, report.KERNEL_GLOB), tmp_path) == []
    assert report.kernel_readme_section([]) == (
        "(no kernel benchmark in the current format committed yet: `python -m benchmarks.device_check` on a GPU "
        "makes one, `--file-results` files it under `benchmarks/results/`)\n")


needs_git = pytest.mark.skipif(shutil.which("git") is None or not (report.ROOT / ".git").exists(),
                               reason="needs git and the repository's checkout")


@needs_git
def test_only_files_git_tracks_count_in_subfolders_too(tmp_path, machine):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    results = tmp_path / "benchmarks" / "results"
    env = kernel_env(machine, "2026-12-01T00:00:00+00:00")
    for name in ("bench_t_a.json", "run/bench_t.json", "run/bench_b384.json"):
        write(results / name, bench_record(env, "2026-12-01T00:00:00+00:00"))
    subprocess.run(["git", "add", "benchmarks/results/bench_t_a.json", "benchmarks/results/run/bench_t.json"],
                   cwd=tmp_path, check=True)
    assert report.committed_results(results) == [results / "bench_t_a.json", results / "run" / "bench_t.json"]


@needs_git
def test_the_repository_readme_blocks_are_generated_from_its_committed_results():
    """What `python -m benchmarks.report --readme README.md` would write is what README.md holds."""
    text = (report.ROOT / "README.md").read_text()
    for markers, section in report.readme_sections(report.RESULTS_DIR).items():
        assert between(text, markers) == "\n" + section, "rerun `python -m benchmarks.report --readme README.md`"
