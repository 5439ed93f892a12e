"""The plugin library inside TensorRT-RTX 1.7, ahead of time for SM86 on a CPU-only machine (DESIGN.md §5):
load_library binds SwinWindowAttention nodes of the synthetic graph and of the surgered Swin-T, strongly
typed FP32 and FP16 engines build, and broken nodes fail the build with our message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from plugin_build import NativeLibs, native_libs, run_rtx_build, synthetic_onnx  # noqa: F401 - fixture

from pipeline.reference import PLUGIN_OP

H, W, C = 10, 13, 64  # padded on both axes for window 7
PROFILE = {"tokens": ((1, H * W, C), (4, H * W, C), (8, H * W, C))}
BLOCKS = [dict(window_size=7, shift_size=0, num_heads=2), dict(window_size=7, shift_size=3, num_heads=4),
          dict(window_size=12, shift_size=5, num_heads=8)]


@pytest.fixture(scope="module")
def plugin(native_libs: NativeLibs) -> Path:  # noqa: F811 - pytest fixture injection
    assert native_libs.plugin is not None, "CMake found no TensorRT headers, so no plugin library was built"
    return native_libs.plugin


def plugin_message_seen(report: dict, text: str) -> bool:
    """Our error reaches the TensorRT logger where TensorRT hands one over, else stderr (TensorRT-RTX 1.7's
    logger finder yields no logger while the ONNX parser creates plugins)."""
    return any(text in line for line in [*report["log"], report["stderr"]])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_synthetic_graph_binds_and_builds(plugin, tmp_path, dtype):
    onnx_path = synthetic_onnx(tmp_path / "synthetic.onnx", BLOCKS, channels=C, height=H, width=W, dtype=dtype)
    report = run_rtx_build(plugin, onnx_path, profiles=PROFILE)
    assert report["parsed"], report["parser_errors"]
    assert report["plugin_layers"] == len(BLOCKS)
    assert report["plugin_layer_names"] == [f"swin_attention{i}" for i in range(len(BLOCKS))]
    expected_type = "DataType.HALF" if dtype == np.float16 else "DataType.FLOAT"
    assert report["inputs"]["tokens"] == [expected_type, [-1, H * W, C]]
    assert report["built"], report["log"]
    assert report["engine_bytes"] > 0


@pytest.mark.parametrize(("block", "message"), [
    (dict(window_size=7, shift_size=3, num_heads=5), "num_heads=5 does not divide C=64"),
    (dict(window_size=7, shift_size=7, num_heads=4), "got window_size=7, shift_size=7"),
    (dict(window_size=7, shift_size=3, num_heads=4, height=11), "qkv has 130 tokens but height*width = 11*13"),
    (dict(window_size=7, shift_size=0, num_heads=32), "head_dim = C/num_heads = 64/32 = 2 is not supported"),
])
def test_broken_node_fails_the_build_with_our_message(plugin, tmp_path, block, message):
    onnx_path = synthetic_onnx(tmp_path / "broken.onnx", [block], channels=C, height=H, width=W)
    report = run_rtx_build(plugin, onnx_path, profiles=PROFILE)
    assert not report["built"]
    assert plugin_message_seen(report, "SwinWindowAttention plugin (layer 'swin_attention0'): "), report
    assert plugin_message_seen(report, message), report


def test_wrong_rel_bias_shape_fails(plugin, tmp_path):
    onnx_path = synthetic_onnx(tmp_path / "bias.onnx", [dict(window_size=7, shift_size=3, num_heads=4)],
                               channels=C, height=H, width=W)
    model = onnx.load(onnx_path)
    bias = next(t for t in model.graph.initializer if t.name == "rel_bias0")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias)[:, :48, :48].copy(), "rel_bias0"))
    onnx.save(model, onnx_path)
    report = run_rtx_build(plugin, onnx_path, profiles=PROFILE)
    assert not report["built"]
    assert plugin_message_seen(report, "rel_bias must be [num_heads, N, N] = [4, 49, 49], got [4, 48, 48]"), report


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Bind/build-test conversion only: every float initializer, Constant, Cast target and graph input/output
    becomes float16 (LayerNormalization too). The precision stage replaces this with a careful conversion."""
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                attribute.i = TensorProto.FLOAT16
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == TensorProto.FLOAT:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float16)))
    for value in [*graph.input, *graph.output]:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
    del graph.value_info[:]
    return model


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_surgered_swin_t_binds_every_block(plugin, swin_t_onnx, tmp_path, precision):
    _, swin_path, surgery = swin_t_onnx
    model = onnx.load(swin_path)
    nodes = [node for node in model.graph.node if node.op_type == PLUGIN_OP]
    assert len(nodes) == surgery["blocks_replaced"] == 12
    if precision == "fp16":
        swin_path = tmp_path / "model.swin.fp16.onnx"
        onnx.save(to_float16(model), swin_path)
    image = model.graph.input[0]
    name = image.name
    shape = [d.dim_value for d in image.type.tensor_type.shape.dim[1:]]
    report = run_rtx_build(plugin, swin_path, profiles={name: ((1, *shape), (2, *shape), (4, *shape))})
    assert report["parsed"], report["parser_errors"]
    assert report["plugin_layers"] == 12
    assert sorted(report["plugin_layer_names"]) == sorted(node.name for node in nodes)
    assert report["built"], report["log"]
