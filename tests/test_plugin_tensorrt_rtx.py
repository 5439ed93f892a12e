"""The plugin library inside TensorRT-RTX 1.7, ahead of time for SM86 on a CPU-only machine (docs/design.md §5),
through the build stage (``pipeline.tensorrt.build.build_engine``): load_library binds the SwinWindowAttention nodes of
a synthetic graph, strongly typed FP32 and FP16 engines build, and broken nodes fail the build with our
message. The surgered Swin-T is built in tests/test_build.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from plugin_build import synthetic_onnx

from pipeline.common.errors import PipelineError
from pipeline.tensorrt.build import build_engine
from pipeline.tensorrt.metadata import TensorSpec

H, W, C = 10, 13, 64  # padded on both axes for window 7
BATCH = (1, 4, 8)
BLOCKS = [dict(window_size=7, shift_size=0, num_heads=2), dict(window_size=7, shift_size=3, num_heads=4),
          dict(window_size=12, shift_size=5, num_heads=8)]


def build_fails_with(onnx_path, engine_path, plugin: str, capfd: pytest.CaptureFixture, *messages: str) -> None:
    """The build fails with our messages: in the error where TensorRT's logger got them, else on stderr
    (TensorRT-RTX 1.7's logger finder yields no logger while the ONNX parser creates plugins)."""
    with pytest.raises(PipelineError) as failure:
        build_engine(onnx_path, engine_path, plugin_library=plugin, batch=BATCH, backend="rtx")
    seen = str(failure.value) + capfd.readouterr().err
    for message in messages:
        assert message in seen
    assert not engine_path.exists()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_synthetic_graph_binds_and_builds(plugin_library, tmp_path, dtype):
    onnx_path = synthetic_onnx(tmp_path / "synthetic.onnx", BLOCKS, channels=C, height=H, width=W, dtype=dtype)
    metadata = build_engine(onnx_path, tmp_path / "synthetic.engine", plugin_library=plugin_library, batch=BATCH,
                            backend="rtx")
    assert metadata.plugin_layers == len(BLOCKS)
    assert metadata.plugin_layer_names == tuple(f"swin_attention{i}" for i in range(len(BLOCKS)))
    assert metadata.inputs == (TensorSpec("tokens", np.dtype(dtype).name, (-1, H * W, C)),)
    assert metadata.precision == {np.float32: "fp32", np.float16: "fp16"}[dtype]
    assert metadata.engine_bytes == (tmp_path / "synthetic.engine").stat().st_size > 0


@pytest.mark.parametrize(("block", "message"), [
    (dict(window_size=7, shift_size=3, num_heads=5), "num_heads=5 does not divide C=64"),
    (dict(window_size=7, shift_size=7, num_heads=4), "got window_size=7, shift_size=7"),
    (dict(window_size=7, shift_size=3, num_heads=4, height=11), "qkv has 130 tokens but height*width = 11*13"),
    (dict(window_size=7, shift_size=0, num_heads=32), "head_dim = C/num_heads = 64/32 = 2 is not supported"),
])
def test_broken_node_fails_the_build_with_our_message(plugin_library, tmp_path, capfd, block, message):
    onnx_path = synthetic_onnx(tmp_path / "broken.onnx", [block], channels=C, height=H, width=W)
    build_fails_with(onnx_path, tmp_path / "broken.engine", plugin_library, capfd,
                     "SwinWindowAttention plugin (layer 'swin_attention0'): ", message)


def test_wrong_rel_bias_shape_fails(plugin_library, tmp_path, capfd):
    onnx_path = synthetic_onnx(tmp_path / "bias.onnx", [dict(window_size=7, shift_size=3, num_heads=4)],
                               channels=C, height=H, width=W)
    model = onnx.load(onnx_path)
    bias = next(t for t in model.graph.initializer if t.name == "rel_bias0")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias)[:, :48, :48].copy(), "rel_bias0"))
    onnx.save(model, onnx_path)
    build_fails_with(onnx_path, tmp_path / "bias.engine", plugin_library, capfd,
                     "rel_bias must be [num_heads, N, N] = [4, 49, 49], got [4, 48, 48]")
