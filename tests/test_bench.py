"""The benchmark's pure parts on synthetic data (statistics, timers' budget logic, reports, README generation,
goals, which routes replay CUDA graphs and which run by default, clocks and power under load), skip reasons on this
machine, where results go (never onto an existing file, rewritten as each route finishes, valid after a kill), and a
tiny end-to-end CPU run of `python -m benchmarks.bench`."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import export_config, max_abs_diff, small_image_size

import pipeline.kernels.ops
from benchmarks import bench, environment, gpu_load, profile, report
from benchmarks.records import (
    BatchResult,
    BenchRun,
    BenchSettings,
    EngineProfile,
    GpuLoad,
    LayerTime,
    Measured,
    OnnxInputs,
    ProfileRun,
    RouteRecord,
    Skipped,
    Spread,
)
from benchmarks.routes import (
    ModelFactory,
    OnnxruntimeRoute,
    RouteUnavailable,
    TensorRTRoute,
    TorchRoute,
    deadline,
    enable_fused_attention_cuda,
    uses_cuda_graph,
)
from benchmarks.stats import percentile, speedup, summarize
from benchmarks.timers import Budget, WallClockTimer
from pipeline.common.errors import PipelineError
from pipeline.common.variants import SwinConfig
from pipeline.make import EngineRecipe
from pipeline.models import SwinTransformer, perturb_weights_
from pipeline.runner import StageRunner
from pipeline.stages.export import ExportReport

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
    assert summary.iterations == 100
    assert summary.p50_ms == 2.0
    assert summary.p90_ms == pytest.approx(2.2)  # between the 90th (2.0) and 91st (4.0) values
    assert summary.p99_ms == pytest.approx(4.36)
    assert summary.max_ms == 40.0 and summary.min_ms == 2.0
    assert summary.mean_ms == pytest.approx((180 + 36 + 40) / 100)
    assert summary.throughput_img_s == pytest.approx(8 * 1000 / summary.mean_ms)
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
    with pytest.raises(RouteUnavailable, match=r"did not finish within 0\.05 s"):
        with deadline(0.05, "slow step"):
            time.sleep(2)
    with pytest.raises(RouteUnavailable):  # torch.compile wraps exceptions raised inside it
        with deadline(0.05, "wrapped step"):
            try:
                time.sleep(2)
            except RouteUnavailable as inner:
                raise RuntimeError("backend compiler failed") from inner
    with deadline(5, "fast step"):
        pass


# ---------------------------------------------------------------------------------------------------------
# paths that cannot run on a CPU-only machine say why


@pytest.mark.skipif(environment.driver_version() is not None, reason="checks the reasons given without a GPU")
def test_gpu_paths_give_reasons_without_a_gpu():
    engine_never_built = pytest.fail  # setup must refuse before asking for the engine
    paths = [TensorRTRoute("tensorrt-plugin", "fp16", engine_never_built, None),
             TorchRoute(lambda **_: None, (224, 224), "fp16", "cuda"),
             TorchRoute(lambda **_: None, (224, 224), "fp16", "cuda", fused=True),
             OnnxruntimeRoute("onnxruntime-cuda", engine_never_built, "fp16")]
    for path in paths:
        with pytest.raises(RouteUnavailable) as reason:
            path.setup()
        assert "install" in str(reason.value) or "CUDA" in str(reason.value)
    with pytest.raises(RouteUnavailable, match="INT8"):
        TorchRoute(lambda **_: None, (224, 224), "int8", "cpu").setup()


# ---------------------------------------------------------------------------------------------------------
# which paths replay CUDA graphs, which run by default


def every_route(tmp_path: Path, cuda_graphs: bool = True) -> list:
    """build_routes' list; nothing is loaded or built until a path's setup()."""
    inputs = bench.Inputs(EngineRecipe(), None, tmp_path, tmp_path)
    return bench.build_routes(inputs, ("fp16",), cuda_graphs=cuda_graphs, compile_budget_s=None)


def made_by_engine(engine: Path, recipe: EngineRecipe) -> Path:
    """``engine`` (empty) in a folder whose export stage recorded ``recipe``'s model, as make_engine leaves it."""
    engine.parent.mkdir(parents=True, exist_ok=True)
    engine.touch()
    model = recipe.model_record()
    StageRunner(engine.parent).run("export", model.to_json(), [], [],
                                   lambda: ExportReport(onnx=engine.parent / "model.onnx", model=model))
    return engine


