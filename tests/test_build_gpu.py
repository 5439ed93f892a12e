"""The TensorRT 10/11 path of the build stage for real: build the surgered Swin-T for this machine's GPU,
check its metadata and compatibility, run it through ``pipeline.runtime.SwinEngine`` (directly, and as verify's
Polygraphy runner) and compare it to the onnxruntime reference and to PyTorch (FP32 and FP16), with the plugin
library loaded or embedded in the engine.

Needs ``import tensorrt`` and a CUDA device; skipped with the reason otherwise."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from plugin_build import plugin_library_for
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.comparator import Comparator, SimpleCompareFunc

from pipeline.common.onnx_io import ort_session
from pipeline.kernels.cmake import ROOT
from pipeline.runtime import SwinEngine, preprocess, top_k
from pipeline.stages.precision import convert_fp16
from pipeline.stages.verify import engine_runner, verify
from pipeline.tensorrt.backends import cuda_device
from pipeline.tensorrt.build import build_engine
from pipeline.tensorrt.load import check_engine_compatible
from pipeline.tensorrt.metadata import BuiltWith, EngineMetadata, Target

DEVICE = cuda_device()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device (no libcuda.so.1 or no visible GPU)"),
    pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None,
                       reason="needs TensorRT 10/11 (no tensorrt module); TensorRT-RTX is covered by test_build.py"),
]
BATCH = (1, 2, 4)  # swin_t_onnx is exported with a batch of at most 4


@pytest.fixture(scope="module")
def gpu_plugin() -> Path:
    """The plugin library compiled for this GPU's architecture (the CPU tests build SM86 only)."""
    return plugin_library_for(str(DEVICE.sm))


@pytest.fixture(scope="module")
def fp32_engine(swin_t_onnx, gpu_plugin, tmp_path_factory) -> tuple[Path, EngineMetadata]:
    engine = tmp_path_factory.mktemp("gpu-engine") / "model.swin.engine"
    metadata = build_engine(swin_t_onnx[1], engine, plugin_library=gpu_plugin, batch=BATCH, backend="tensorrt",
                            timing_cache=engine.with_name("timing.cache"))
    return engine, metadata


def test_metadata_names_this_gpu(fp32_engine):
    import tensorrt as trt

    engine, metadata = fp32_engine
    assert metadata.backend == BuiltWith("tensorrt", trt.__version__)
    assert metadata.target == Target(sm=DEVICE.sm, gpu=DEVICE.name, ahead_of_time=False)
    assert metadata.plugin_layers == 12 and metadata.precision == "fp32"
    assert metadata.timing_cache.saved_bytes > 0
    assert engine.with_name("timing.cache").stat().st_size == metadata.timing_cache.saved_bytes > 0
    assert sorted(p.name for p in engine.parent.glob("timing.cache*")) == ["timing.cache"]
    assert check_engine_compatible(engine).runtime.backend == "tensorrt"


def test_engine_matches_onnx_reference(fp32_engine, swin_t_onnx, gpu_plugin):
    engine, _ = fp32_engine
    images = np.random.default_rng(0).normal(size=(4, 3, 224, 224)).astype(np.float32)
    runners = [OnnxrtRunner(lambda: ort_session(swin_t_onnx[1]), name="onnxruntime-reference"),
               engine_runner(engine, gpu_plugin)]
    results = Comparator.run(runners, data_loader=[{"images": images[:1]}, {"images": images}])
    assert Comparator.compare_accuracy(results, compare_func=SimpleCompareFunc(atol=1e-3, rtol=0.0))


def test_swin_engine_classifies_preprocessed_photos(fp32_engine, swin_t_onnx, gpu_plugin):
    """More images than the profile's maximum (4) run in chunks; NumPy in gives NumPy out, torch in (any device,
    any float dtype) gives CUDA tensors out."""
    import torch
    from PIL import Image
    from skimage import data

    engine_path, _ = fp32_engine
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.immunohistochemistry(),
              data.retina()]
    with SwinEngine(engine_path, gpu_plugin) as engine:
        assert engine.batch_range == (1, 4) and engine.image_size == (224, 224)
        assert engine.input.name == "images" and engine.output_names == ("logits",)
        images = np.stack([preprocess(Image.fromarray(photo), engine.image_size) for photo in photos])
        logits = engine.infer(images)["logits"]
        on_device = engine.infer(torch.from_numpy(images).cuda())["logits"]
        from_half = engine.infer(torch.from_numpy(images).half())["logits"]  # cast to the engine's float32
        assert engine.memory_mb() > 0
    expected = ort_session(swin_t_onnx[1]).run(None, {"images": images})[0]
    assert logits.shape == (6, 1000) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-3, rtol=0)
    assert on_device.is_cuda and on_device.dtype == torch.float32 and from_half.is_cuda
    np.testing.assert_allclose(on_device.cpu().numpy(), logits, atol=1e-5, rtol=0)
    np.testing.assert_allclose(from_half.cpu().numpy(), logits, atol=5e-2, rtol=0)  # FP16-rounded pixels
    assert [len(row) for row in top_k(logits, 5)] == [5] * 6


def test_fp32_engine_verifies_against_pytorch(fp32_engine, swin_t, tmp_path):
    report = verify(swin_t, fp32_engine[0], "fp32", batch=4, out_path=tmp_path / "verify.json")
    assert report.passed and report.executed.kind == "engine"


def test_fp16_engine_verifies_against_pytorch(swin_t, swin_t_onnx, gpu_plugin, tmp_path):
    fp16_path = tmp_path / "model.swin.fp16.onnx"
    convert_fp16(swin_t_onnx[1], fp16_path)
    engine = tmp_path / "model.swin.fp16.engine"
    assert build_engine(fp16_path, engine, plugin_library=gpu_plugin, batch=BATCH).precision == "fp16"
    assert verify(swin_t, engine, "fp16", batch=4).passed


def test_embedded_plugin_runs_without_loading_the_library(swin_t_onnx, gpu_plugin, tmp_path):
    engine = tmp_path / "embedded.engine"
    build_engine(swin_t_onnx[1], engine, plugin_library=gpu_plugin, batch=BATCH, backend="tensorrt",
                 embed_plugin=True)
    # A fresh process, so the library is not already in the plugin registry from the tests above.
    script = textwrap.dedent(f"""
        import numpy as np
        from pathlib import Path
        from pipeline.runtime import SwinEngine
        with SwinEngine(Path({str(engine)!r})) as engine:
            logits = engine.infer(np.zeros((2, 3, 224, 224), np.float32))["logits"]
        assert logits.shape == (2, 1000) and np.isfinite(logits).all(), logits
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
