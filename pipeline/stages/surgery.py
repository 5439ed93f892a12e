"""Stage 3: replace every Swin window-attention region with one ``SwinWindowAttention`` node (docs/design.md §2, §3).

``X → [Pad] → [roll] → partition → qkv → Q·Kᵀ → +bias [+mask] → Softmax → ·V → proj → reverse → [roll back] → [crop]``
becomes ``X → Reshape → qkv MatMul+Add → SwinWindowAttention → proj MatMul+Add → Reshape → Y``. Matching is
structural, anchored on each Softmax between a Q·Kᵀ and a ·V MatMul, never on names; bias, mask and scale are
measured by evaluating the original region, and each rewrite is checked numerically before anything is written. A
region that does not match fails loudly, naming its Softmax node and the exports that work.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from pipeline.common.artifacts import check_writable, write_json
from pipeline.common.attention import ATTENTION_OPSET, ONNX_ATTENTION_OP, check_route
from pipeline.common.compare import FP32_TOLERANCE, relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.onnx_io import read_onnx, write_onnx
from pipeline.common.records import JsonRecord
from pipeline.kernels.reference import (
    ATTRIBUTES,
    PLUGIN_DOMAIN,
    PLUGIN_OP,
    node_attributes,
    padded_size,
    shift_mask,
    window_attention_reference,
)

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob

log = logging.getLogger(__name__)

#: Ops that only move or copy data: window partition/reverse, roll, padding and cropping.
LAYOUT_OPS = {"Reshape", "Transpose", "Slice", "Concat", "Pad", "Squeeze", "Unsqueeze", "Identity", "Flatten"}
#: Ops between the qkv projection and Q, K, V: the head split, Kᵀ and scalings.
HEAD_SPLIT_OPS = {"Reshape", "Transpose", "Slice", "Squeeze", "Unsqueeze", "Gather", "Split", "Identity", "Mul",
                  "Div", "Cast"}
#: Ops between Q·Kᵀ and the Softmax: bias/mask addition, scaling, the per-window reshape.
SCORE_OPS = {"Add", "Mul", "Div", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Cast"}
#: The exports surgery is tested on: torch.export's, and the TorchScript exporter's from this opset (below it ONNX
#: shape inference cannot resolve a reshape target computed at run time from a dynamic batch; a static one works).
MIN_TORCHSCRIPT_OPSET = 14
#: What to do about a graph whose attention surgery cannot rewrite: export the model the ways surgery is tested on.
_EXPORT_REMEDY = ("re-export the PyTorch model (Swin V1: pipeline.models, timm or torchvision) with "
                  "`python -m pipeline export` or torch.onnx.export(dynamo=True), or with dynamo=False at "
                  f"opset_version {MIN_TORCHSCRIPT_OPSET} or later, at a fixed image size with only the batch "
                  "dimension dynamic")
_PADDING_HINT = (" This block is padded: the plugin pads before the cyclic shift, as official Swin and torchvision do;"
                 " timm shifts before padding, so export timm models at a size whose stages are multiples of the"
                 " window, or load the weights into pipeline.models.build_swin.")


@dataclass
class WindowAttentionBlock(JsonRecord):
    """Everything the rewrite of one matched region needs, and what the report says about it."""

    softmax: str  #: the Softmax node's name, or its output's where the node has none
    height: int
    width: int
    window_size: int
    shift_size: int
    num_heads: int
    channels: int
    scale: float
    max_rel_error: float = 0.0

    @property
    def padded(self) -> bool:
        m = self.window_size
        return (padded_size(self.height, m), padded_size(self.width, m)) != (self.height, self.width)


@dataclass
class _Region:
    block: WindowAttentionBlock
    x: gs.Variable
    y: gs.Variable
    qkv_weight: np.ndarray
    qkv_bias: np.ndarray
    proj_weight: np.ndarray
    proj_bias: np.ndarray
    rel_bias: np.ndarray
    windows: gs.Variable  #: the qkv projection's input: the partitioned windows, ``[B·nW, N, C]``
    merged: gs.Variable  #: the proj projection's input: the heads merged again, ``[B·nW, N, C]``
    additive: np.ndarray  #: bias plus shift mask as added to the scaled scores, ``[nW, heads, N, N]``


class _NoMatch(Exception):
    """The region around a Softmax is not Swin window attention; the message says which part."""


# --------------------------------------------------------------------------------------------
# Graph navigation


def _constant(tensor: gs.Tensor) -> np.ndarray | None:
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant":
        return np.asarray(tensor.inputs[0].attrs["value"].values)
    return None


def _label(node: gs.Node) -> str:
    """How messages name a node: by its name, or by its op and first output where the export left it unnamed."""
    return f"{node.op} node '{node.name}'" if node.name else f"unnamed {node.op} node (output '{node.outputs[0].name}')"


def _producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    """Inputs that carry activations (Concat: all non-constant inputs; other ops: the first)."""
    if node.op == "Concat":
        return [t for t in node.inputs if _constant(t) is None]
    return [node.inputs[0]]


def _linear_params(node: gs.Node) -> tuple[gs.Tensor, np.ndarray, np.ndarray | None] | None:
    """If ``node`` is a MatMul with a constant ``[K, N]`` weight, or a plain Gemm, return (input, W[K,N], bias)."""
    if node.op == "MatMul":
        weight = _constant(node.inputs[1])
        if weight is None or weight.ndim != 2:
            return None
        return node.inputs[0], weight, None
    if node.op == "Gemm":
        weight = _constant(node.inputs[1])
        alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
        if weight is None or node.attrs.get("transA", 0) or alpha != 1.0:
            return None
        weight = weight.T if node.attrs.get("transB", 0) else weight
        bias = _constant(node.inputs[2]) if len(node.inputs) > 2 else None
        return node.inputs[0], weight, None if bias is None else beta * bias
    return None


def _linear_ending_at(tensor: gs.Tensor) -> tuple[gs.Tensor, np.ndarray, np.ndarray] | None:
    """Match ``tensor = input @ W (+ b)``; return (input, W, b) with b zero when absent."""
    node = _producer(tensor)
    if node is None:
        return None
    if node.op == "Add":
        for i, j in ((0, 1), (1, 0)):
            bias = _constant(node.inputs[j])
            inner = _producer(node.inputs[i])
            if bias is not None and inner is not None and (params := _linear_params(inner)) and params[2] is None:
                x, weight, _ = params
                if bias.size == weight.shape[1]:
                    return x, weight, bias.reshape(-1)
        return None
    params = _linear_params(node)
    if params is None:
        return None
    x, weight, bias = params
    return x, weight, np.zeros(weight.shape[1], weight.dtype) if bias is None else bias.reshape(-1)


def _trace_to_qkv(tensor: gs.Tensor, what: str) -> tuple[gs.Tensor, float]:
    """Walk back from Q, K or V to the qkv projection output; return it and the scalar factor applied on the way."""
    factor = 1.0
    while (linear := _linear_ending_at(tensor)) is None or linear[1].shape[1] % 3:
        node = _producer(tensor)
        if node is None or node.op not in HEAD_SPLIT_OPS:
            raise _NoMatch(f"{what} does not come from a qkv projection through a head split "
                           f"(stopped at {_label(node) if node else 'a graph input'})")
        if node.op in ("Mul", "Div"):
            data = [t for t in node.inputs if _constant(t) is None]
            consts = [_constant(t) for t in node.inputs if _constant(t) is not None]
            if len(data) != 1 or len(consts) != 1 or consts[0].size != 1:
                raise _NoMatch(f"{what} is scaled by {_label(node)}, which is not a scalar Mul/Div")
            value = float(consts[0].reshape(-1)[0])
            factor *= (1.0 / value) if node.op == "Div" else value
            tensor = data[0]
        else:
            tensor = node.inputs[0]
    return tensor, factor


def _scores_matmul(softmax: gs.Node) -> gs.Node:
    """The Q·Kᵀ MatMul feeding ``softmax`` through bias/mask additions and reshapes."""
    stack = [softmax.inputs[0]]
    seen: set[int] = set()  # by identity: exports may leave every node unnamed
    while stack:
        tensor = stack.pop()
        node = _producer(tensor)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op == "MatMul" and all(_constant(t) is None for t in node.inputs):
            return node
        if node.op in SCORE_OPS:
            stack.extend(t for t in node.inputs if _constant(t) is None)
    raise _NoMatch("no Q·Kᵀ MatMul of two activations feeds it")


def _is_attention(softmax: gs.Node) -> bool:
    """Whether ``softmax`` sits between a Q·Kᵀ MatMul of two activations and a MatMul (P·V): any attention."""
    try:
        _scores_matmul(softmax)
    except _NoMatch:
        return False
    consumers = list(softmax.outputs[0].outputs)
    while len(consumers) == 1 and consumers[0].op in ("Cast", "Identity"):
        consumers = list(consumers[0].outputs[0].outputs)
    return any(c.op == "MatMul" for c in consumers)


def _single_consumer(tensor: gs.Tensor, what: str) -> gs.Node:
    if len(tensor.outputs) != 1:
        raise _NoMatch(f"{what} {tensor.name} has {len(tensor.outputs)} consumers, expected 1")
    return tensor.outputs[0]


def _follow_consumers(tensor: gs.Tensor, through: set[str], what: str) -> tuple[gs.Tensor, gs.Node]:
    """Follow single consumers through ``through`` ops; return the last tensor and its consumer of another op."""
    consumer = _single_consumer(tensor, what)
    while consumer.op in through:
        tensor = consumer.outputs[0]
        consumer = _single_consumer(tensor, what)
    return tensor, consumer


def _layout_source(tensor: gs.Tensor) -> gs.Tensor:
    """Follow pure data movement back to the tensor it all comes from (LayerNorm output)."""
    node = _producer(tensor)
    if node is None or node.op not in LAYOUT_OPS:
        return tensor
    sources = {_layout_source(t).name: _layout_source(t) for t in _data_inputs(node)}
    if len(sources) != 1:
        raise _NoMatch(f"{_label(node)} mixes tensors {sorted(sources)} on the window path")
    return next(iter(sources.values()))


def _layout_sink(tensor: gs.Tensor, graph_outputs: list[gs.Tensor]) -> gs.Tensor:
    """Follow pure data movement forward to the one tensor the residual connection consumes."""
    exits: dict[str, gs.Tensor] = {}
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if t.name in seen:
            continue
        seen.add(t.name)
        if t.outputs and all(n.op in LAYOUT_OPS for n in t.outputs) and t not in graph_outputs:
            stack.extend(o for n in t.outputs for o in n.outputs)
        else:
            exits[t.name] = t
    if len(exits) != 1:
        raise _NoMatch(f"the window-reverse path ends in {len(exits)} tensors {sorted(exits)}, expected 1")
    return next(iter(exits.values()))


def _static_dims(tensor: gs.Tensor, what: str) -> list[int]:
    if tensor.shape is None or any(not isinstance(d, int) for d in tensor.shape[1:]):
        raise _NoMatch(f"{what} {tensor.name} has no static shape after the batch dimension ({tensor.shape})")
    return [d for d in tensor.shape[1:]]


# --------------------------------------------------------------------------------------------
# Numeric pieces: evaluate parts of the original graph with onnxruntime


def _subgraph_session(graph: gs.Graph, inputs: list[gs.Variable], outputs: list[gs.Variable]) -> ort.InferenceSession:
    """An onnxruntime session for the part of ``graph`` between ``inputs`` and ``outputs``.

    Original graph inputs that the part still needs (shape computations on a dynamic batch) are kept.
    """
    sub = graph.copy()
    tensors = sub.tensors()
    sub.inputs = [tensors[t.name] for t in inputs] + list(sub.inputs)
    sub.outputs = [tensors[t.name] for t in outputs]
    for t in sub.outputs:
        t.dtype = t.dtype or np.float32
    sub.cleanup(remove_unused_graph_inputs=True)
    model = gs.export_onnx(sub, do_type_check=False)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, feeds: dict[str, np.ndarray], batch: int,
         image_shape: dict[str, list[Any]]) -> np.ndarray:
    """Run ``session``; graph inputs not in ``feeds`` get zeros of their shape at ``batch``."""
    full = dict(feeds)
    for inp in session.get_inputs():
        if inp.name not in full:
            shape = image_shape[inp.name]
            full[inp.name] = np.zeros([batch, *shape[1:]], np.float32)
    return session.run(None, full)[0]


def _additive_terms(graph: gs.Graph, scores: gs.Variable, logits: gs.Variable, num_windows: int, num_heads: int,
                    n: int, image_shape: dict[str, list[Any]]) -> tuple[float, np.ndarray]:
    """The map Q·Kᵀ → softmax input as ``a·S + T``; returns ``a`` and ``T[num_windows, heads, N, N]``."""
    session = _subgraph_session(graph, [scores], [logits])
    shape = (num_windows, num_heads, n, n)
    zero = _run(session, {scores.name: np.zeros(shape, np.float32)}, 1, image_shape).reshape(shape)
    probe = np.random.default_rng(0).uniform(1.0, 2.0, shape).astype(np.float32)
    linear = _run(session, {scores.name: probe}, 1, image_shape).reshape(shape) - zero
    factor = float(np.median(linear / probe))
    if not np.allclose(linear, factor * probe, rtol=1e-4, atol=1e-4):
        raise _NoMatch("the path from Q·Kᵀ to the Softmax is not a scaling plus a constant bias/mask")
    return factor, zero


def _infer_shift(additive: np.ndarray, height: int, width: int, window_size: int) -> tuple[int, np.ndarray]:
    """Split ``T`` into the relative-position bias (window 0, never masked) and a shift mask; find the shift."""
    rel_bias = additive[0]
    mask = additive - rel_bias[None]
    for shift in range(window_size):
        expected = shift_mask(height, width, window_size, shift)[:, None] if shift else 0.0
        if np.allclose(mask, expected, atol=1e-3):
            return shift, rel_bias
    raise _NoMatch("the bias/mask added to the scores is not a relative-position bias plus a Swin shift mask "
                   f"for {height}x{width} with window {window_size}")


# --------------------------------------------------------------------------------------------
# Matching one region


def _match_region(graph: gs.Graph, softmax: gs.Node, image_shape: dict[str, list[Any]]) -> _Region:
    scores_mm = _scores_matmul(softmax)
    probs, pv_mm = _follow_consumers(softmax.outputs[0], {"Cast", "Identity"}, "softmax output")
    if pv_mm.op != "MatMul" or pv_mm.inputs[0] is not probs:
        raise _NoMatch(f"the Softmax output feeds {_label(pv_mm)}, not the P·V MatMul")

    q_src, q_factor = _trace_to_qkv(scores_mm.inputs[0], "Q")
    k_src, k_factor = _trace_to_qkv(scores_mm.inputs[1], "K")
    v_src, v_factor = _trace_to_qkv(pv_mm.inputs[1], "V")
    if not q_src is k_src is v_src:
        raise _NoMatch("Q, K and V do not come from the same qkv projection")
    if v_factor != 1.0:
        raise _NoMatch("V is scaled before P·V")
    window_in, qkv_weight, qkv_bias = _linear_ending_at(q_src)
    channels = qkv_weight.shape[0]
    if qkv_weight.shape != (channels, 3 * channels):
        raise _NoMatch(f"the qkv projection weight is {list(qkv_weight.shape)}, expected [C, 3C]")

    # Forward: merge heads (Transpose/Reshape) → proj MatMul(+Add) or Gemm.
    merged, consumer = _follow_consumers(pv_mm.outputs[0], {"Transpose", "Reshape"}, "P·V result")
    proj_out = consumer.outputs[0]
    if len(proj_out.outputs) == 1 and proj_out.outputs[0].op == "Add":
        proj_out = proj_out.outputs[0].outputs[0]
    proj = _linear_ending_at(proj_out)
    if proj is None or proj[0] is not merged or proj[1].shape != (channels, channels):
        raise _NoMatch(f"the merged heads reach {_label(consumer)}, not a [C, C] proj projection")

    x = _layout_source(window_in)
    y = _layout_sink(proj_out, graph.outputs)
    x_dims, y_dims = _static_dims(x, "block input"), _static_dims(y, "block output")
    scores_dims = _static_dims(scores_mm.outputs[0], "Q·Kᵀ")
    num_heads, n = scores_dims[-3], scores_dims[-1]
    window_size = round(n**0.5)
    if window_size * window_size != n or x_dims[-1] != channels or x_dims != y_dims:
        raise _NoMatch(f"shapes do not fit window attention: input {x_dims}, output {y_dims}, scores {scores_dims}")
    height, width = _spatial_size(window_in, x, channels)

    num_windows = (padded_size(height, window_size) * padded_size(width, window_size)) // n
    factor, additive = _additive_terms(graph, scores_mm.outputs[0], softmax.inputs[0], num_windows, num_heads, n,
                                       image_shape)
    shift, rel_bias = _infer_shift(additive, height, width, window_size)
    block = WindowAttentionBlock(softmax.name or softmax.outputs[0].name, height, width, window_size, shift,
                                 num_heads, channels, q_factor * k_factor * factor)
    return _Region(block, x, y, qkv_weight, qkv_bias, *proj[1:], rel_bias.astype(np.float32), window_in, merged,
                   additive.astype(np.float32))


def _spatial_size(window_in: gs.Tensor, x: gs.Tensor, channels: int) -> tuple[int, int]:
    """(H, W) of the block: the first ``[B, H, W, C]`` tensor on the path from the block input."""
    dims = _static_dims(x, "block input")
    if len(dims) == 3:
        return dims[0], dims[1]
    tokens = dims[0]
    tensor = window_in
    path: list[gs.Tensor] = []
    while tensor is not x:
        path.append(tensor)
        tensor = _data_inputs(_producer(tensor))[0]
    for t in reversed(path):
        d = t.shape[1:] if t.shape else []
        if len(d) == 3 and all(isinstance(v, int) for v in d) and d[0] * d[1] == tokens and d[2] == channels:
            return d[0], d[1]
    raise _NoMatch(f"cannot find the [B, H, W, C] view of the {tokens} tokens of block input {x.name}")


# --------------------------------------------------------------------------------------------
# Rewriting


@dataclass
class _Builder:
    """Adds the nodes and constants of one block's replacement, named after it."""

    graph: gs.Graph
    prefix: str

    def const(self, name: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(f"{self.prefix}.{name}", np.asarray(value, order="C"))

    def shape(self, name: str, dims: list[int]) -> gs.Constant:
        return self.const(name, np.array(dims, np.int64))

    def node(self, op: str, name: str, inputs: list[gs.Tensor], attrs: dict[str, Any] | None = None,
             domain: str | None = None) -> gs.Variable:
        out = gs.Variable(f"{self.prefix}.{name}", dtype=np.float32)
        self.graph.nodes.append(gs.Node(op, f"{self.prefix}/{name}", attrs or {}, inputs, [out], domain=domain))
        return out

    def linear(self, name: str, x: gs.Tensor, weight: np.ndarray, bias: np.ndarray) -> gs.Variable:
        matmul = self.node("MatMul", f"{name}_matmul", [x, self.const(f"{name}_weight", weight.astype(np.float32))])
        return self.node("Add", name, [matmul, self.const(f"{name}_bias", bias.astype(np.float32))])


def _replacement(graph: gs.Graph, region: _Region, index: int) -> gs.Variable:
    """Build ``X → Reshape → qkv → SwinWindowAttention → proj → Reshape`` and return its output."""
    b = region.block
    build = _Builder(graph, f"swin_window_attention_{index}")
    tokens = b.height * b.width
    x = build.node("Reshape", "tokens", [region.x, build.shape("tokens_shape", [0, tokens, b.channels])])
    qkv = build.linear("qkv", x, region.qkv_weight, region.qkv_bias)
    attrs = node_attributes(**{name: getattr(b, name) for name in ATTRIBUTES})
    attn = build.node(PLUGIN_OP, "attention", [qkv, build.const("rel_bias", region.rel_bias),
                                               build.const("qkv_bias_padding", region.qkv_bias)], attrs,
                      PLUGIN_DOMAIN)
    attn.shape = [region.x.shape[0], tokens, b.channels]  # shape inference cannot see into the custom op
    proj = build.linear("proj", attn, region.proj_weight, region.proj_bias)
    return build.node("Reshape", "output", [proj, build.shape("output_shape", [0, *region.y.shape[1:]])])


def _attention_replacement(graph: gs.Graph, region: _Region, index: int) -> gs.Variable:
    """Replace the region's qkv → proj input with ONNX ``Attention`` over ``[B, nW·heads, N, head_dim]``; return
    ``region.y``, which the kept window reverse still computes.

    Windows and heads share one axis, so the constant mask ``[1, nW·heads, N, N]`` (bias plus shift mask per
    window position) broadcasts over the batch; the score scale is folded into the Q columns of the qkv weights.
    """
    b = region.block
    build = _Builder(graph, f"tensorrt_attention_{index}")
    windows, n = region.additive.shape[0], b.window_size**2
    heads, head_dim, c = b.num_heads, b.channels // b.num_heads, b.channels
    scale = np.concatenate([np.full(c, b.scale), np.ones(2 * c)]).astype(np.float32)
    x = build.node("Reshape", "windows", [region.windows, build.shape("windows_shape", [-1, windows, n, c])])
    qkv = build.linear("qkv", x, region.qkv_weight * scale, region.qkv_bias * scale)
    qkv = build.node("Reshape", "heads", [qkv, build.shape("heads_shape", [0, windows, n, 3, heads, head_dim])])
    qkv = build.node("Transpose", "qkv_first", [qkv], {"perm": [3, 0, 1, 4, 2, 5]})
    qkv = build.node("Reshape", "stacked", [qkv, build.shape("stacked_shape", [3, -1, windows * heads, n, head_dim])])
    q, k, v = (build.node("Gather", name, [qkv, build.const(f"{name}_index", np.array(i, np.int64))], {"axis": 0})
               for i, name in enumerate("qkv"))
    mask = build.const("mask", region.additive.reshape(1, windows * heads, n, n))
    y = build.node(ONNX_ATTENTION_OP, "attention", [q, k, v, mask], {"scale": 1.0})
    y = build.node("Reshape", "split_heads", [y, build.shape("split_shape", [-1, windows, heads, n, head_dim])])
    y = build.node("Transpose", "tokens_first", [y], {"perm": [0, 1, 3, 2, 4]})
    y = build.node("Reshape", "merged", [y, build.shape("merged_shape", [-1, n, c])])
    for consumer in list(region.merged.outputs):
        consumer.inputs[consumer.inputs.index(region.merged)] = y
    return region.y


def _plugin_output(region: _Region, x: np.ndarray) -> np.ndarray:
    """What the plugin route's replacement computes for ``x``: qkv, the reference op, proj."""
    b = region.block
    qkv = x.reshape(x.shape[0], b.height * b.width, b.channels) @ region.qkv_weight + region.qkv_bias
    attn = window_attention_reference(qkv, region.rel_bias, region.qkv_bias, height=b.height, width=b.width,
                                      window_size=b.window_size, shift_size=b.shift_size,
                                      num_heads=b.num_heads, scale=b.scale)
    return attn @ region.proj_weight + region.proj_bias


def _rewrite_checked(graph: gs.Graph, region: _Region, index: int, attention: str, batch: int,
                     image_shape: dict[str, list[Any]]) -> gs.Variable:
    """Rewrite ``region`` for the ``attention`` route and return its new output; sets the block's
    ``max_rel_error``: the original region against the plugin's reference op, or against the rewritten graph run
    in onnxruntime (``tensorrt``)."""
    x = np.random.default_rng(1).standard_normal([batch, *region.x.shape[1:]]).astype(np.float32)
    expected = _run(_subgraph_session(graph, [region.x], [region.y]), {region.x.name: x}, batch, image_shape)
    if attention == "plugin":
        actual = _plugin_output(region, x)
        new_y = _replacement(graph, region, index)
    else:
        new_y = _attention_replacement(graph, region, index)
        actual = _run(_subgraph_session(graph, [region.x], [new_y]), {region.x.name: x}, batch, image_shape)
    region.block.max_rel_error = relative_error(expected, actual.reshape(expected.shape))
    return new_y


def _node_counts(graph: gs.Graph) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op for n in graph.nodes).items()))


