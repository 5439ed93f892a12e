"""Explicit INT8 quantization of a surgered Swin graph: find its GEMM/Conv layers, insert Q/DQ pairs.

Each quantized layer gets ``QuantizeLinear → DequantizeLinear`` on both inputs (:func:`insert_qdq`), the form
TensorRT's explicit quantization fuses into INT8 kernels (docs/design.md §4). Nothing else is touched; which ops
compute attention is the caller's to say (``attention_ops``: the plugin's op and the ONNX ``Attention`` op for
pipeline/stages/int8.py). Layers are named like the official checkpoint (:func:`find_quantizable_layers`).
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from calib.errors import CalibrationError

#: Layer roles, in network order; each is also an exclusion selector.
ROLES = ("patch_embed", "qkv", "proj", "fc1", "fc2", "patch_merging", "head")
#: Embed dim of Swin-L: fc2 and the patch-merging reductions lose accuracy in INT8 (docs/design.md §4).
SWIN_L_EMBED_DIM = 192
SWIN_L_EXCLUDE = ("fc2", "patch_merging")
INT8_MAX = 127
#: Between a qkv projection and the attention node it feeds (and attention and proj): the head split / merge.
_HEAD_LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Gather"})
_HEAD_LAYOUT_DEPTH = 4  #: Reshape, Transpose, Reshape, Gather from the qkv projection to Q, K and V
MIN_QDQ_OPSET = 13  # per-axis QuantizeLinear / DequantizeLinear


@dataclass(frozen=True)
class QuantizableLayer:
    """A GEMM/Conv node whose inputs get Q/DQ: its readable name, role and the tensors involved."""

    name: str
    role: str
    node: str
    activation: str
    weight: str
    weight_axis: int


def _graph_maps(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    return producer, consumers


def _biased_output(node: onnx.NodeProto, consumers: Mapping[str, Sequence[onnx.NodeProto]],
                   initializers: set[str]) -> str:
    """The output of the node's bias Add (an Add with a constant operand), or the node's own output if none."""
    for add in consumers.get(node.output[0], []):
        if add.op_type == "Add" and any(name in initializers for name in add.input):
            return add.output[0]
    return node.output[0]


def _feeds_attention(tensor: str, consumers: Mapping[str, Sequence[onnx.NodeProto]], attention_ops: Collection[str],
                     depth: int = _HEAD_LAYOUT_DEPTH) -> bool:
    """Whether ``tensor`` reaches an attention node through at most ``depth`` head-layout ops."""
    for consumer in consumers.get(tensor, []):
        if consumer.op_type in attention_ops:
            return True
        if consumer.op_type in _HEAD_LAYOUT_OPS and depth > 0 and _feeds_attention(consumer.output[0], consumers,
                                                                                   attention_ops, depth - 1):
            return True
    return False


def _from_attention(tensor: str, producer: Mapping[str, onnx.NodeProto], attention_ops: Collection[str],
                    depth: int = _HEAD_LAYOUT_DEPTH) -> bool:
    """Whether ``tensor`` comes from an attention node through at most ``depth`` head-layout ops."""
    node = producer.get(tensor)
    if node is None or node.op_type in attention_ops:
        return node is not None
    return node.op_type in _HEAD_LAYOUT_OPS and depth > 0 and _from_attention(node.input[0], producer, attention_ops,
                                                                               depth - 1)


def _role(node: onnx.NodeProto, producer: Mapping[str, onnx.NodeProto],
          consumers: Mapping[str, Sequence[onnx.NodeProto]], initializers: set[str], gelu_outputs: set[str],
          attention_ops: Collection[str]) -> str:
    """What a GEMM/Conv node is in Swin, from its neighbours (exports name initializers arbitrarily)."""
    if node.op_type == "Conv":
        return "patch_embed"
    if node.op_type == "Gemm":
        return "head"
    source = producer.get(node.input[0])
    biased = _biased_output(node, consumers, initializers)
    if _feeds_attention(biased, consumers, attention_ops):
        return "qkv"
    if _from_attention(node.input[0], producer, attention_ops):
        return "proj"
    if any(c.op_type == "Div" and any(e.op_type == "Erf" for e in consumers.get(c.output[0], []))
           for c in consumers.get(biased, [])):
        return "fc1"
    if node.input[0] in gelu_outputs:
        return "fc2"
    if source is not None and source.op_type == "LayerNormalization" and biased == node.output[0]:
        return "patch_merging"  # the only bias-free Linear in Swin: PatchMerging's reduction
    if source is not None and source.op_type in ("ReduceMean", "GlobalAveragePool", "Flatten"):
        return "head"
    raise CalibrationError(f"cannot tell what MatMul node {node.name!r} is in a Swin graph (not qkv, proj, fc1, fc2, "
                           "patch merging or head); quantize only graphs from "
                           "pipeline.stages.surgery.replace_window_attention")


def _weight_axis(node: onnx.NodeProto) -> int:
    """The output-channel axis of the weight as stored: 1 for a MatMul ``[K, N]``, 0 for a Conv ``[O, I, kh, kw]``, 0
    or 1 for a Gemm by ``transB``."""
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0 if node.op_type == "Conv" else 1


def find_quantizable_layers(model: onnx.ModelProto, attention_ops: Collection[str]) -> list[QuantizableLayer]:
    """Every MatMul/Gemm/Conv with a constant weight, in graph order, with its official-style name (docs/design.md
    §6), found from the graph's structure, not its generated names: ``patch_embed.proj``,
    ``layers.{i}.blocks.{j}.attn.qkv`` / ``attn.proj`` / ``mlp.fc1`` / ``mlp.fc2``, ``layers.{i}.downsample.reduction``
    and ``head``. ``attention_ops``: the op types of the nodes computing window attention (what qkv feeds and proj
    reads)."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    producer, consumers = _graph_maps(graph)
    gemms = [n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1
             and n.input[1] in initializers]
    # GELU is x * (0.5 * (1 + erf(x / √2))): its final Mul is the one Mul that takes a Linear's output itself.
    linear_outputs = {_biased_output(node, consumers, initializers) for node in gemms}
    gelu_outputs = {c.output[0] for out in linear_outputs for c in consumers.get(out, []) if c.op_type == "Mul"}

    layers = []
    stage, block = 0, -1
    for node in gemms:
        role = _role(node, producer, consumers, initializers, gelu_outputs, attention_ops)
        if role == "qkv":
            block += 1
        name = {"patch_embed": "patch_embed.proj", "head": "head",
                "patch_merging": f"layers.{stage}.downsample.reduction",
                "qkv": f"layers.{stage}.blocks.{block}.attn.qkv", "proj": f"layers.{stage}.blocks.{block}.attn.proj",
                "fc1": f"layers.{stage}.blocks.{block}.mlp.fc1", "fc2": f"layers.{stage}.blocks.{block}.mlp.fc2",
                }[role]
        if role == "patch_merging":
            stage, block = stage + 1, -1
        layers.append(QuantizableLayer(name, role, node.name, node.input[0], node.input[1], _weight_axis(node)))
    return layers


