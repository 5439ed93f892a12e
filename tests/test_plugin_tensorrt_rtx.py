"""The plugin library inside TensorRT-RTX 1.7, ahead of time for SM86 on a CPU-only machine (docs/design.md §5),
through the build stage (``pipeline.tensorrt.build.build_engine``): load_library binds the SwinWindowAttention nodes of
a synthetic graph, strongly typed FP32 and FP16 engines build, and broken nodes fail the build with our
message; a graph of version-2 nodes (the map layout) on an input whose H and W are dynamic builds one engine for every
size of its profile. The surgered Swin-T is built in tests/test_build.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from plugin_build import synthetic_map_onnx, synthetic_onnx

from pipeline.common.artifacts import file_sha256
from pipeline.common.errors import PipelineError
from pipeline.tensorrt import build
from pipeline.tensorrt.backends import select_backend
from pipeline.tensorrt.build import BuildRequest, build_engine, graph_precision
from pipeline.tensorrt.metadata import EngineMetadata, TensorSpec

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


# ---------------------------------------------------------------------------------------------------------
# Version 2 (the map layout): one engine for every H x W

#: The map input's (min, opt, max) [B, H, W, C]: below, near and above the windows, odd and non-square.
MAP_PROFILE = {"min": [1, 3, 5, C], "opt": [2, 14, 17, C], "max": [4, 40, 33, C]}


def build_map_engine(onnx_path, engine_path, plugin_library) -> EngineMetadata:
    """Build ``onnx_path``'s map input over MAP_PROFILE with the build stage's own TensorRT-RTX child process.
    (build_engine profiles only the batch, as the pipeline's graphs have a fixed image size, so the request is made
    here.)"""
    backend = select_backend("rtx", 86)
    request = BuildRequest(
        onnx_path=str(onnx_path), engine_path=str(engine_path), plugin_library=str(plugin_library),
        backend=backend.name, sm=86, input_name="maps", profile=MAP_PROFILE, timing_cache=None, opt_level=3,
        embed_plugin=False, detailed_profile=False, precision=graph_precision(onnx.load(onnx_path)),
        onnx_sha256=file_sha256(onnx_path), plugin_sha256=file_sha256(plugin_library))
    return build._run_in_child(request, backend)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_map_layout_graph_with_dynamic_height_and_width_builds(plugin_library, tmp_path, dtype):
    onnx_path = synthetic_map_onnx(tmp_path / "map.onnx", BLOCKS, channels=C, dtype=dtype)
    metadata = build_map_engine(onnx_path, tmp_path / "map.engine", plugin_library)
    assert metadata.plugin_layers == len(BLOCKS)
    assert metadata.plugin_layer_names == tuple(f"swin_attention{i}" for i in range(len(BLOCKS)))
    name = np.dtype(dtype).name
    assert metadata.inputs == (TensorSpec("maps", name, (-1, -1, -1, C)),)
    assert metadata.outputs == (TensorSpec(f"proj{len(BLOCKS) - 1}", name, (-1, -1, -1, C)),)
    assert metadata.engine_bytes == (tmp_path / "map.engine").stat().st_size > 0


@pytest.mark.parametrize(("block", "message"), [
    (dict(window_size=7, shift_size=3, num_heads=5), "num_heads=5 does not divide C=64"),
    (dict(window_size=7, shift_size=7, num_heads=4), "got window_size=7, shift_size=7"),
])
def test_broken_map_node_fails_the_build_with_our_message(plugin_library, tmp_path, capfd, block, message):
    onnx_path = synthetic_map_onnx(tmp_path / "broken_map.onnx", [block], channels=C)
    with pytest.raises(PipelineError) as failure:
        build_map_engine(onnx_path, tmp_path / "broken_map.engine", plugin_library)
    seen = str(failure.value) + capfd.readouterr().err
    assert "SwinWindowAttention plugin (layer 'swin_attention0'): " in seen and message in seen
    assert not (tmp_path / "broken_map.engine").exists()


def test_map_node_on_a_token_input_fails_the_build_with_our_message(plugin_library, tmp_path, capfd):
    """A version-2 node whose qkv is [B, H*W, 3C] (version 1's layout): refused while the network is built."""
    onnx_path = synthetic_onnx(tmp_path / "mixed.onnx", [dict(window_size=7, shift_size=3, num_heads=4)],
                               channels=C, height=H, width=W)
    model = onnx.load(onnx_path)
    node = next(n for n in model.graph.node if n.domain == "trt.plugins")
    kept = [a for a in node.attribute if a.name not in ("height", "width", "plugin_version")]
    del node.attribute[:]
    node.attribute.extend([*kept, onnx.helper.make_attribute("plugin_version", "2")])
    onnx.save(model, onnx_path)
    build_fails_with(onnx_path, tmp_path / "mixed.engine", plugin_library, capfd,
                     f"qkv must be [B, H, W, 3C] in version 2, got [-1, {H * W}, {3 * C}]")