@dataclass
class StageSummary(JsonRecord):
    """The blocks of one Swin stage (consecutive blocks with the same resolution and channels)."""

    stage: int
    resolution: tuple[int, int]
    channels: int
    window_size: int
    num_heads: int
    padded: bool
    blocks: int = 0
    shifted: int = 0


def _stage_summary(blocks: list[WindowAttentionBlock]) -> list[StageSummary]:
    stages: list[StageSummary] = []
    for b in blocks:
        if not stages or stages[-1].resolution != (b.height, b.width) or stages[-1].channels != b.channels:
            stages.append(StageSummary(len(stages) + 1, (b.height, b.width), b.channels, b.window_size, b.num_heads,
                                       b.padded))
        stages[-1].blocks += 1
        stages[-1].shifted += int(b.shift_size > 0)
    return stages


@dataclass(frozen=True)
class SurgeryReport(JsonRecord):
    """What :func:`replace_window_attention` did: written to ``surgery.json``."""

    input: str
    output: str
    blocks_found: int
    blocks_already_replaced: int
    blocks: tuple[WindowAttentionBlock, ...]  #: the blocks replaced by this run
    stages: tuple[StageSummary, ...]
    nodes_before: dict[str, int]
    nodes_after: dict[str, int]
    attention: str = "plugin"  #: the route: what replaced the blocks (pipeline.common.attention)

    @property
    def blocks_replaced(self) -> int:
        return len(self.blocks)

    @property
    def blocks_shifted(self) -> int:
        return sum(b.shift_size > 0 for b in self.blocks)

    @property
    def max_rel_error(self) -> float:
        """The worst self-check error of a rewritten block (:func:`pipeline.common.compare.relative_error`)."""
        return max((b.max_rel_error for b in self.blocks), default=0.0)

    def key_numbers(self) -> dict[str, Any]:
        return {"blocks_replaced": self.blocks_replaced, "blocks_shifted": self.blocks_shifted,
                "node_count_before": sum(self.nodes_before.values()),
                "node_count_after": sum(self.nodes_after.values()), "max_rel_error": self.max_rel_error}

    def to_json(self, blocks: bool = True) -> dict[str, Any]:
        """The report's JSON; ``blocks=False`` leaves out the per-block list."""
        data = {**super().to_json(), **self.key_numbers()}
        if blocks:
            data["blocks"] = [{**b.to_json(), "padded": b.padded} for b in self.blocks]
        else:
            del data["blocks"]
        return data


