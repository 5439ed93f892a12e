"""``pipeline.runtime``: SwinEngine's round trip without a GPU (an engine TensorRT-RTX built ahead of time is opened
as far as this machine allows, then refused with one clear line), the ImageNet preprocessing it offers (exactly
:mod:`pipeline.common.images`' transform), top-k and the batch splitting; and, on a GPU, SwinEngine against
onnxruntime."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plugin_build import plugin_library_for, synthetic_onnx
from scipy.special import softmax

from pipeline.common.artifacts import file_sha256
from pipeline.common.errors import PipelineError
from pipeline.common.images import load_image_set
from pipeline.runtime import SwinEngine, batch_chunks, preprocess, top_k
from pipeline.tensorrt.backends import RTX_TARGETS, cuda_device
from pipeline.tensorrt.build import build_engine
from pipeline.tensorrt.metadata import Runtime

DEVICE = cuda_device()
HAS_RTX = importlib.util.find_spec("tensorrt_rtx_bindings") is not None
#: The smallest graph with the plugin: one SwinWindowAttention block on a 7×7 window of 64 channels.
TOKENS, CHANNELS = 49, 64
BLOCK = [dict(window_size=7, shift_size=0, num_heads=2)]


def one_line_error(error: pytest.ExceptionInfo[PipelineError]) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def rtx_engine(plugin_library: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TensorRT-RTX engine built ahead of time for SM86 (about a second)."""
    if not HAS_RTX:
        pytest.skip("TensorRT-RTX is not installed (pip install -e '.[rtx]')")
    folder = tmp_path_factory.mktemp("runtime")
    onnx_path = synthetic_onnx(folder / "tiny.onnx", BLOCK, channels=CHANNELS, height=7, width=7)
    engine = folder / "tiny.engine"
    build_engine(onnx_path, engine, plugin_library=plugin_library, batch=(1, 2, 4), backend="rtx", sm=86)
    return engine


def copy_engine(engine: Path, folder: Path) -> Path:
    for path in (engine, engine.with_suffix(".json")):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder / engine.name


# ---------------------------------------------------------------------------------------------------------
# The round trip without a GPU


@pytest.mark.skipif(DEVICE is not None, reason="this machine has a CUDA GPU, where the engine may run")
def test_rtx_engine_says_it_cannot_run_here(rtx_engine):
    with pytest.raises(PipelineError) as error:
        SwinEngine(rtx_engine)
    message = one_line_error(error)
    assert message.startswith(f"cannot run here: {rtx_engine} is a tensorrt_rtx 1.7")
    assert "engine for SM86 and this machine has no CUDA GPU" in message
    assert "TensorRT-RTX engines built ahead of time need the GPU they were built for" in message


def test_rtx_runtime_reads_the_header(rtx_engine, tmp_path):
    """A damaged header whose metadata was updated to match passes the file checks: TensorRT-RTX itself refuses it."""
    engine = copy_engine(rtx_engine, tmp_path)
    data = bytearray(engine.read_bytes())
    data[:16] = bytes(16)
    engine.write_bytes(bytes(data))
    metadata_file = engine.with_suffix(".json")
    metadata = json.loads(metadata_file.read_text())
    metadata["engine_sha256"] = file_sha256(engine)
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(PipelineError) as error:
        SwinEngine(engine)
    message = one_line_error(error)
    assert f"cannot read {engine}: its header is not a TensorRT-RTX engine header" in message
    assert "rebuild it on this machine" in message


