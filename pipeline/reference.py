"""CPU reference of the ``SwinWindowAttention`` node: the exact contract the TensorRT plugin implements.

One node does everything in a (shifted) window-attention block that depends on token position:
cyclic shift, window gather, the shift mask, the relative-position bias, softmax, P·V, window
reverse and the back-shift. The GEMMs around it (qkv and proj) stay ordinary ONNX MatMul+Add.
See ``plugins/swin_window_attention/README.md`` for the node contract.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.artifacts import read_onnx
from pipeline.interrupts import interrupts_deferred

PLUGIN_OP = "SwinWindowAttention"
PLUGIN_DOMAIN = "trt.plugins"
PLUGIN_VERSION = "1"
#: Added to the score of a key in another shift region; the value official Swin, timm and torchvision use.
MASK_VALUE = -100.0
#: Attribute names of the node, in the order the plugin creator declares them.
ATTRIBUTES = ("height", "width", "window_size", "shift_size", "num_heads", "scale")
#: Scores computed at once by :func:`window_attention_reference`: bounds its memory on large maps (an 800x1333
#: backbone's stage 1 has ~1400 windows); cache-sized chunks also measured fastest (1-16 MiB alike on 2 cores).
SCORES_CHUNK_BYTES = 4 << 20


def padded_size(size: int, window_size: int) -> int:
    """Length of one axis after padding it up to a multiple of the window."""
    return -(-size // window_size) * window_size


@functools.lru_cache(maxsize=64)
def window_token_index(height: int, width: int, window_size: int, shift_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Map each window slot to its source token, and give each slot its shift region.

    Returns ``(source, region)``, both ``int64[num_windows, window_size**2]``:
    ``source`` is the token index ``h * width + w`` in image order, or -1 for a padded slot;
    ``region`` is the shift-mask region id (all 0 when ``shift_size`` is 0).
    Window slot ``(y, x)`` of the shifted, padded map holds padded-map position
    ``((y + s) % Hp, (x + s) % Wp)``: the cyclic shift by ``-s`` happens after padding, as in official Swin.
    """
    m, s = window_size, shift_size
    hp, wp = padded_size(height, m), padded_size(width, m)
    y = np.arange(hp)
    x = np.arange(wp)
    h = (y + s) % hp
    w = (x + s) % wp
    source = np.where((h[:, None] < height) & (w[None, :] < width), h[:, None] * width + w[None, :], -1)

    def region_1d(coord: np.ndarray, length: int) -> np.ndarray:
        if s == 0:
            return np.zeros_like(coord)
        return np.where(coord < length - m, 0, np.where(coord < length - s, 1, 2))

    region = region_1d(y, hp)[:, None] * 3 + region_1d(x, wp)[None, :]

    def to_windows(a: np.ndarray) -> np.ndarray:
        return a.reshape(hp // m, m, wp // m, m).transpose(0, 2, 1, 3).reshape(-1, m * m)

    return to_windows(source), to_windows(region)


def shift_mask(height: int, width: int, window_size: int, shift_size: int) -> np.ndarray:
    """The additive shift mask ``float32[num_windows, N, N]`` (0 or ``MASK_VALUE``)."""
    _, region = window_token_index(height, width, window_size, shift_size)
    return np.where(region[:, :, None] != region[:, None, :], MASK_VALUE, 0.0).astype(np.float32)


def validate_attributes(qkv_shape: tuple[int, ...], rel_bias_shape: tuple[int, ...], height: int, width: int,
                        window_size: int, shift_size: int, num_heads: int) -> int:
    """Check a node's shapes and attributes against each other; return the channel count C."""
    if window_size <= 0 or not 0 <= shift_size < window_size:
        raise ValueError(f"{PLUGIN_OP}: need window_size > 0 and 0 <= shift_size < window_size, "
                         f"got window_size={window_size}, shift_size={shift_size}")
    if len(qkv_shape) != 3 or qkv_shape[2] % 3:
        raise ValueError(f"{PLUGIN_OP}: qkv must be [B, H*W, 3C], got shape {list(qkv_shape)}")
    if qkv_shape[1] != height * width:
        raise ValueError(f"{PLUGIN_OP}: qkv has {qkv_shape[1]} tokens but height*width = {height}*{width}")
    channels = qkv_shape[2] // 3
    if num_heads <= 0 or channels % num_heads:
        raise ValueError(f"{PLUGIN_OP}: num_heads={num_heads} does not divide C={channels}")
    n = window_size * window_size
    if tuple(rel_bias_shape) != (num_heads, n, n):
        raise ValueError(f"{PLUGIN_OP}: rel_bias must be [{num_heads}, {n}, {n}], got {list(rel_bias_shape)}")
    return channels


def window_attention_reference(qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, *, height: int,
                               width: int, window_size: int, shift_size: int, num_heads: int,
                               scale: float) -> np.ndarray:
    """Evaluate one ``SwinWindowAttention`` node in float32.

    ``qkv``: ``[B, H*W, 3C]`` tokens in image order, channels ``[q | k | v]`` each ``[heads, head_dim]``;
    ``rel_bias``: ``[heads, N, N]``; ``qkv_bias``: ``[3C]``, the q/k/v of padded tokens.
    Returns ``[B, H*W, C]`` in image order.

    Computed with torch (batched GEMMs and softmax on all cores) a chunk of windows at a time: about
    :data:`SCORES_CHUNK_BYTES` of scores (at least one window's) exist at once, whatever the map size.
    """
    import torch  # here, not at the top: checking a recipe imports this module and must not wait for torch

    channels = validate_attributes(qkv.shape, rel_bias.shape, height, width, window_size, shift_size, num_heads)
    batch = qkv.shape[0]
    head_dim = channels // num_heads
    source, _region = window_token_index(height, width, window_size, shift_size)
    num_windows, n = source.shape
    tokens_in, rel, pad_token = (torch.from_numpy(np.require(a, np.float32, "CW")) for a in (qkv, rel_bias, qkv_bias))
    mask = torch.from_numpy(shift_mask(height, width, window_size, shift_size)) if shift_size else None
    slot_source = torch.from_numpy(source.reshape(-1))
    result = torch.empty(batch, height * width, channels)
    step = max(1, SCORES_CHUNK_BYTES // (batch * num_heads * n * n * 4))
    for first in range(0, num_windows, step):
        slots = slot_source[first * n:(first + step) * n]
        real = slots >= 0
        tokens = tokens_in[:, slots.clamp(min=0)]  # [B, windows*N, 3C]
        tokens[:, ~real] = pad_token  # a padded token is 0·W + b
        q, k, v = tokens.view(batch, -1, n, 3, num_heads, head_dim).permute(3, 0, 1, 4, 2, 5)  # [B, w, heads, N, hd]
        scores = torch.matmul(q * scale, k.transpose(-2, -1))
        scores += rel
        if mask is not None:
            scores += mask[first:first + step, None]
        out = torch.matmul(scores.softmax(-1), v).transpose(2, 3).reshape(batch, -1, channels)
        result[:, slots[real]] = out[:, real]
    return result.numpy()


# --------------------------------------------------------------------------------------------
# onnxruntime execution of original and surgered graphs

#: onnxruntime-extensions runs Python custom ops only from this domain.
ORT_CUSTOM_DOMAIN = "ai.onnx.contrib"


@functools.cache
def _register_ort_custom_op() -> str:
    """Register the reference as an onnxruntime-extensions op once; return the extensions library path."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    from onnxruntime_extensions._ocos import _on_pyop_invocation

    int_attr, float_attr, str_attr = PyCustomOpDef.dt_int64, PyCustomOpDef.dt_float, PyCustomOpDef.dt_string
    attrs = {name: float_attr if name == "scale" else int_attr for name in ATTRIBUTES}
    attrs |= {"plugin_version": str_attr, "plugin_namespace": str_attr}

    @onnx_op(op_type=PLUGIN_OP, inputs=[PyCustomOpDef.dt_float] * 3, outputs=[PyCustomOpDef.dt_float], attrs=attrs)
    def swin_window_attention(qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray,
                              **attributes: int | float | str) -> np.ndarray:
        kwargs = {name: attributes[name] for name in ATTRIBUTES}
        return window_attention_reference(qkv, rel_bias, qkv_bias, **kwargs)

    def invoke(op_id: int, inputs: list[np.ndarray], attributes: dict[str, str]) -> tuple:
        """onnxruntime-extensions' callback, returning the output as an array: the stock one returns ``tolist()``
        of it (~5 s per Swin-B-384 batch of 8 on 2 cores, four times the op itself), while its C++ side takes
        any array and copies its buffer (hence C-contiguous float32)."""
        if op_id != id(swin_window_attention):  # the id onnx_op registered; other Python ops keep the stock path
            return _on_pyop_invocation(op_id, inputs, attributes)
        out = swin_window_attention(*inputs, **swin_window_attention.cast_attributes(attributes))
        return op_id, out.shape, np.ascontiguousarray(out, np.float32)

    PyCustomOpDef.install_hooker(invoke)
    return get_library_path()


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type the graph states (initializers, inputs, inferred values)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        types.setdefault(info.name, info.type.tensor_type.elem_type)
    return types


def _run_plugin_nodes_in_float32(model: onnx.ModelProto) -> None:
    """Wrap FP16 ``SwinWindowAttention`` nodes in Casts: the Python custom op computes in float32 only.

    The plugin itself accumulates softmax in FP32 too, so this changes only the rounding of its inputs' GEMM
    accumulations, not what a typed FP16 graph means.
    """
    types = tensor_types(model)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for node in nodes:
        dtype = types.get(node.input[0], onnx.TensorProto.FLOAT) if node.op_type == PLUGIN_OP else None
        if dtype in (None, onnx.TensorProto.FLOAT):
            model.graph.node.append(node)
            continue
        for i, name in enumerate(node.input):
            model.graph.node.append(onnx.helper.make_node("Cast", [name], [f"{name}.as_float32"],
                                                          to=onnx.TensorProto.FLOAT))
            node.input[i] = f"{name}.as_float32"
        output = node.output[0]
        node.output[0] = f"{output}.float32"
        model.graph.node.append(node)
        model.graph.node.append(onnx.helper.make_node("Cast", [node.output[0]], [output], to=dtype))


class InterruptibleSession(ort.InferenceSession):
    """An onnxruntime session whose ``run`` turns Ctrl-C into a KeyboardInterrupt once onnxruntime has returned.

    During a run, Python would raise it inside the Python custom op under onnxruntime's C++ frames and abort the
    process (:mod:`pipeline.interrupts`). So SIGINT only sets the run's terminate flag (onnxruntime stops before
    its next node) and ``run`` raises KeyboardInterrupt afterwards.
    """

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any],
            run_options: ort.RunOptions | None = None) -> list[Any]:
        options = run_options or ort.RunOptions()
        try:
            with interrupts_deferred("the onnxruntime run", on_interrupt=lambda: setattr(options, "terminate", True)):
                return super().run(output_names, input_feed, options)
        finally:
            options.terminate = False  # the caller's options stay usable


def ort_session(model: str | Path | onnx.ModelProto, intra_op_threads: int = 0) -> InterruptibleSession:
    """An onnxruntime CPU session for an original, surgered, FP16 or Q/DQ model (a path or a ModelProto).

    ``SwinWindowAttention`` nodes run through :func:`window_attention_reference` (an
    onnxruntime-extensions Python op, which needs float32 I/O and the ``ai.onnx.contrib`` domain,
    so the nodes are re-homed, and FP16 ones wrapped in Casts, in memory; the file is untouched).
    Ctrl-C during ``run`` raises KeyboardInterrupt after onnxruntime returns (:class:`InterruptibleSession`).
    """
    model = read_onnx(model) if isinstance(model, (str, Path)) else onnx.ModelProto.FromString(
        model.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if any(n.op_type == PLUGIN_OP for n in model.graph.node):
        options.register_custom_ops_library(_register_ort_custom_op())
        # onnxruntime's idle workers would spin on the cores torch's threads need in the Python op (Swin-B-384
        # FP16, batch 8, 2 cores: 6.2 s a run instead of 8.5 s, of which the op 1.1 s instead of 2.2 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _run_plugin_nodes_in_float32(model)  # rebuilds graph.node, so re-home the nodes afterwards
        for node in model.graph.node:
            if node.op_type == PLUGIN_OP:
                node.domain = ORT_CUSTOM_DOMAIN
        model.opset_import.append(onnx.helper.make_opsetid(ORT_CUSTOM_DOMAIN, 1))
    return InterruptibleSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
