"""The benchmark's pure parts on synthetic data (statistics, timers' budget logic, reports, README generation,
goals), skip reasons on this machine, where results go (never onto an existing file), and a tiny end-to-end CPU
run of `python -m benchmarks.bench`."""

from __future__ import annotations

import datetime
import json
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench, environment, profile, report
from benchmarks.paths import OnnxruntimePath, PathUnavailable, TensorRTPath, TorchPath, deadline
from benchmarks.stats import percentile, speedup, summarize
from benchmarks.timers import Budget, WallClockTimer
from pipeline.errors import PipelineError

# ---------------------------------------------------------------------------------------------------------
# statistics


def test_percentiles_of_known_timings_match_numpy():
    values = list(range(1, 101))  # 1..100 ms: the median is 50.5, p90 90.1, p99 99.01
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    rng = np.random.default_rng(0)
    timings = sorted(rng.lognormal(0, 0.5, 257).tolist())
    for q in (0, 1, 50, 90, 95, 99, 100):
        assert percentile(timings, q) == pytest.approx(np.percentile(timings, q))


def test_summary_throughput_and_order_independence():
    timings = [2.0] * 90 + [4.0] * 9 + [40.0]  # a tail: p99 sees it, the median does not
    summary = summarize(list(reversed(timings)), batch=8)
    assert summary["iterations"] == 100
    assert summary["p50_ms"] == 2.0
    assert summary["p90_ms"] == pytest.approx(2.2)  # between the 90th (2.0) and 91st (4.0) values
    assert summary["p99_ms"] == pytest.approx(4.36)
    assert summary["max_ms"] == 40.0 and summary["min_ms"] == 2.0
    assert summary["mean_ms"] == pytest.approx((180 + 36 + 40) / 100)
    assert summary["throughput_img_s"] == pytest.approx(8 * 1000 / summary["mean_ms"])
    assert speedup(10.0, 4.0) == 2.5


@pytest.mark.parametrize(("timings", "batch"), [([], 1), ([1.0], 0), ([-1.0, 2.0], 1), ([float("inf")], 1)])
def test_summary_rejects_bad_input(timings, batch):
    with pytest.raises(ValueError):
        summarize(timings, batch)


# ---------------------------------------------------------------------------------------------------------
# timers