def test_corrupt_engine_is_refused_before_loading(rtx_engine, tmp_path):
    engine = copy_engine(rtx_engine, tmp_path)
    data = bytearray(engine.read_bytes())
    data[len(data) // 2] ^= 0x01
    engine.write_bytes(bytes(data))
    corrupt = r"tiny.engine is corrupt: its size is right but its sha256 \w{12}… is not the"
    with pytest.raises(PipelineError, match=corrupt) as error:
        SwinEngine(engine)
    one_line_error(error)


@pytest.mark.parametrize(("runtimes", "expected"), [
    ([], r"^cannot run here: .* for SM86 and no TensorRT runtime is installed \(no tensorrt_rtx_bindings module\)"),
    ([Runtime("tensorrt_rtx", "1.6.0.0", None, None)], r"but this machine runs 1.6.0.0; engines do not cross versions"),
    ([Runtime("tensorrt_rtx", "{version}", 89, "NVIDIA GeForce RTX 4090")],
     r"was built for SM86 but this GPU is NVIDIA GeForce RTX 4090 \(SM89\)"),
    ([Runtime("tensorrt", "10.14.1", 86, "NVIDIA A10")], r"built with tensorrt_rtx .* but this machine has tensorrt"),
])
def test_another_machine_is_refused_in_one_line(rtx_engine, monkeypatch, runtimes, expected):
    import tensorrt_rtx_bindings

    runtimes = [Runtime(r.backend, r.version.format(version=tensorrt_rtx_bindings.__version__), r.sm, r.gpu)
                for r in runtimes]
    monkeypatch.setattr("pipeline.runtime.installed_runtimes", lambda: runtimes)
    with pytest.raises(PipelineError, match=expected) as error:
        SwinEngine(rtx_engine)
    one_line_error(error)


# ---------------------------------------------------------------------------------------------------------
# Preprocessing, top-k, batch splitting


@pytest.mark.parametrize(("mode", "size"), [("RGB", (224, 224)), ("L", (128, 146)), ("RGBA", (96, 64))])
def test_preprocess_is_the_transform_of_pipeline_images(tmp_path, mode, size):
    pixels = np.random.default_rng(3).integers(0, 256, (217, 300, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    image.save(tmp_path / "photo.png")  # lossless: the folder path sees the same pixels
    expected = load_image_set(tmp_path, 1, img_size=size).images[0]
    for given in (image, tmp_path / "photo.png", str(tmp_path / "photo.png")):
        result = preprocess(given, size)
        assert result.shape == (3, *size) and result.dtype == np.float32 and result.flags.c_contiguous
        np.testing.assert_array_equal(result, expected)


def test_preprocess_of_an_unreadable_file_is_our_error(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(PipelineError, match=r"cannot read the image .*broken\.jpg"):
        preprocess(tmp_path / "broken.jpg", (224, 224))


def reference_top_k(logits: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    probabilities = softmax(logits.astype(np.float64), axis=-1)
    return [sorted(enumerate(row.tolist()), key=lambda item: (-item[1], item[0]))[:k] for row in probabilities]


def assert_same_ranking(result: list[list[tuple[int, float]]], expected: list[list[tuple[int, float]]]) -> None:
    assert [[c for c, _ in row] for row in result] == [[c for c, _ in row] for row in expected]
    np.testing.assert_allclose([[p for _, p in row] for row in result], [[p for _, p in row] for row in expected],
                               rtol=1e-12, atol=0)


def test_top_k_matches_softmax_and_sort():
    logits = np.random.default_rng(0).normal(0, 3, (6, 1000)).astype(np.float32)
    for k in (1, 5, 1000):
        assert_same_ranking(top_k(logits, k), reference_top_k(logits, k))
    assert all(isinstance(c, int) and isinstance(p, float) for c, p in top_k(logits)[0])


def test_top_k_ties_single_rows_and_more_k_than_classes():
    logits = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    result = top_k(logits, k=10)
    assert_same_ranking(result, reference_top_k(logits, 10))
    assert [c for c, _ in result[0]] == [1, 2, 0, 3] and [c for c, _ in result[1]] == [0, 1, 2, 3]
    assert result[1][0][1] == pytest.approx(0.25)
    assert top_k(np.array([0.0, 5.0, 1.0]), 2) == top_k(np.array([[0.0, 5.0, 1.0]]), 2)
    assert sum(p for _, p in top_k(logits[0], 4)[0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k(logits, 0)


@pytest.mark.parametrize(("count", "max_batch", "sizes"), [
    (1, 8, [1]), (8, 8, [8]), (9, 8, [8, 1]), (20, 8, [8, 8, 4]), (32, 1, [1] * 32), (0, 4, []),
])
def test_batch_chunks(count, max_batch, sizes):
    chunks = batch_chunks(count, max_batch)
    assert [c.stop - c.start for c in chunks] == sizes
    covered = [i for c in chunks for i in range(count)[c]]
    assert covered == list(range(count))


def test_batch_chunks_needs_a_positive_maximum():
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        batch_chunks(4, 0)


# ---------------------------------------------------------------------------------------------------------
# On a GPU


def _backend_available(backend: str) -> str | None:
    """Why ``backend`` cannot build and run an engine here, or None."""
    if backend == "tensorrt":
        return None if importlib.util.find_spec("tensorrt") else "TensorRT 10/11 is not installed"
    if not HAS_RTX:
        return "TensorRT-RTX is not installed"
    return None if DEVICE.sm in RTX_TARGETS else f"TensorRT-RTX does not build for SM{DEVICE.sm}"


@pytest.fixture(scope="module")
def device_plugin() -> Path:
    """The plugin library compiled for this GPU's architecture (the CPU tests build SM86 only)."""
    return plugin_library_for(str(DEVICE.sm))


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device (no libcuda.so.1 or no visible GPU)")
@pytest.mark.parametrize("backend", ["tensorrt", "rtx"])
def test_swin_engine_matches_onnxruntime(device_plugin, tmp_path, backend):
    import torch

    from pipeline.common.onnx_io import ort_session

    if (reason := _backend_available(backend)) is not None:
        pytest.skip(reason)
    blocks = [dict(window_size=7, shift_size=0, num_heads=2), dict(window_size=7, shift_size=3, num_heads=4)]
    onnx_path = synthetic_onnx(tmp_path / "synthetic.onnx", blocks, channels=CHANNELS, height=10, width=13)
    engine_path = tmp_path / "synthetic.engine"
    build_engine(onnx_path, engine_path, plugin_library=device_plugin, batch=(2, 3, 4), backend=backend,
                 sm=DEVICE.sm)
    tokens = np.random.default_rng(0).normal(size=(7, 130, CHANNELS)).astype(np.float32)
    session = ort_session(onnx_path)
    expected = session.run(None, {"tokens": tokens})[0]
    with SwinEngine(engine_path) as engine:
        assert engine.batch_range == (2, 4) and engine.output_names == ("proj1",)
        outputs = engine.infer(tokens)  # 4 + 3
        np.testing.assert_allclose(outputs["proj1"], expected, atol=1e-4, rtol=1e-3)
        single = engine.infer(tokens[:1])["proj1"]  # below the profile's minimum: padded to 2
        np.testing.assert_allclose(single, expected[:1], atol=1e-4, rtol=1e-3)
        on_device = engine.infer(torch.from_numpy(tokens).double())["proj1"]  # cast to float32, CUDA out
        assert on_device.is_cuda and on_device.dtype == torch.float32
        np.testing.assert_allclose(on_device.cpu().numpy(), outputs["proj1"], atol=0, rtol=0)

        run = engine.bind(4)
        run()
        engine.stream.synchronize()
        assert engine.memory_mb() > 0
        with pytest.raises(PipelineError, match=r"built for batch 2..4"):
            engine.bind(5)
        engine.infer(tokens[:2])
        with pytest.raises(RuntimeError, match="superseded"):
            run()
