"""Stage 4a: a strongly typed FP16 graph (docs/design.md §4).

Every float tensor becomes FP16 except LayerNormalization (FP32 between two Casts) and the graph's inputs and
outputs (FP32, one Cast at each boundary); the ``SwinWindowAttention`` nodes get FP16 inputs and outputs. Graphs with
Q/DQ nodes (INT8) convert the same way, the opset raised to 19 where their scales become FP16.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from pipeline.common.artifacts import check_writable
from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import ImageSelection
from pipeline.common.onnx_io import QDQ_OPS, read_onnx, write_onnx
from pipeline.common.records import JsonRecord
from pipeline.stages import int8

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob

log = logging.getLogger(__name__)

#: Ops computed in FP32 inside an FP16 graph, with Casts around them.
FP32_OPS = frozenset({"LayerNormalization"})
#: Ops whose float attributes state a type that must follow the graph's float type.
_QDQ_FP16_OPSET = 19


def _is_float32(tensor: gs.Tensor) -> bool:
    if isinstance(tensor, gs.Constant):
        return tensor.values.dtype == np.float32
    return tensor.dtype in (np.float32, onnx.TensorProto.FLOAT)


def _cast(graph: gs.Graph, tensor: gs.Tensor, to: int, name: str) -> gs.Variable:
    out = gs.Variable(name, dtype=np.float16 if to == onnx.TensorProto.FLOAT16 else np.float32, shape=tensor.shape)
    graph.nodes.append(gs.Node("Cast", f"{name}/cast", {"to": to}, [tensor], [out]))
    return out


@dataclasses.dataclass(frozen=True)
class Fp16Report(JsonRecord):
    """What :func:`convert_fp16` did: the nodes kept in FP32, the Casts inserted, the initializers converted."""

    input: str
    output: str
    precision: str  #: "fp16", or "int8+fp16" for a Q/DQ graph
    initializers_converted: int
    casts_inserted: int
    fp32_nodes: dict[str, int]
    qdq_nodes: int


def convert_fp16(in_path: str | Path, out_path: str | Path) -> Fp16Report:
    """Write a strongly typed FP16 version of ``in_path`` to ``out_path``; return what was done."""
    check_writable(out_path)
    model = read_onnx(in_path)
    graph = gs.import_onnx(onnx.shape_inference.infer_shapes(model))
    if any(t.dtype in (np.float16, onnx.TensorProto.FLOAT16) for t in graph.tensors().values()
           if isinstance(t, gs.Variable)):
        raise PipelineError(f"{in_path} already has FP16 tensors; convert_fp16 takes the FP32 (or FP32 + Q/DQ) "
                            "graph, e.g. model.swin.onnx")
    fp32_nodes = [n for n in graph.nodes if n.op in FP32_OPS]
    converted = _to_fp16(graph, fp32_nodes)
    casts = _keep_fp32_nodes(graph, fp32_nodes) + _keep_fp32_interface(graph)
    result, qdq = _typed_model(graph, model)
    write_onnx(result, out_path)
    log.info("fp16: %s → %s (%d initializers to FP16, %d LayerNorms kept FP32, %d Casts)", in_path, out_path,
             converted, len(fp32_nodes), casts)
    return Fp16Report(input=str(in_path), output=str(out_path), precision="int8+fp16" if qdq else "fp16",
                      initializers_converted=converted, casts_inserted=casts,
                      fp32_nodes=dict(collections.Counter(n.op for n in fp32_nodes)), qdq_nodes=qdq)


def _to_fp16(graph: gs.Graph, fp32_nodes: list[gs.Node]) -> int:
    """Every FP32 tensor, constant and Cast to FP16 except the constants FP32 nodes read; the constants converted."""
    fp32_inputs = {id(t) for n in fp32_nodes for t in n.inputs}
    converted = 0
    # The exporter shares equal initializers between layers (the zero biases of freshly initialized weights: a
    # LayerNorm's and an MLP's), so a constant an FP32 node reads may feed FP16 nodes too: they get an FP16 copy.
    fp16_copies: dict[int, gs.Constant] = {}
    for node in graph.nodes:
        if node.op in FP32_OPS:
            continue
        for i, tensor in enumerate(node.inputs):
            if isinstance(tensor, gs.Constant) and id(tensor) in fp32_inputs and _is_float32(tensor):
                if id(tensor) not in fp16_copies:
                    fp16_copies[id(tensor)] = gs.Constant(f"{tensor.name}.fp16", tensor.values.astype(np.float16))
                    converted += 1
                node.inputs[i] = fp16_copies[id(tensor)]
    for tensor in graph.tensors().values():
        if not _is_float32(tensor):
            continue
        if isinstance(tensor, gs.Constant):
            if id(tensor) not in fp32_inputs:
                tensor.values = tensor.values.astype(np.float16)
                converted += 1
        else:
            tensor.dtype = np.float16
    for node in graph.nodes:
        if node.op == "Cast" and node.attrs.get("to") == onnx.TensorProto.FLOAT:
            node.attrs["to"] = onnx.TensorProto.FLOAT16
        if node.op == "Constant" and node.attrs["value"].values.dtype == np.float32:
            node.attrs["value"].values = node.attrs["value"].values.astype(np.float16)
    return converted


def _keep_fp32_nodes(graph: gs.Graph, fp32_nodes: list[gs.Node]) -> int:
    """Casts around each node kept in FP32 (LayerNorm); the Casts inserted."""
    casts = 0
    for index, node in enumerate(fp32_nodes):
        for i, tensor in enumerate(node.inputs):
            if isinstance(tensor, gs.Variable) and tensor.dtype == np.float16:
                node.inputs[i] = _cast(graph, tensor, onnx.TensorProto.FLOAT, f"{node.name}.fp32_in{i}")
                casts += 1
        for i, tensor in enumerate(node.outputs):
            if tensor in graph.outputs:  # FP32 already: no round trip through FP16
                tensor.dtype = np.float32
            elif tensor.dtype == np.float16:
                fp32_out = gs.Variable(f"{node.name}.fp32_out{i}", dtype=np.float32, shape=tensor.shape)
                node.outputs[i] = fp32_out
                graph.nodes.append(gs.Node("Cast", f"{node.name}.fp16_out{i}/cast",
                                           {"to": onnx.TensorProto.FLOAT16}, [fp32_out], [tensor]))
                casts += 1
        log.debug("fp16: node %d %s kept in FP32", index, node.name)
    return casts


def _keep_fp32_interface(graph: gs.Graph) -> int:
    """Keep the graph's interface FP32: a Cast after each input and before each output; the Casts inserted."""
    casts = 0
    for i, tensor in enumerate(list(graph.inputs)):
        if tensor.dtype == np.float16:
            fp32_input = gs.Variable(tensor.name, dtype=np.float32, shape=tensor.shape)
            tensor.name = f"{tensor.name}.fp16"
            graph.nodes.append(gs.Node("Cast", f"{fp32_input.name}.fp16/cast", {"to": onnx.TensorProto.FLOAT16},
                                       [fp32_input], [tensor]))
            graph.inputs[i] = fp32_input
            casts += 1
    for i, tensor in enumerate(list(graph.outputs)):
        if tensor.dtype == np.float16:
            name = tensor.name
            tensor.name = f"{name}.fp16"
            graph.outputs[i] = _cast(graph, tensor, onnx.TensorProto.FLOAT, name)
            casts += 1
    return casts


