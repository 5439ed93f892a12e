"""The C++ engine runner compiles (syntax check against TensorRT and CUDA runtime headers, no GPU needed), and on a
GPU: the CUDA-event timer, what the benchmark times of an engine (``SwinEngine.bind``, plain and as a CUDA graph),
the TensorRT engine path of the benchmark and its PyTorch paths with fused attention."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import export_config, max_abs_diff, small_image_size
from test_bench import same_weights

from benchmarks.report import ROOT
from benchmarks.routes import RouteUnavailable, TensorRTRoute, TorchRoute
from benchmarks.timers import Budget, CudaEventTimer
from pipeline.kernels.cmake import NativeLibs, find_nvcc
from pipeline.kernels.ops import CUDA_LIBRARY_ENV


def tensorrt_include_dir() -> Path | None:
    """An installed TensorRT's headers, else the kernel-lens wheel's (the fallback CMakeLists.txt uses too)."""
    for candidate in (Path("/usr/include/x86_64-linux-gnu"), Path("/usr/include/aarch64-linux-gnu"),
                      Path("/usr/local/tensorrt/include")):
        if (candidate / "NvInferRuntime.h").is_file():
            return candidate
    spec = importlib.util.find_spec("kernel_lens")
    if spec and spec.submodule_search_locations:
        folder = Path(spec.submodule_search_locations[0]) / "include" / "tensorrt"
        return folder if (folder / "NvInferRuntime.h").is_file() else None
    return None


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's headers (nvcc may be a wrapper script, so its folder is only one candidate)."""
    nvcc = find_nvcc()
    candidates = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH") if v in os.environ]
    candidates += [Path(nvcc).resolve().parents[1] / "include"] if nvcc else []
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


def test_trt_runner_compiles_with_warnings_as_errors():
    compiler = shutil.which("g++") or shutil.which("c++")
    include, cuda_include = tensorrt_include_dir(), cuda_include_dir()
    if compiler is None or include is None or cuda_include is None:
        pytest.skip(f"needs a C++ compiler ({compiler}), CUDA headers ({cuda_include}) and TensorRT headers "
                    f"({include})")
    command = [compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only", "-isystem", str(include),
               "-isystem", str(cuda_include), str(ROOT / "deploy" / "trt_runner.cpp")]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_event_timer_measures_enqueued_work():
    a = torch.randn(2048, 2048, device="cuda")
    small = CudaEventTimer().measure(lambda: a @ a, Budget(warmup=3, iterations=20, min_iterations=20))
    large = CudaEventTimer().measure(lambda: (a @ a) @ a, Budget(warmup=3, iterations=20, min_iterations=20))
    assert len(small.latencies_ms) == 20 and small.timer == "cuda-events"
    assert all(t > 0 for t in small.latencies_ms)
    assert sorted(large.latencies_ms)[10] > 1.5 * sorted(small.latencies_ms)[10]  # two GEMMs take about twice


@pytest.fixture(scope="module")
def fp32_engine(swin_t_onnx, plugin_library, tmp_path_factory) -> Path:
    """The surgered Swin-T built by TensorRT for this GPU, batch 1..4."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    from pipeline.tensorrt.build import build_engine

    engine = tmp_path_factory.mktemp("bench-engine") / "swin_t_fp32.engine"
    build_engine(swin_t_onnx[1], engine, plugin_library=plugin_library, batch=(1, 2, 4), backend="tensorrt")
    return engine


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_swin_engine_bind_is_timed_plain_and_as_a_cuda_graph(fp32_engine, plugin_library):
    from pipeline.common.errors import PipelineError
    from pipeline.runtime import SwinEngine

    budget = Budget(warmup=2, iterations=10, min_iterations=10)
    with SwinEngine(fp32_engine, plugin_library) as engine:
        for batch in (1, 4):
            run = engine.bind(batch)
            run()  # the first enqueue after a shape change does setup work: not in the graph
            engine.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=engine.stream):
                run()
            for step in (run, graph.replay):
                measurement = CudaEventTimer(engine.stream).measure(step, budget)
                assert len(measurement.latencies_ms) == 10 and all(t > 0 for t in measurement.latencies_ms)
        assert engine.memory_mb() > 0
        with pytest.raises(PipelineError, match=r"built for batch 1\.\.4"):
            engine.bind(8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_path_runs_the_plugin_engine(fp32_engine, plugin_library):
    engine = fp32_engine
    path = TensorRTRoute("tensorrt-plugin", "fp32", lambda: engine, plugin_library, cuda_graphs=True)
    path.setup()
    try:
        measurement = path.timer().measure(path.step(2), Budget(warmup=2, iterations=10, min_iterations=10))
        assert len(measurement.latencies_ms) == 10 and path.memory_mb() > 0
        assert path.details()["plugin_layers"] == 12
    finally:
        path.close()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_torch_paths_replay_what_the_unfused_model_computes(native_libs: NativeLibs, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    """torch-eager-cuda-fused and torch-compile-cuda-fused FP16 at batch 1 and 2, each step a CUDA graph replay of
    our kernel, against the unfused model in FP32 on the same images. 128×146 pads every stage and shifts three."""
    config = export_config("T")
    size, model = small_image_size(config), same_weights(config)
    monkeypatch.setenv(CUDA_LIBRARY_ENV, str(tmp_path / "libswin_window_attention_cuda.so"))
    with pytest.raises(RouteUnavailable, match="does not exist: build it with `make plugin`"):
        TorchRoute(model, size, "fp16", "cuda", fused=True).setup()
    monkeypatch.setenv(CUDA_LIBRARY_ENV, str(native_libs.cuda))
    reference = model(fused_attention=False).eval()
    torch._dynamo.reset()  # a fresh compile, not one that earlier tests' recompilations pushed past dynamo's limit
    for compiled in (False, True):
        path = TorchRoute(model, size, "fp16", "cuda", compile=compiled, fused=True, cuda_graphs=True)
        assert path.name == ("torch-compile-cuda-fused" if compiled else "torch-eager-cuda-fused") and path.cuda_graph
        path.setup()
        try:
            assert path.details()["attention_library"] == str(native_libs.cuda)
            for batch in (1, 2):
                replay = path.step(batch)
                assert path.captured is not None
                _, images, output = path.captured
                with torch.inference_mode():
                    output.zero_()  # what is compared below is the replay's, not the capture's
                replay()
                torch.cuda.synchronize()
                with torch.inference_mode():
                    expected = reference(images.float().cpu())
                assert output.shape == expected.shape and output.dtype == torch.float16
                assert max_abs_diff(output.cpu(), expected) <= 2e-3 * max(1.0, float(expected.abs().max()))
                measurement = path.timer().measure(replay, Budget(warmup=1, iterations=5, min_iterations=5))
                assert len(measurement.latencies_ms) == 5 and path.memory_mb() > 0
        finally:
            path.close()
    torch._dynamo.reset()