def _no_blocks_message(in_path: str | Path, softmaxes: list[gs.Node], replaced_op: str) -> str:
    """Why a graph without window attention is refused, naming the Softmax nodes that are not attention."""
    if not softmaxes:
        found = f"no Softmax and no {replaced_op} nodes"
    else:
        names = ", ".join(_label(n) for n in softmaxes[:3]) + (", ..." if len(softmaxes) > 3 else "")
        found = (f"{len(softmaxes)} Softmax node(s), none between a Q·Kᵀ MatMul and a ·V MatMul ({names}), and no "
                 f"{replaced_op} nodes")
    return (f"{in_path} contains no Swin window-attention blocks ({found}); is it a Swin Transformer export? Pass "
            "the ONNX file `python -m pipeline export` wrote for the Swin model")


def _rewrite_block(graph: gs.Graph, softmax: gs.Node, index: int, attention: str, batch: int,
                   image_shape: dict[str, list[Any]], in_path: str | Path) -> WindowAttentionBlock:
    """Match the region around ``softmax``, rewrite it for the ``attention`` route and check it; raise
    PipelineError when it does not match or would compute something else."""
    try:
        region = _match_region(graph, softmax, image_shape)
        new_y = _rewrite_checked(graph, region, index, attention, batch, image_shape)
    except _NoMatch as exc:
        raise PipelineError(f"{in_path}: the attention around {_label(softmax)} is not Swin window attention as "
                            f"surgery knows it: {exc}. Nothing was written; {_EXPORT_REMEDY}.") from exc
    if region.block.max_rel_error > FP32_TOLERANCE:
        op = PLUGIN_OP if attention == "plugin" else f"ONNX {ONNX_ATTENTION_OP}"
        raise PipelineError(f"{in_path}: replacing the block around {_label(softmax)} would change "
                            f"its output by {region.block.max_rel_error:.1e} (relative), above "
                            f"{FP32_TOLERANCE:.0e}; its semantics differ from {op} "
                            f"({asdict(region.block)}).{_PADDING_HINT if region.block.padded else ''} "
                            "Nothing was written.")
    for consumer in list(region.y.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is region.y:
                consumer.inputs[i] = new_y
    graph.outputs = [new_y if t is region.y else t for t in graph.outputs]
    graph.cleanup()
    return region.block


#: Constants bigger than this become typed graph inputs for shape inference, which needs their shapes only: the
#: weights are not serialized on every folding pass (Swin-T: 6 s of 12).
_SHAPE_ONLY_SIZE = 64


def _infer_shapes(graph: gs.Graph, in_path: str | Path) -> None:
    """Set the shape and dtype of every tensor that ONNX shape inference (with data propagation) can tell."""
    light = graph.copy()
    for tensor in light.tensors().values():
        if isinstance(tensor, gs.Constant) and tensor.values.size > _SHAPE_ONLY_SIZE:
            weight = gs.Variable(tensor.name, tensor.dtype, list(tensor.shape))
            for node in list(tensor.outputs):
                node.inputs[node.inputs.index(tensor)] = weight
            light.inputs.append(weight)
    model = gs.export_onnx(light, do_type_check=False)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # shape inference errors are plain Exceptions with the node in the text
        raise PipelineError(f"{in_path}: ONNX shape inference failed ({exc}); is it a valid model?") from exc
    tensors = graph.tensors()
    for name, tensor in gs.import_onnx(inferred).tensors().items():
        if isinstance(tensors.get(name), gs.Variable) and tensor.shape is not None:
            tensors[name].shape, tensors[name].dtype = tensor.shape, tensor.dtype


def _constant_reshape_targets(graph: gs.Graph) -> int:
    """Give each Reshape whose target is computed (Shape → Gather → Concat) the constant target its inferred output
    shape implies, its one unknown dimension (a dynamic batch) as -1; return how many changed."""
    changed = 0
    for node in graph.nodes:
        dims = node.outputs[0].shape if node.op == "Reshape" else None
        if dims is None or _constant(node.inputs[1]) is not None or node.attrs.get("allowzero", 0) or 0 in dims:
            continue
        if sum(not isinstance(d, int) for d in dims) <= 1:
            target = np.array([d if isinstance(d, int) else -1 for d in dims], np.int64)
            node.inputs[1] = gs.Constant(f"{node.outputs[0].name}.constant_shape", target)
            changed += 1
    return changed


def _import_folded(in_path: str | Path) -> tuple[gs.Graph, dict[str, int]]:
    """``in_path`` with its constants folded and its shapes inferred, and its node counts before.

    TorchScript exports compute every reshape target at run time from Shape ops on the activations, and each
    shape inference only resolves the targets whose inputs the previous folding made constant (about one block a
    pass), so inference, constant targets and folding repeat until a pass changes nothing.
    """
    graph = gs.import_onnx(read_onnx(in_path))
    nodes_before = _node_counts(graph)
    # Constant folding runs onnxruntime and Polygraphy's logger, which warn about harmless things.
    ort.set_default_logger_severity(3)
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    while True:
        count = len(graph.nodes)
        _infer_shapes(graph, in_path)
        reshapes = _constant_reshape_targets(graph)
        graph.fold_constants().cleanup()
        if not reshapes and len(graph.nodes) == count:
            return graph, nodes_before


def _at_attention_opset(graph: gs.Graph, in_path: str | Path) -> gs.Graph:
    """``graph`` converted to the opset of the ONNX Attention op: TorchScript exports below 18 give ReduceMean its
    axes as an attribute, which later opsets take as an input, so relabelling the opset is not enough."""
    if graph.opset >= ATTENTION_OPSET:
        return graph
    try:
        converted = gs.import_onnx(onnx.version_converter.convert_version(gs.export_onnx(graph), ATTENTION_OPSET))
    except Exception as exc:  # the converter raises plain Exceptions naming the op it has no adapter for
        raise PipelineError(f"{in_path}: cannot convert opset {graph.opset} to {ATTENTION_OPSET} for the ONNX "
                            f"{ONNX_ATTENTION_OP} op ({exc}); {_EXPORT_REMEDY}") from exc
    _infer_shapes(converted, in_path)
    return converted


def _export_rewritten(graph: gs.Graph, attention: str) -> onnx.ModelProto:
    graph.cleanup().toposort()
    model = gs.export_onnx(graph)
    if attention == "plugin" and not any(o.domain == PLUGIN_DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    return onnx.shape_inference.infer_shapes(model)


def replace_window_attention(in_path: str | Path, out_path: str | Path, report_path: str | Path | None = None,
                             *, attention: str = "plugin") -> SurgeryReport:
    """Rewrite every window-attention block of ``in_path`` into a ``SwinWindowAttention`` node, or for
    ``attention="tensorrt"`` into the ONNX ``Attention`` op (opset 23) between the kept window partition and reverse.

    Writes ``out_path`` (atomically) and returns the report (also written to ``report_path`` if given): blocks
    found/replaced/shifted, per-block and per-stage parameters, node counts before and after, the worst
    self-check error. Running it on its own output changes nothing.
    """
    check_route(attention)
    for path in (out_path, report_path):
        if path is not None:
            check_writable(path)
    graph, nodes_before = _import_folded(in_path)
    if attention == "tensorrt":
        graph = _at_attention_opset(graph, in_path)
    image_shape = {t.name: list(t.shape or []) for t in graph.inputs}
    dynamic_batch = any(not isinstance((t.shape or [1])[0], int) for t in graph.inputs)
    check_batch = 2 if dynamic_batch else int(graph.inputs[0].shape[0])

    replaced_op = PLUGIN_OP if attention == "plugin" else ONNX_ATTENTION_OP
    already = sum(n.op == replaced_op for n in graph.nodes)
    softmaxes = [n for n in graph.nodes if n.op == "Softmax"]
    attention_softmaxes = [n for n in softmaxes if _is_attention(n)]
    if not attention_softmaxes and not already:
        raise PipelineError(_no_blocks_message(in_path, softmaxes, replaced_op))
    for skipped in (n for n in softmaxes if not _is_attention(n)):
        log.info("surgery: %s is not attention (no Q·Kᵀ MatMul before it or no MatMul after it); kept",
                 _label(skipped))
    blocks = [_rewrite_block(graph, softmax, index, attention, check_batch, image_shape, in_path)
              for index, softmax in enumerate(attention_softmaxes, start=already)]
    model = _export_rewritten(graph, attention)
    write_onnx(model, out_path)

    report = SurgeryReport(input=str(in_path), output=str(out_path), blocks_found=len(attention_softmaxes) + already,
                           blocks_already_replaced=already, blocks=tuple(blocks), stages=tuple(_stage_summary(blocks)),
                           nodes_before=nodes_before, nodes_after=_node_counts(gs.import_onnx(model)),
                           attention=attention)
    if report_path is not None:
        write_json(report_path, report.to_json())
    log.info("surgery: replaced %d of %d window-attention blocks (%d shifted%s) in %s with %s, %d → %d nodes, "
             "self-check error %.1e", report.blocks_replaced, report.blocks_found, report.blocks_shifted,
             f", {already} already {replaced_op} nodes" if already else "", in_path, replaced_op,
             sum(report.nodes_before.values()), sum(report.nodes_after.values()), report.max_rel_error)
    return report


def run(job: EngineJob) -> SurgeryReport:
    """make_engine's surgery stage: ``model.onnx`` to ``model.swin.onnx`` (and ``surgery.json``) on the recipe's
    attention route."""
    files = job.files
    return replace_window_attention(files.onnx, files.swin, report_path=files.surgery_report,
                                    attention=job.recipe.attention)