def _typed_model(graph: gs.Graph, source: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The cleaned, shape-inferred model with ``source``'s metadata and its precision; and its Q/DQ node count."""
    graph.cleanup().toposort()
    result = gs.export_onnx(graph)
    qdq = sum(n.op_type in QDQ_OPS for n in result.graph.node)
    if qdq:
        for opset in result.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version < _QDQ_FP16_OPSET:
                opset.version = _QDQ_FP16_OPSET
    result = onnx.shape_inference.infer_shapes(result, strict_mode=True)
    result.metadata_props.extend(source.metadata_props)
    onnx.helper.set_model_props(result, {**{p.key: p.value for p in result.metadata_props},
                                         "swin_trt.precision": "int8" if qdq else "fp16"})
    return result, qdq


@dataclasses.dataclass(frozen=True)
class PrecisionReport(JsonRecord):
    """The precision stage's result: the FP16 conversion (fp16, int8) and the calibration with its images (int8)."""

    precision: str
    fp16: Fp16Report | None = None
    calibration: int8.Int8Report | None = None
    images: ImageSelection | None = None

    def to_json(self) -> dict[str, Any]:
        # The shapes report.json and stages.json have always had: FP32 its name, FP16 the conversion's own record,
        # INT8 the calibration, its images and the conversion.
        if self.fp16 is None:
            return {"precision": self.precision}
        if self.calibration is None:
            return self.fp16.to_json()
        images = None if self.images is None else self.images.summary()
        return {"calibration": self.calibration.to_json(), "images": images, "fp16": self.fp16.to_json()}


def run(job: EngineJob) -> PrecisionReport:
    """make_engine's precision stage: the surgered graph to ``model.swin.<precision>.onnx``; FP32 is the surgered
    graph itself (a hard link), INT8 calibrates first (:func:`pipeline.stages.int8.run`)."""
    precision, files = job.recipe.precision, job.files
    if precision == "fp32":
        files.typed.unlink(missing_ok=True)
        files.typed.hardlink_to(files.swin)
        return PrecisionReport(precision)
    if precision == "fp16":
        return PrecisionReport(precision, fp16=convert_fp16(files.swin, files.typed))
    calibration = int8.run(job)
    return PrecisionReport(precision, fp16=convert_fp16(files.qdq, files.typed), calibration=calibration,
                           images=job.recipe.image_plan().calibration)