def default_exclusions(model: onnx.ModelProto) -> tuple[str, ...]:
    """Selectors left in higher precision by default: fc2 and patch merging for Swin-L, nothing otherwise."""
    conv = next((n for n in model.graph.node if n.op_type == "Conv"), None)
    weights = {t.name: t for t in model.graph.initializer}
    embed_dim = weights[conv.input[1]].dims[0] if conv is not None and conv.input[1] in weights else None
    return SWIN_L_EXCLUDE if embed_dim == SWIN_L_EMBED_DIM else ()


def select_excluded(layers: Sequence[QuantizableLayer], selectors: Iterable[str]) -> set[str]:
    """Names of the layers matched by ``selectors``: a role (``fc2``), a glob over layer names
    (``layers.3.*``, ``*.attn.proj``) or an ONNX node name. A selector that matches nothing is an error."""
    excluded: set[str] = set()
    for selector in selectors:
        matched = {layer.name for layer in layers if selector in (layer.role, layer.node)
                   or fnmatch.fnmatchcase(layer.name, selector)}
        if not matched:
            raise CalibrationError(f"exclusion {selector!r} matches no quantizable layer; use a role "
                                   f"({', '.join(ROLES)}), a glob over layer names such as 'layers.3.*' or "
                                   f"'layers.0.blocks.1.mlp.fc2', or an ONNX node name (e.g. {layers[0].node!r})")
        excluded |= matched
    return excluded