def test_attention_path_takes_the_routes_own_folder_and_skips_what_it_cannot_build(tmp_path):
    """make engine ATTENTION=tensorrt writes beside make engine's folder; FP32 and an uncalibrated INT8 are skipped
    with the reason, before anything is exported or built."""
    made = made_by_engine(tmp_path / "swin_t_trtattn" / "swin_t_fp16.engine", EngineRecipe())
    inputs = bench.Inputs(EngineRecipe(), None, tmp_path / "work", tmp_path / "swin_t")
    assert inputs.attention_engine("fp16") == made
    with pytest.raises(RouteUnavailable, match="cannot build FP32"):
        inputs.attention_engine("fp32")
    with pytest.raises(RouteUnavailable, match="PRECISION=int8 ATTENTION=tensorrt"):
        inputs.attention_engine("int8")


def test_an_engine_of_another_model_is_never_benchmarked_as_this_one(tmp_path):
    """The README's backbone command filled the classifier's folder once; the benchmark then took its engine."""
    backbone = EngineRecipe(features_only=True, img_size=(800, 1333))
    made_by_engine(tmp_path / "swin_t" / "swin_t_int8.engine", backbone)
    inputs = bench.Inputs(EngineRecipe(), None, tmp_path / "work", tmp_path / "swin_t")
    with pytest.raises(RouteUnavailable, match=r"no INT8 engine of the Swin-T classifier .* is of the Swin-T backbone"):
        inputs.plugin_engine("int8")
    made_by_engine(tmp_path / "swin_t" / "swin_t_int8.engine", EngineRecipe())
    assert inputs.plugin_engine("int8") == tmp_path / "swin_t" / "swin_t_int8.engine"