class FakeClock:
    """Each step advances time by ``step_s``; the timer reads the clock, the step advances it."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s, self.calls = 0.0, step_s, 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.calls += 1
        self.now += self.step_s


def test_wall_clock_timer_stops_at_the_time_budget_after_min_iterations():
    clock = FakeClock(0.5)
    budget = Budget(warmup=2, iterations=200, min_iterations=5, seconds=3.0)
    measurement = WallClockTimer(clock).measure(clock.step, budget)
    assert measurement.stopped_by == "time-budget"
    assert len(measurement.latencies_ms) == 6  # 6 × 0.5 s reaches 3 s
    assert measurement.latencies_ms == [500.0] * 6
    assert clock.calls == 8  # warm-up runs but is not timed


def test_wall_clock_timer_runs_min_iterations_even_past_the_budget():
    clock = FakeClock(10.0)
    measurement = WallClockTimer(clock).measure(clock.step, Budget(warmup=0, iterations=50, min_iterations=4,
                                                                  seconds=1.0))
    assert (len(measurement.latencies_ms), measurement.stopped_by) == (4, "time-budget")


def test_wall_clock_timer_without_budget_runs_all_iterations():
    clock = FakeClock(1e-3)
    measurement = WallClockTimer(clock).measure(clock.step, Budget(warmup=0, iterations=200, min_iterations=200))
    assert (len(measurement.latencies_ms), measurement.stopped_by) == (200, "iterations")


def test_budget_validation():
    with pytest.raises(ValueError):
        Budget(iterations=10, min_iterations=20)
    with pytest.raises(ValueError):
        Budget(seconds=0)


def test_deadline_turns_an_overrun_into_a_skip_even_when_wrapped():
    with pytest.raises(PathUnavailable, match=r"did not finish within 0\.05 s"):
        with deadline(0.05, "slow step"):
            time.sleep(2)
    with pytest.raises(PathUnavailable):  # torch.compile wraps exceptions raised inside it
        with deadline(0.05, "wrapped step"):
            try:
                time.sleep(2)
            except PathUnavailable as inner:
                raise RuntimeError("backend compiler failed") from inner
    with deadline(5, "fast step"):
        pass


# ---------------------------------------------------------------------------------------------------------
# paths that cannot run on a CPU-only machine say why


@pytest.mark.skipif(environment.driver_version() is not None, reason="checks the reasons given without a GPU")
def test_gpu_paths_give_reasons_without_a_gpu():
    engine_never_built = pytest.fail  # setup must refuse before asking for the engine
    paths = [TensorRTPath("tensorrt-plugin", "fp16", engine_never_built, None),
             TorchPath(lambda: None, (224, 224), "fp16", "cuda"),
             OnnxruntimePath("onnxruntime-cuda", engine_never_built, "fp16")]
    for path in paths:
        with pytest.raises(PathUnavailable) as reason:
            path.setup()
        assert "install" in str(reason.value) or "CUDA" in str(reason.value)
    with pytest.raises(PathUnavailable, match="INT8"):
        TorchPath(lambda: None, (224, 224), "int8", "cpu").setup()


# ---------------------------------------------------------------------------------------------------------
# reports


def synthetic_report(created: str = "2026-11-25T10:00:00+00:00", device: str = "test-gpu") -> dict:
    def measured(name: str, precision: str, p50s: dict[int, float]) -> dict:
        results = [{"batch": b, "status": "measured", **summarize([p50] * 5, b), "stopped_by": "iterations",
                    "elapsed_s": 1.0, "memory_mb": 100.0} for b, p50 in p50s.items()]
        return {"name": name, "precision": precision, "device": "cuda", "note": "", "timer": "cuda-events",
                "status": "measured", "reason": None, "results": results}

    paths = [measured("tensorrt-plugin", "fp16", {1: 1.0, 32: 10.0}),
             measured("tensorrt-native", "fp16", {1: 1.5, 32: 12.0}),
             measured("tensorrt-plugin", "int8", {32: 8.0}),
             {"name": "onnxruntime-cuda", "precision": "fp32", "device": "cuda", "note": "", "timer": None,
              "status": "skipped", "reason": "no CUDAExecutionProvider", "results": []}]
    env = environment.collect()
    return {"schema": 1, "variant": "T", "image_size": [224, 224], "created": created, "device": device,
            "command": [], "environment": env, "settings": {}, "inputs": {}, "paths": paths,
            "goals": report.evaluate_goals(paths)}


def test_goals_are_evaluated_or_explained():
    goals = {g["id"]: g for g in synthetic_report()["goals"]}
    latency = goals["plugin_vs_native_fp16_b1"]
    assert latency["value"] == pytest.approx(1.0 / 1.5, abs=1e-3) and latency["met"] is True
    throughput = goals["int8_vs_fp16_throughput_b32"]
    assert throughput["value"] == pytest.approx(1.25) and throughput["met"] is False
    missing = report.evaluate_goals([])
    assert all(g["met"] is None and "not measured" in g["reason"] for g in missing)


def test_report_files_are_valid_json_markdown_and_png(tmp_path):
    data = synthetic_report()
    written = report.write_report(data, tmp_path / "bench_t_test")
    assert [p.suffix for p in written] == [".json", ".md", ".png"]
    assert json.loads(written[0].read_text())["paths"] == data["paths"]
    text = written[1].read_text()
    assert "| tensorrt-plugin fp16 | 1.00 (1,000.0) | 10.00 (3,200.0) |" in text
    assert "onnxruntime-cuda fp32: skipped: no CUDAExecutionProvider" in text
    assert "FasterTransformer" in text  # the reference numbers of docs/design.md §7
    png = written[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200
    assert not list(tmp_path.glob(".*.partial"))


def test_result_names_sort_by_time_next_to_date_only_ones():
    names = [report.timestamped("bench_t_gpu-a", datetime.datetime(2026, 11, day, hour, tzinfo=datetime.timezone.utc))
             for day, hour in ((20, 9), (20, 23), (21, 0))]
    assert names[0] == "bench_t_gpu-a_2026-11-20T090000Z"
    # A date-only name (committed before time stamps) sorts before that day's time-stamped runs, a "_2" after.
    files = ["bench_t_gpu-a_2026-11-20.json", *(f"{n}.json" for n in names), f"{names[1]}_2.json"]
    assert sorted(reversed(files)) == [files[0], files[1], files[2], files[4], files[3]]
    eastern = datetime.timezone(datetime.timedelta(hours=-5))
    assert report.timestamped("x", datetime.datetime(2026, 11, 20, 4, tzinfo=eastern)) == "x_2026-11-20T090000Z"


def test_readme_table_comes_from_the_newest_result_per_device(tmp_path):
    for created, device in (("2026-11-01T00:00:00+00:00", "gpu-a"), ("2026-11-20T00:00:00+00:00", "gpu-a"),
                            ("2026-11-10T00:00:00+00:00", "gpu-b"), ("2026-11-10T12:30:00+00:00", "gpu-b")):
        stem = report.timestamped(f"bench_t_{device}", datetime.datetime.fromisoformat(created))
        if created.endswith("T00:00:00+00:00"):  # as named before time stamps
            stem = f"bench_t_{device}_{created[:10]}"
        (tmp_path / f"{stem}.json").write_text(json.dumps(synthetic_report(created, device)))
    newest = report.newest_per_device(sorted(tmp_path.glob("bench_*.json")))
    assert [(r["device"], r["created"]) for r in newest] == [("gpu-a", "2026-11-20T00:00:00+00:00"),
                                                             ("gpu-b", "2026-11-10T12:30:00+00:00")]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nold\n{report.README_END}\n\n## Next\n")
    assert report.update_readme(readme, report.readme_section(newest))
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{report.README_END}\n\n## Next\n")
    assert "bench_t_gpu-a_2026-11-20.json" in text and "2026-11-01" not in text
    assert "bench_t_gpu-b_2026-11-10T123000Z.json" in text
    assert not report.update_readme(readme, report.readme_section(newest))  # idempotent
    readme.write_text("no markers")
    with pytest.raises(PipelineError, match="markers"):
        report.update_readme(readme, "x")


def test_report_never_replaces_a_file(tmp_path):
    data = synthetic_report()
    (tmp_path / "bench_t_test.md").write_text("an earlier run")
    written = report.write_report(data, tmp_path / "bench_t_test")
    assert [p.name for p in written] == ["bench_t_test_2.json", "bench_t_test_2.md", "bench_t_test_2.png"]
    assert (tmp_path / "bench_t_test.md").read_text() == "an earlier run"
    assert not (tmp_path / "bench_t_test.json").exists()  # a run's files keep one name
    again = report.write_report(data, tmp_path / "bench_t_test")
    assert again[0].name == "bench_t_test_3.json" and written[0].read_text() == again[0].read_text()
    assert not list(tmp_path.glob(".*.partial"))


def test_commit_copies_a_run_into_the_results_and_never_replaces_one(tmp_path, capsys):
    [run_json, run_md, run_png] = report.write_report(synthetic_report(), tmp_path / "build" / "bench_t_x")
    results = tmp_path / "results"
    assert report.main(["--commit", str(run_json), "--results-dir", str(results)]) == 0
    assert "git add" in capsys.readouterr().out
    for source in (run_json, run_md, run_png):
        assert (results / source.name).read_bytes() == source.read_bytes()
    (results / run_md.name).write_text("committed and edited")
    assert report.main(["--commit", str(run_json), "--results-dir", str(results)]) == 2
    assert "exists already" in capsys.readouterr().err
    assert (results / run_md.name).read_text() == "committed and edited"
    assert sorted(p.name for p in results.iterdir()) == sorted(p.name for p in (run_json, run_md, run_png))
    assert report.main(["--commit", str(tmp_path / "missing.json"), "--results-dir", str(results)]) == 2
    assert "build/bench" in capsys.readouterr().err


def test_runs_go_to_a_git_ignored_folder():
    assert bench.build_parser().parse_args([]).results_dir == report.RUNS_DIR
    if shutil.which("git") is None or not (report.ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", str(report.RUNS_DIR / "bench_t_x.json")],
                             cwd=report.ROOT, check=False)
    assert ignored.returncode == 0, f"{report.RUNS_DIR} must be git-ignored: a benchmark never edits a tracked file"


def test_device_slug_is_file_name_safe():
    env = {"gpu": {}, "cpu": {"model": "AMD EPYC 7B13 64-Core Processor", "cores": 2}}
    assert environment.device_slug(env) == "cpu-amd-epyc-7b13-64-core-2c"
    assert environment.device_slug({"gpu": {"device": "NVIDIA H100 80GB HBM3"}, "cpu": {}}) == "h100-80gb-hbm3"


# ---------------------------------------------------------------------------------------------------------
# end to end on the CPU


def test_bench_cpu_end_to_end(swin_t_onnx, tmp_path):
    onnx_dir = Path(swin_t_onnx[0]).parent
    argv = ["--variant", "T", "--batch", "1", "--cpu-budget-s", "1", "--cpu-min-iterations", "2", "--cpu-warmup",
            "1", "--paths", "torch-eager-cpu,onnxruntime-cpu,onnxruntime-cpu-surgered", "--onnx-dir", str(onnx_dir),
            "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert bench.main(argv) == 0
    [json_path] = (tmp_path / "results").glob("bench_t_*.json")
    data = json.loads(json_path.read_text())
    paths = {(p["name"], p["precision"]): p for p in data["paths"]}
    for name in ("torch-eager-cpu", "onnxruntime-cpu", "onnxruntime-cpu-surgered"):
        [result] = paths[(name, "fp32")]["results"]
        assert result["status"] == "measured" and result["iterations"] >= 2 and result["p50_ms"] > 0
    assert "correctness path" in paths[("onnxruntime-cpu-surgered", "fp32")]["note"]
    assert all(p["reason"] for p in data["paths"] if p["status"] != "measured")  # never silently dropped
    assert paths[("tensorrt-plugin", "fp16")]["status"] == "skipped"
    assert data["settings"]["budgets"]["cpu"]["seconds"] == 1.0
    assert json_path.with_suffix(".md").is_file() and json_path.with_suffix(".png").is_file()


def test_bench_writes_under_build_and_never_over_an_earlier_run(tmp_path, monkeypatch):
    # A cheap run: one path that is skipped everywhere (no INT8 engine), so no model is loaded or exported.
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    for name in ("model.onnx", "model.swin.onnx"):
        (onnx_dir / name).touch()
    runs = tmp_path / "build" / "bench"
    finished = datetime.datetime(2026, 11, 26, 10, 15, 30, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(bench, "RUNS_DIR", runs)  # the default, moved out of the checkout
    monkeypatch.setattr(bench, "utc_now", lambda: finished)
    stem = f"bench_t_{environment.device_slug(environment.collect())}_2026-11-26T101530Z"
    runs.mkdir(parents=True)
    (runs / f"{stem}.json").write_text("an earlier run")
    argv = ["--precision", "int8", "--paths", "tensorrt-plugin", "--onnx-dir", str(onnx_dir), "--engine-dir",
            str(tmp_path / "engines"), "--work-dir", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    assert (runs / f"{stem}.json").read_text() == "an earlier run"
    assert sorted(p.name for p in runs.iterdir()) == sorted([f"{stem}.json", f"{stem}_2.json", f"{stem}_2.md",
                                                            f"{stem}_2.png"])
    data = json.loads((runs / f"{stem}_2.json").read_text())
    assert data["created"] == "2026-11-26T10:15:30+00:00"
    assert {(p["name"], p["precision"]): p["status"] for p in data["paths"]}[("tensorrt-plugin", "int8")] == "skipped"


def test_bench_rejects_unknown_paths_and_missing_onnx(tmp_path, capsys):
    assert bench.main(["--onnx-dir", str(tmp_path), "--results-dir", str(tmp_path)]) == 2
    assert "make onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--precision", "fp8"])


# ---------------------------------------------------------------------------------------------------------
# make profile


def test_profile_summary_finds_the_plugin_share_and_myelin_fusion():
    ours = [{"name": "qkv", "average_ms": 1.0, "percent": 25.0},
            {"name": "block0/SwinWindowAttention", "average_ms": 2.0, "percent": 50.0},
            {"name": "proj", "average_ms": 1.0, "percent": 25.0}]
    summary = profile.summarize_layers(ours, ["block0/SwinWindowAttention"])
    assert (summary["plugin_layers"], summary["plugin_percent"], summary["total_ms"]) == (1, 50.0, 4.0)
    assert summary["attention_fused_by_myelin"] is False
    fused = [{"name": "{ForeignNode[/layers.0/Softmax.../MatMul]}", "average_ms": 3.0, "percent": 100.0}]
    assert profile.summarize_layers(fused, [])["attention_fused_by_myelin"] is True
    unfused = [*fused, {"name": "/layers.1/attn/Softmax", "average_ms": 1.0, "percent": 10.0}]
    assert profile.summarize_layers(unfused, [])["standalone_softmax_layers"] == ["/layers.1/attn/Softmax"]


@pytest.mark.skipif(environment.driver_version() is not None, reason="checks the CPU-only behaviour")
def test_profile_skips_with_a_message_without_a_gpu(capsys):
    assert profile.main(["--variant", "T"]) == 0
    assert "profile: skipped" in capsys.readouterr().out