def activation_scale(amax: float) -> float:
    """Symmetric INT8 scale for a clip value; a tensor that was all zeros gets scale 1 (any value is exact)."""
    return amax / INT8_MAX if amax > 0 else 1.0


def insert_qdq(model: onnx.ModelProto, layers: Sequence[QuantizableLayer], amax: Mapping[str, float]) -> None:
    """Add Q/DQ on the activation (per tensor, from ``amax``) and weight (per channel) input of each layer.

    Symmetric INT8 with zero point 0: the activation's scale is ``amax / 127``; the weight stays the FP32 initializer
    (TensorRT folds its pair at build time), its scale ``max|W| / 127`` per output channel (:func:`_weight_axis`).

    Edits ``model`` in place. A tensor feeding several quantized layers gets one Q/DQ pair, named after the first.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_QDQ_OPSET:
        raise CalibrationError(f"per-channel Q/DQ needs ONNX opset >= {MIN_QDQ_OPSET}, the graph has {opset}; "
                               "re-export it with pipeline.stages.export (opset 18)")
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    layer_of_node = {layer.node: layer for layer in layers}
    dequantized: dict[str, str] = {}  # tensor → its DequantizeLinear output
    nodes = []
    for node in graph.node:
        layer = layer_of_node.get(node.name)
        if layer is not None:
            for index, tensor, kind in ((0, layer.activation, "input"), (1, layer.weight, "weight")):
                if tensor not in dequantized:
                    if kind == "input":
                        scale = np.array(activation_scale(amax[tensor]), np.float32)
                        axis = None
                    else:
                        channel_amax = np.abs(weights[tensor]).max(
                            axis=tuple(a for a in range(weights[tensor].ndim) if a != layer.weight_axis))
                        scale = np.where(channel_amax > 0, channel_amax / INT8_MAX, 1.0).astype(np.float32)
                        axis = layer.weight_axis
                    prefix = f"{layer.name}.{kind}"
                    nodes += _qdq_pair(graph, tensor, prefix, scale, axis)
                    dequantized[tensor] = f"{prefix}.dequantized"
                node.input[index] = dequantized[tensor]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)


def _qdq_pair(graph: onnx.GraphProto, tensor: str, prefix: str, scale: np.ndarray,
              axis: int | None) -> list[onnx.NodeProto]:
    """QuantizeLinear → DequantizeLinear of ``tensor``; adds the scale and zero-point initializers to ``graph``."""
    zero_point = np.zeros(scale.shape, np.int8)
    graph.initializer.extend([numpy_helper.from_array(scale, f"{prefix}.scale"),
                              numpy_helper.from_array(zero_point, f"{prefix}.zero_point")])
    qdq_inputs = [f"{prefix}.scale", f"{prefix}.zero_point"]
    axis_attr = {} if axis is None else {"axis": axis}
    return [onnx.helper.make_node("QuantizeLinear", [tensor, *qdq_inputs], [f"{prefix}.quantized"],
                                  name=f"{prefix}/quantize", **axis_attr),
            onnx.helper.make_node("DequantizeLinear", [f"{prefix}.quantized", *qdq_inputs], [f"{prefix}.dequantized"],
                                  name=f"{prefix}/dequantize", **axis_attr)]
