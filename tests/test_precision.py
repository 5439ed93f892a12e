"""The strongly typed FP16 graph: types where they belong, and its accuracy on the CPU against FP32."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.common.errors import PipelineError
from pipeline.common.onnx_io import ort_session, tensor_types
from pipeline.kernels.reference import PLUGIN_OP
from pipeline.stages.precision import convert_fp16


@pytest.fixture(scope="module")
def swin_t_fp16(swin_t_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16") / "model.swin.fp16.onnx"
    return out, convert_fp16(swin_t_onnx[1], out)


def test_types(swin_t_fp16) -> None:
    path, report = swin_t_fp16
    model = onnx.load(str(path))
    types = tensor_types(model)
    assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert report.fp32_nodes == {"LayerNormalization": ops["LayerNormalization"]} == {"LayerNormalization": 29}
    for node in model.graph.node:
        io = [types[t] for t in (*node.input, *node.output) if t]
        if node.op_type == "LayerNormalization":
            assert set(io) == {TensorProto.FLOAT}, node.name
        elif node.op_type == PLUGIN_OP:
            assert set(io) == {TensorProto.FLOAT16}, node.name
        elif node.op_type in ("MatMul", "Gemm", "Conv", "Add", "Erf"):
            assert set(io) == {TensorProto.FLOAT16}, node.name
    # no float32 compute outside LayerNorm and the boundary casts
    fp32_producers = {n.op_type for n in model.graph.node for o in n.output if types.get(o) == TensorProto.FLOAT}
    assert fp32_producers <= {"LayerNormalization", "Cast"}


def test_accuracy_against_fp32(swin_t_onnx, swin_t_fp16) -> None:
    images = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    fp32 = ort_session(swin_t_onnx[1]).run(None, {"images": images})[0]
    fp16 = ort_session(swin_t_fp16[0]).run(None, {"images": images})[0]
    assert fp16.dtype == np.float32
    assert np.abs(fp16 - fp32).max() <= 2e-2
    cosine = (fp16 * fp32).sum(1) / np.linalg.norm(fp16, axis=1) / np.linalg.norm(fp32, axis=1)
    assert cosine.min() >= 0.9999


def _qdq_matmul_layernorm(path) -> None:
    """x → Q/DQ → MatMul(Q/DQ per-channel weight) → LayerNorm: the INT8 pattern calibration writes."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((16, 8)).astype(np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
        helper.make_node("QuantizeLinear", ["w", "w_scale", "w_zero"], ["w_q"], axis=1),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], axis=1),
        helper.make_node("MatMul", ["x_dq", "w_dq"], ["y0"]),
        helper.make_node("LayerNormalization", ["y0", "gamma", "beta"], ["y"], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.float32(3 / 127), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zero"),
        numpy_helper.from_array((np.abs(weight).max(0) / 127).astype(np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(8, np.int8), "w_zero"),
        numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
        numpy_helper.from_array(np.zeros(8, np.float32), "beta"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_qdq_graph_gets_fp16_scales_and_opset_19(tmp_path) -> None:
    _qdq_matmul_layernorm(tmp_path / "qdq.onnx")
    report = convert_fp16(tmp_path / "qdq.onnx", tmp_path / "qdq16.onnx")
    assert report.qdq_nodes == 4 and report.precision == "int8+fp16"
    model = onnx.load(str(tmp_path / "qdq16.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 19
    scales = {t.name: t.data_type for t in model.graph.initializer if t.name.endswith("scale")}
    assert set(scales.values()) == {TensorProto.FLOAT16}
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    expected = ort_session(tmp_path / "qdq.onnx").run(None, {"x": x})[0]
    actual = ort_session(tmp_path / "qdq16.onnx").run(None, {"x": x})[0]
    assert np.abs(actual - expected).max() <= 3e-2  # FP16 rounding of x and W before quantization


def test_a_constant_shared_by_a_layernorm_and_an_fp16_node_gets_an_fp16_copy(tmp_path) -> None:
    """The exporter shares equal initializers: the zero biases of a freshly initialized timm model made a LayerNorm
    (kept FP32) and an MLP's Add read one tensor, and TensorRT refused the FP16 graph (Half + Float)."""
    rng = np.random.default_rng(0)
    shared = numpy_helper.from_array(np.zeros(8, np.float32), "zeros")
    weight = numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "weight")
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("LayerNormalization", ["x", "scale", "zeros"], ["normed"], axis=-1),
         helper.make_node("MatMul", ["normed", "weight"], ["projected"]),
         helper.make_node("Add", ["projected", "zeros"], ["y"])],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [shared, weight, scale])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "fp32.onnx")
    convert_fp16(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    model = onnx.load(str(tmp_path / "fp16.onnx"))
    types = tensor_types(model)
    for node in model.graph.node:
        if node.op_type in ("LayerNormalization", "MatMul", "Add"):
            expected = TensorProto.FLOAT if node.op_type == "LayerNormalization" else TensorProto.FLOAT16
            assert {types[t] for t in node.input} == {expected}, node.name
    x = rng.normal(size=(2, 8)).astype(np.float32)
    want = ort_session(tmp_path / "fp32.onnx").run(None, {"x": x})[0]
    np.testing.assert_allclose(ort_session(tmp_path / "fp16.onnx").run(None, {"x": x})[0], want, atol=1e-2)


def test_rejects_an_fp16_graph(swin_t_fp16, tmp_path) -> None:
    with pytest.raises(PipelineError, match="already has FP16 tensors"):
        convert_fp16(swin_t_fp16[0], tmp_path / "again.onnx")
    assert not (tmp_path / "again.onnx").exists()