def test_an_onnx_dir_of_another_model_is_refused_naming_both(swin_t_onnx, tmp_path, capsys):
    """A folder make_engine did not record (swin_t_onnx's) is judged by its graph: a 224x224 classifier."""
    argv = ["--features-only", "--img-size", "160x224", "--routes", "onnxruntime-cpu", "--onnx-dir",
            str(Path(swin_t_onnx[0]).parent), "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path)]
    assert bench.main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "holds a graph of 224x224 images and 1 output(s), not the Swin-T backbone 160x224" in line
    recorded = tmp_path / "recorded"
    for name in bench.ONNX_NAMES:
        made_by_engine(recorded / name, EngineRecipe())
    assert bench.main([*argv[:-6], "--onnx-dir", str(recorded), *argv[-4:]]) == 2
    err = capsys.readouterr().err
    assert "holds Swin-T classifier 224x224, random (seed 0), not the Swin-T backbone" in err


def test_compile_paths_use_cuda_graphs_when_asked(tmp_path):
    assert uses_cuda_graph("torch-compile-cuda", "cuda", True)
    assert not uses_cuda_graph("torch-compile-cuda", "cuda", False)
    assert not uses_cuda_graph("torch-compile-cpu", "cpu", True)
    assert not uses_cuda_graph("onnxruntime-cuda", "cuda", True)  # no graph support of onnxruntime's here
    for requested in (True, False):
        paths = every_route(tmp_path, cuda_graphs=requested)
        compiled = [p for p in paths if p.name == "torch-compile-cuda"]
        assert [p.precision for p in compiled] == ["fp32", "fp16"]
        for path in compiled:
            assert path.cuda_graph is requested and path.details()["cuda_graph"] is requested
        graphs = {p.name for p in paths if p.cuda_graph}
        assert graphs == ({"tensorrt-plugin", "tensorrt-attention", "tensorrt-native", "torch-eager-cuda",
                           "torch-compile-cuda", "torch-eager-cuda-fused", "torch-compile-cuda-fused"}
                          if requested else set())
        assert not any(p.cuda_graph for p in paths if p.device == "cpu")
    parser = bench.build_parser()
    assert parser.parse_args([]).cuda_graphs is None  # decided by the machine: on wherever a CUDA GPU is visible
    assert parser.parse_args(["--no-cuda-graphs"]).cuda_graphs is False
    assert parser.parse_args(["--cuda-graphs"]).cuda_graphs is True
    assert bench.resolve_cuda_graphs(None, gpu_present=True) is True
    assert bench.resolve_cuda_graphs(None, gpu_present=False) is False
    assert bench.resolve_cuda_graphs(False, gpu_present=True) is False


def test_gpu_run_default_selection_excludes_cpu_paths(tmp_path):
    paths = every_route(tmp_path)
    cpu = {p.name for p in paths if p.device == "cpu"}
    assert cpu == {"torch-eager-cpu", "torch-compile-cpu", "onnxruntime-cpu", "onnxruntime-cpu-surgered"}

    def skipped(plan: list) -> dict[str, str]:
        assert [p for p, _ in plan] == paths  # every path is listed, in order, run or skipped
        return {p.name: reason for p, reason in plan if reason is not None}

    on_gpu = skipped(bench.default_routes(paths, gpu_present=True, cpu_requested=False, selected=None))
    assert on_gpu == dict.fromkeys(cpu, "CPU route: not run by default on a GPU machine; --cpu runs it")
    assert skipped(bench.default_routes(paths, gpu_present=True, cpu_requested=True, selected=None)) == {}
    assert skipped(bench.default_routes(paths, gpu_present=False, cpu_requested=False, selected=None)) == {}
    named = skipped(bench.default_routes(paths, True, False, {"torch-eager-cpu", "tensorrt-plugin"}))
    assert {p.name for p in paths} - set(named) == {"torch-eager-cpu", "tensorrt-plugin"}
    assert set(named.values()) == {"not selected (--routes)"}
    with_cpu = skipped(bench.default_routes(paths, True, True, {"tensorrt-plugin"}))
    assert {p.name for p in paths} - set(with_cpu) == {"tensorrt-plugin", *cpu}


# ---------------------------------------------------------------------------------------------------------
# PyTorch with fused attention (torch.ops.swin.window_attention)


FUSED_ROUTES = ("torch-eager-cuda-fused", "torch-compile-cuda-fused")


def same_weights(config: SwinConfig) -> ModelFactory:
    """A model factory for TorchRoute: Swin of ``config`` with perturbed random weights, the same ones fused or not."""
    torch.manual_seed(0)
    weights = perturb_weights_(SwinTransformer(config)).state_dict()

    def model(*, fused_attention: bool) -> SwinTransformer:
        built = SwinTransformer(config, fused_attention=fused_attention)
        built.load_state_dict(weights)
        return built

    return model


def test_fused_paths_are_gpu_paths_listed_after_their_unfused_ones(tmp_path):
    for requested in (True, False):
        paths = every_route(tmp_path, cuda_graphs=requested)
        torch_cuda = [(p.name, p.precision) for p in paths if p.name.startswith("torch-") and p.device == "cuda"]
        assert torch_cuda == [(name, precision) for name in ("torch-eager-cuda", "torch-eager-cuda-fused",
                                                             "torch-compile-cuda", "torch-compile-cuda-fused")
                              for precision in ("fp32", "fp16")]
        fused = [p for p in paths if p.name in FUSED_ROUTES]
        assert all(p.fused and p.cuda_graph is requested and p.note == "our attention kernel" for p in fused)
        assert [p.compiled for p in fused] == [False, False, True, True]
        assert not any(p.name.endswith("-fused") for p in paths if p.device == "cpu")  # the reference op: no path


@pytest.mark.skipif(environment.driver_version() is not None, reason="checks the reasons given without a GPU")
def test_fused_paths_are_skipped_here_because_they_need_a_cuda_gpu(tmp_path):
    for path in (p for p in every_route(tmp_path) if p.name in FUSED_ROUTES):  # refused before a model is built
        record = bench.run_route(path, (1,), Budget(warmup=0, iterations=1, min_iterations=1))
        assert record.status == "skipped" and record.cuda_graph is True
        assert str(record.reason).startswith(f"{path.name} {path.precision} needs a CUDA GPU")


def test_a_missing_attention_library_is_a_skip_saying_how_to_build_it(tmp_path, monkeypatch):
    """What a fused CUDA path's setup raises when the kernel's library is missing: enable_cuda's own message."""
    monkeypatch.setenv(pipeline.kernels.ops.CUDA_LIBRARY_ENV, str(tmp_path / "libswin_window_attention_cuda.so"))
    with pytest.raises(RuntimeError) as error:
        pipeline.kernels.ops.enable_cuda()
    with pytest.raises(RouteUnavailable, match="does not exist: build it with `make plugin`") as skip:
        enable_fused_attention_cuda()
    assert str(skip.value) == str(error.value) and skip.value.__cause__ is not None


def test_a_fused_torch_path_runs_the_fused_model_with_the_same_weights():
    """On the CPU the op is the reference: the fused path's output is the unfused path's, so TorchRoute builds the
    fused model with the factory's weights. 128×146 pads every stage and shifts the first three."""
    config = export_config("T")
    size, model = small_image_size(config), same_weights(config)
    outputs = []
    for fused in (False, True):
        path = TorchRoute(model, size, "fp32", "cpu", fused=fused)
        path.setup()
        try:
            assert path.model.fused_attention is fused
            outputs.append(path.step(2)())
        finally:
            path.close()
    assert path.name == "torch-eager-cpu-fused" and path.note == "reference attention op"
    assert max_abs_diff(*outputs) <= 1e-4


def empty_onnx_dir(tmp_path: Path) -> Path:
    """Stand-ins for the exports: enough for runs whose every path is skipped before reading them."""
    for name in bench.ONNX_NAMES:
        made_by_engine(tmp_path / "onnx" / name, EngineRecipe())
    return tmp_path / "onnx"


@pytest.mark.skipif(environment.driver_version() is not None, reason="fakes a GPU machine where there is none")
def test_a_gpu_machine_run_skips_cpu_paths_and_turns_graphs_on(tmp_path, monkeypatch):
    # Every GPU path refuses at once here (no CUDA), and the CPU ones are not run: nothing is loaded.
    monkeypatch.setattr(bench, "gpu_present", lambda: True)
    argv = ["--onnx-dir", str(empty_onnx_dir(tmp_path)), "--work-dir", str(tmp_path / "work"), "--results-dir",
            str(tmp_path / "results")]
    assert bench.main(argv) == 0
    [json_path] = (tmp_path / "results").glob("*.json")
    data = load_run(json_path)
    assert data.complete is True and data.pending == () and data.settings.cuda_graphs is True
    records = {(p.name, p.precision): p for p in data.routes}
    for name in ("torch-eager-cpu", "torch-compile-cpu", "onnxruntime-cpu", "onnxruntime-cpu-surgered"):
        assert records[(name, "fp32")].reason == bench.CPU_ON_GPU_MACHINE
    for name in ("torch-compile-cuda", *FUSED_ROUTES):
        assert records[(name, "fp16")].cuda_graph is True
        assert "CUDA GPU" in str(records[(name, "fp16")].reason)  # it ran, and said why it could not


def test_bench_rejects_a_route_name_it_does_not_know_before_exporting(tmp_path, capsys):
    argv = ["--routes", "torch-eager-cpu,torch-eagre-cuda", "--work-dir", str(tmp_path / "work"), "--results-dir",
            str(tmp_path / "results")]
    assert bench.main(argv) == 2
    assert "--routes: no route is named torch-eagre-cuda" in capsys.readouterr().err
    assert bench.build_parser().parse_args(["--paths", "onnxruntime-cpu"]).routes == "onnxruntime-cpu"  # old name
    assert not (tmp_path / "results").exists() and not (tmp_path / "work" / "model.onnx").exists()


def test_pytorch_paths_alone_export_nothing(tmp_path):
    """The ONNX files are made when an ONNX or TensorRT path first asks for them: a PyTorch run (the GPU machine's
    whole-network check) spends no time exporting."""
    argv = ["--routes", "torch-eager-cpu", "--batch", "1", "--iterations", "2", "--cpu-min-iterations", "1",
            "--cpu-warmup", "0", "--work-dir", str(tmp_path / "work"), "--engine-dir", str(tmp_path / "engines"),
            "--results-dir", str(tmp_path / "results")]
    assert bench.main(argv) == 0
    [json_path] = (tmp_path / "results").glob("*.json")
    data = load_run(json_path)
    assert [p.status for p in data.routes if p.name == "torch-eager-cpu"] == ["measured"]
    assert data.inputs == OnnxInputs(None, None, "not needed by the routes run so far")
    assert not (tmp_path / "work" / "model.onnx").exists()


# ---------------------------------------------------------------------------------------------------------
# clocks and power under load


def smi_line(when: datetime.datetime, clock: str, power: str, index: str = "0", uuid: str = "GPU-a1") -> str:
    return f"{when:%Y/%m/%d %H:%M:%S}.{when.microsecond // 1000:03d}, {index}, {uuid}, {clock}, {power}\n"


def test_clock_and_power_samples_are_parsed_and_summarized_inside_the_timed_windows():
    start = datetime.datetime(2026, 11, 25, 16, 47, 24, 125000)
    lines = [smi_line(start + datetime.timedelta(milliseconds=100 * i), clock, power)
             for i, (clock, power) in enumerate([("345", "70.1"), ("1980", "350.5"), ("1755", "420.0"),
                                                 ("1980", "[N/A]"), ("345", "72.0")])]
    samples = [gpu_load.parse_sample(line) for line in lines]
    assert samples[0] == gpu_load.Sample(start.timestamp(), "0", "GPU-a1", 345.0, 70.1)
    assert samples[1] is not None and samples[3] is not None
    assert samples[3].power_w is None
    for junk in ("timestamp, index, uuid, clocks.sm [MHz], power.draw [W]", "No devices were found", "",
                 smi_line(start, "[N/A]", "[N/A]"), "2026/11/25 16:47:24.1"):
        assert gpu_load.parse_sample(junk) is None
    # The idle samples before and after the timed loop are left out: 1755..1980 MHz, not 345.
    loop = (samples[1].time - 0.01, samples[3].time + 0.01)
    under_load = gpu_load.summarize_samples(gpu_load.in_windows(samples, [loop]))
    assert under_load == GpuLoad(3, Spread(1755.0, 1980.0, 1980.0), Spread(350.5, 385.2, 420.0))
    assert gpu_load.summarize_samples([]).to_json() == {"samples": 0}
    by_uuid = gpu_load.device_matcher("3", "a1")  # torch's UUID wins, without nvidia-smi's "GPU-" prefix
    assert by_uuid(samples[0]) and not by_uuid(gpu_load.Sample(0, "0", "GPU-b2", 1.0, 1.0))
    assert gpu_load.device_matcher("1,0", None)(gpu_load.Sample(0, "1", "GPU-b2", 1.0, 1.0))
    assert gpu_load.device_matcher(None, None)(samples[0])


def test_sampler_runs_nvidia_smi_in_the_background_or_says_why_not(tmp_path):
    missing = gpu_load.GpuLoadSampler(executable=str(tmp_path / "nvidia-smi"))
    with missing:
        pass
    summary = missing.summary([(0.0, time.time())])
    assert summary.samples == 0 and "nvidia-smi not found" in str(summary.reason)
    # A stand-in printing nvidia-smi's loop-mode lines for two GPUs; the sampler keeps GPU 1's.
    fake = tmp_path / "fake-nvidia-smi"
    fake.write_text("#!/bin/sh\nwhile true; do\n  now=$(date '+%Y/%m/%d %H:%M:%S.%3N')\n"
                    "  echo \"$now, 0, GPU-a0, 345, 60.0\"\n  echo \"$now, 1, GPU-a1, 1980, 400.0\"\n"
                    "  sleep 0.02\ndone\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    sampler = gpu_load.GpuLoadSampler(device=gpu_load.device_matcher("1", None), executable=str(fake))
    assert "-lms" in sampler.command()
    with sampler:
        start = time.time()
        time.sleep(0.4)
        sampler.windows[1] = (start, time.time())
    summary = sampler.summary(sampler.windows.values())
    assert summary.samples >= 3 and summary.sm_clock_mhz == Spread(1980.0, 1980.0, 1980.0)
    assert summary.power_w is not None and summary.power_w.median == 400.0


# ---------------------------------------------------------------------------------------------------------
# reports


def measured_route(name: str, precision: str, p50s: dict[int, float], **fields) -> RouteRecord:
    """A CUDA route measured at each batch, every iteration taking its p50."""
    results = tuple(BatchResult(b, "measured", measured=Measured(**vars(summarize([p50] * 5, b)),
                                                                 stopped_by="iterations", elapsed_s=1.0,
                                                                 memory_mb=100.0)) for b, p50 in p50s.items())
    return RouteRecord(name=name, precision=precision, device="cuda", timer="cuda-events", status="measured",
                       results=results, **fields)


def synthetic_report(created: str = "2026-11-25T10:00:00+00:00", device: str = "test-gpu", **fields) -> BenchRun:
    routes = (measured_route("tensorrt-plugin", "fp16", {1: 1.0, 32: 10.0}),
              measured_route("tensorrt-native", "fp16", {1: 1.5, 32: 12.0}),
              measured_route("tensorrt-plugin", "int8", {32: 8.0}),
              RouteRecord(name="onnxruntime-cuda", precision="fp32", device="cuda", reason="no CUDAExecutionProvider"))
    settings = BenchSettings(batches={"cuda": (1, 32)}, budgets={"cuda": Budget()}, cuda_graphs=False)
    return BenchRun(variant="T", image_size=(224, 224), created=created, device=device,
                    environment=environment.collect(), settings=settings, inputs=OnnxInputs(None, None, "none"),
                    routes=routes, goals=tuple(report.evaluate_goals(routes, "T")), **fields)


def load_run(json_path: Path) -> BenchRun:
    """A run's JSON as its record; the record writes back exactly the JSON it was read from."""
    data = json.loads(json_path.read_text())
    run = BenchRun.from_json(data)
    assert run.to_json() == data
    return run


def test_goals_are_evaluated_or_explained():
    goals = {g.id: g for g in synthetic_report().goals}
    latency = goals["plugin_vs_native_fp16_b1"]
    assert latency.value == pytest.approx(1.0 / 1.5, abs=1e-3) and latency.met is True
    throughput = goals["int8_vs_fp16_throughput_b32"]
    assert throughput.value == pytest.approx(1.25) and throughput.met is False
    missing = report.evaluate_goals([], "T")
    assert all(g.met is None and "not measured" in str(g.reason) for g in missing)


def test_report_files_are_valid_json_markdown_and_png(tmp_path):
    data = synthetic_report()
    written = report.write_report(data, tmp_path / "bench_t_test")
    assert [p.suffix for p in written] == [".json", ".md", ".png"]
    assert load_run(written[0]) == data
    assert json.loads(written[0].read_text())["paths"][0]["results"][0]["p50_ms"] == 1.0  # the files' keys
    text = written[1].read_text()
    assert "| tensorrt-plugin fp16 | 1.00 (1,000.0) | 10.00 (3,200.0) |" in text
    assert "onnxruntime-cuda fp32: skipped: no CUDAExecutionProvider" in text
    assert "FasterTransformer" in text  # the reference numbers of docs/design.md §7
    png = written[2].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 300 and height > 200
    assert not list(tmp_path.glob(".*.partial"))


def test_fused_paths_are_tabled_after_their_unfused_ones_and_plotted_dashed_in_their_color(tmp_path):
    data = synthetic_report()
    measured = data.routes[0]  # rows follow the run's order, which build_routes makes unfused, then fused
    data = dataclasses.replace(data, routes=(
        data.routes[0], dataclasses.replace(measured, name="torch-eager-cuda", cuda_graph=True),
        dataclasses.replace(measured, name="torch-eager-cuda-fused", cuda_graph=True, note="our attention kernel"),
        *data.routes[1:]))
    text = report.markdown(data)
    assert ("| torch-eager-cuda fp16 [CUDA graph] | 1.00 (1,000.0) | 10.00 (3,200.0) |\n"
            "| torch-eager-cuda-fused fp16 [CUDA graph] (our attention kernel) | 1.00 (1,000.0) |") in text
    styles = report.line_styles([RouteRecord(name=n, precision=p, device="cuda") for n, p in (
        ("torch-eager-cuda", "fp16"), ("torch-eager-cuda-fused", "fp16"), ("torch-compile-cuda-fused", "fp16"),
        ("torch-eager-cuda-fused", "fp32"), ("tensorrt-plugin", "fp16"))])
    assert styles == [{"color": "C0", "linestyle": "-"}, {"color": "C0", "linestyle": "--"},
                      {"color": "C1", "linestyle": "--"}, {"color": "C2", "linestyle": "--"},
                      {"color": "C3", "linestyle": "-"}]
    assert report.plot(data, tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
        (tmp_path / f"{stem}.json").write_text(json.dumps(synthetic_report(created, device).to_json()))
    newest = report.newest_per_device(sorted(tmp_path.glob("bench_*.json")))
    assert [(r.record.device, r.record.created) for r in newest] == [("gpu-a", "2026-11-20T00:00:00+00:00"),
                                                                     ("gpu-b", "2026-11-10T12:30:00+00:00")]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.README_START}\nold\n{report.README_END}\n\n## Next\n")
    assert report.update_readme(readme, {report.BENCH_MARKERS: report.readme_section(newest)})
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{report.README_END}\n\n## Next\n")
    assert "bench_t_gpu-a_2026-11-20.json" in text and "2026-11-01" not in text
    assert "bench_t_gpu-b_2026-11-10T123000Z.json" in text
    assert not report.update_readme(readme, {report.BENCH_MARKERS: report.readme_section(newest)})  # idempotent
    readme.write_text("no markers")
    with pytest.raises(PipelineError, match="markers"):
        report.update_readme(readme, {report.BENCH_MARKERS: "x"})


def test_tables_mark_cuda_graphs_and_the_readme_prefers_complete_runs(tmp_path):
    data = synthetic_report("2026-11-25T16:48:59+00:00", "gpu-a")
    load = GpuLoad(4, Spread(1755, 1980, 1980), Spread(300, 350.5, 420))
    plugin, native = data.routes[:2]
    plugin = dataclasses.replace(plugin, cuda_graph=True, results=(
        dataclasses.replace(plugin.results[0], gpu_load=load), *plugin.results[1:]))
    native = dataclasses.replace(native, details={"cuda_graph": False})  # where the H100 run of 2026-11-25 kept it
    data = dataclasses.replace(data, routes=(plugin, native, *data.routes[2:]), gpu_load=load)
    text = report.markdown(data)
    assert "| tensorrt-plugin fp16 [CUDA graph] | 1.00 (1,000.0) |" in text
    assert "| tensorrt-native fp16 [no CUDA graph] | 1.50" in text and report.NO_GRAPH_NOTE in text
    assert "| 1980 MHz, 350 W |" in text  # the batch's median under load
    assert "under load: SM clock 1755–1980 MHz (median 1980), power 300–420 W (median 350)" in text
    assert "SM clock at start" in text or not data.environment.get("nvidia_smi")
    # An interrupted run started later does not displace the complete one of the same device from the README.
    later = synthetic_report("2026-11-26T09:00:00+00:00", "gpu-a", complete=False, pending=("x fp16",))
    (tmp_path / "bench_t_gpu-a_2026-11-25.json").write_text(json.dumps(data.to_json()))
    (tmp_path / "bench_t_gpu-a_2026-11-26T090000Z.json").write_text(json.dumps(later.to_json()))
    [shown] = report.newest_per_device(sorted(tmp_path.glob("bench_*.json")))
    assert shown.file == "bench_t_gpu-a_2026-11-25.json"
    (tmp_path / "bench_t_gpu-a_2026-11-25.json").unlink()
    [shown] = report.newest_per_device(sorted(tmp_path.glob("bench_*.json")))
    assert "incomplete: stopped before the end, not reached: x fp16" in report.readme_section([shown])


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
    # --paths: the flag's earlier name (now --routes), which commands written before the rename still use.
    argv = ["--variant", "T", "--batch", "1", "--cpu-budget-s", "1", "--cpu-min-iterations", "2", "--cpu-warmup",
            "1", "--paths", "torch-eager-cpu,onnxruntime-cpu,onnxruntime-cpu-surgered", "--onnx-dir", str(onnx_dir),
            "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert bench.main(argv) == 0
    [json_path] = (tmp_path / "results").glob("bench_t_*.json")
    data = load_run(json_path)
    routes = {(p.name, p.precision): p for p in data.routes}
    for name in ("torch-eager-cpu", "onnxruntime-cpu", "onnxruntime-cpu-surgered"):
        [result] = routes[(name, "fp32")].results
        assert result.measured is not None and result.measured.iterations >= 2 and result.measured.p50_ms > 0
    assert "correctness path" in routes[("onnxruntime-cpu-surgered", "fp32")].note
    assert all(p.reason for p in data.routes if p.status != "measured")  # never silently dropped
    assert routes[("tensorrt-plugin", "fp16")].status == "skipped"
    assert data.settings.budgets["cpu"].seconds == 1.0
    assert data.complete is True and data.pending == () and str(data.finished) >= data.created
    assert json_path.with_suffix(".md").is_file() and json_path.with_suffix(".png").is_file()


def test_a_run_killed_mid_way_leaves_valid_json_with_the_finished_paths(swin_t_onnx, tmp_path):
    """SIGKILL right after the first path is reported: nothing can run after it, yet the JSON holds that path."""
    argv = ["--variant", "T", "--batch", "1", "--iterations", "1", "--cpu-warmup", "0", "--routes",
            "onnxruntime-cpu,onnxruntime-cpu-surgered", "--onnx-dir", str(Path(swin_t_onnx[0]).parent),
            "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.bench", *argv], cwd=report.ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    json_path, seen = None, []
    try:
        assert process.stderr is not None
        for line in process.stderr:
            seen.append(line)
            if match := re.search(r"results so far \(.*\) in (.+\.json)$", line.strip()):
                process.send_signal(signal.SIGKILL)  # the second path (seconds of reference op) has just begun
                json_path = Path(match[1])
                break
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    assert json_path is not None, "".join(seen[-20:])
    assert process.returncode == -signal.SIGKILL
    data = load_run(json_path)
    assert data.complete is False and data.finished is None
    finished = {(p.name, p.precision): p for p in data.routes}
    [result] = finished[("onnxruntime-cpu", "fp32")].results
    assert result.measured is not None and result.measured.iterations == 1 and result.measured.p50_ms > 0
    assert ("onnxruntime-cpu-surgered", "fp32") not in finished
    assert data.pending == ("onnxruntime-cpu-surgered fp32",)
    assert sorted(p.name for p in json_path.parent.iterdir()) == [json_path.name]  # no .md/.png: not finished
    assert "Incomplete: stopped before the end, not reached: onnxruntime-cpu-surgered fp32" in report.markdown(data)


def test_an_interrupted_run_says_so_in_its_json(tmp_path, monkeypatch, capsys):
    calls = []

    def interrupted_second_time(path, *args, **kwargs):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_route(path, *args, **kwargs)

    real_run_route = bench.run_route
    monkeypatch.setattr(bench, "run_route", interrupted_second_time)
    argv = ["--routes", "tensorrt-plugin,tensorrt-native", "--onnx-dir", str(empty_onnx_dir(tmp_path)),
            "--work-dir", str(tmp_path / "work"), "--results-dir", str(tmp_path / "results")]
    assert bench.main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    [json_path] = (tmp_path / "results").iterdir()
    data = load_run(json_path)
    assert (data.complete, data.interrupted_during, data.pending) == (False, "tensorrt-native fp16",
                                                                      ("tensorrt-native fp16",))
    # tensorrt-attention, between the two, is recorded as not selected.
    assert [p.name for p in data.routes] == ["tensorrt-plugin", "tensorrt-attention"]


def test_bench_writes_under_build_and_never_over_an_earlier_run(tmp_path, monkeypatch):
    # A cheap run: one path that is skipped everywhere (no INT8 engine), so no model is loaded or exported.
    onnx_dir = empty_onnx_dir(tmp_path)
    runs = tmp_path / "build" / "bench"
    finished = datetime.datetime(2026, 11, 26, 10, 15, 30, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(bench, "RUNS_DIR", runs)  # the default, moved out of the checkout
    monkeypatch.setattr(bench, "utc_now", lambda: finished)
    stem = f"bench_t_{environment.device_slug(environment.collect())}_2026-11-26T101530Z"
    runs.mkdir(parents=True)
    (runs / f"{stem}.json").write_text("an earlier run")
    argv = ["--precision", "int8", "--routes", "tensorrt-plugin", "--onnx-dir", str(onnx_dir), "--engine-dir",
            str(tmp_path / "engines"), "--work-dir", str(tmp_path / "work")]
    assert bench.main(argv) == 0
    assert (runs / f"{stem}.json").read_text() == "an earlier run"
    assert sorted(p.name for p in runs.iterdir()) == sorted([f"{stem}.json", f"{stem}_2.json", f"{stem}_2.md",
                                                            f"{stem}_2.png"])
    data = load_run(runs / f"{stem}_2.json")
    assert data.created == "2026-11-26T10:15:30+00:00"
    assert {(p.name, p.precision): p.status for p in data.routes}[("tensorrt-plugin", "int8")] == "skipped"


def test_bench_rejects_unknown_paths_and_missing_onnx(tmp_path, capsys):
    assert bench.main(["--onnx-dir", str(tmp_path), "--results-dir", str(tmp_path)]) == 2
    assert "make onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--precision", "fp8"])


# ---------------------------------------------------------------------------------------------------------
# make profile


def test_profile_summary_finds_the_plugin_share_and_myelin_fusion():
    ours = [LayerTime("qkv", 1.0, 25.0), LayerTime("block0/SwinWindowAttention", 2.0, 50.0),
            LayerTime("proj", 1.0, 25.0)]
    summary = profile.summarize_layers(ours, ["block0/SwinWindowAttention"])
    assert (summary.plugin_layers, summary.plugin_percent, summary.total_ms) == (1, 50.0, 4.0)
    assert summary.attention_fused_by_myelin is False
    fused = [LayerTime("{ForeignNode[/layers.0/Softmax.../MatMul]}", 3.0, 100.0)]
    assert profile.summarize_layers(fused, []).attention_fused_by_myelin is True
    unfused = [*fused, LayerTime("/layers.1/attn/Softmax", 1.0, 10.0)]
    assert profile.summarize_layers(unfused, []).standalone_softmax_layers == ("/layers.1/attn/Softmax",)


def test_profile_summary_counts_tensorrt_attention_blocks_fused_into_one_layer():
    layers = [LayerTime("{ForeignNode[tensorrt_attention_0/attention_AttentionInput...]}", 2.0, 40.0),
              LayerTime("tensorrt_attention_1/attention_AttentionInput", 1.0, 20.0),
              LayerTime("tensorrt_attention_1/attention_AttentionOutput", 1.0, 20.0),
              LayerTime("tensorrt_attention_1/proj_matmul", 1.0, 20.0)]
    summary = profile.summarize_layers(layers, [])
    assert (summary.attention_blocks, summary.attention_blocks_in_one_layer) == (2, 1)
    assert (summary.attention_layers, summary.attention_percent, summary.plugin_layers) == (3, 80.0, 0)


def test_a_profile_run_writes_and_reads_back_its_json():
    """profile.json: each route a profile or the reason it was skipped, the plain ONNX's absent with --no-native."""
    layers = (LayerTime("block0/SwinWindowAttention", 2.0, 100.0),)
    ours = EngineProfile("e.engine", 1, 50, profile.summarize_layers(list(layers), []), layers, {"Layers": []})
    run = ProfileRun("T", "fp16", ours, Skipped("no engine of the tensorrt route"))
    data = json.loads(json.dumps(run.to_json()))
    assert data["attention_engine"] == {"skipped": "no engine of the tensorrt route"} and "native_engine" not in data
    assert data["plugin_engine"]["layers"] == [{"name": "block0/SwinWindowAttention", "average_ms": 2.0,
                                                "percent": 100.0}]
    assert ProfileRun.from_json(data) == run


@pytest.mark.skipif(environment.driver_version() is not None, reason="checks the CPU-only behaviour")
def test_profile_skips_with_a_message_without_a_gpu(capsys):
    assert profile.main(["--variant", "T"]) == 0
    assert "profile: skipped" in capsys.readouterr().out


def test_fused_goals_belong_to_their_variant_and_compare_compiled_models():
    routes = [measured_route("torch-compile-cuda", "fp16", {1: 1.0, 8: 2.0, 32: 4.0, 64: 8.0}),
              measured_route("torch-compile-cuda-fused", "fp16", {1: 0.8, 8: 2.0, 32: 3.0, 64: 7.0})]
    t_goals = {g.id: g for g in report.evaluate_goals(routes, "T")}
    assert [t_goals[f"fused_vs_compile_fp16_t_b{b}"].met for b in (1, 32, 64)] == [True, True, False]
    assert not any(i.startswith("fused_vs_compile_fp16_b384") for i in t_goals)
    b384 = {g.id: g for g in report.evaluate_goals(routes, "B384")}
    # "Faster than torch.compile": equal time at batch 8 is not faster.
    assert [b384[f"fused_vs_compile_fp16_b384_b{b}"].met for b in (1, 8, 32)] == [True, False, True]
    assert {"plugin_vs_native_fp16_b1", "int8_vs_fp16_throughput_b32"} <= set(b384)
