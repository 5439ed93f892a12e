"""``torch.ops.swin.window_attention``: the ``SwinWindowAttention`` node as a PyTorch operator.

``(qkv [B, H*W, 3C] in image order, rel_bias [heads, N, N], qkv_bias [3C], height, width, window_size, shift_size,
num_heads, scale) -> [B, H*W, C]``, exactly the node contract, so a model runs the node's data flow
(``build_swin(..., fused_attention=True)``) and exports it as the node. CPU: the reference (:func:`window_attention`);
CUDA: the plugin's kernel through its C ABI, loaded on first use (:func:`enable_cuda`); a fake implementation for
torch.compile and torch.export; ONNX: :func:`onnx_translation_table`. Inference only: no autograd formula.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import onnx

from pipeline.kernels.node_contract import ATTRIBUTE_TYPES, INPUTS, OUTPUTS
from pipeline.kernels.reference import (
    ATTRIBUTES,
    MAP_ATTRIBUTES,
    MAP_VERSION,
    PLUGIN_DOMAIN,
    PLUGIN_OP,
    launch_params,
    node_attributes,
    validate_attributes,
    window_attention_torch,
)
from pipeline.kernels.selection import kernel_choice

#: Environment variable naming the CUDA C ABI library to load instead of the default build's.
CUDA_LIBRARY_ENV = "SWIN_ATTN_CUDA_LIBRARY"
#: Where ``make plugin`` (``pipeline.kernels.cmake.build_native``'s default folder) puts it.
DEFAULT_CUDA_LIBRARY = (Path(__file__).resolve().parents[2] / "build" / "plugin"
                        / "libswin_window_attention_cuda.so")
#: dtypes the CUDA kernel takes (enum SwinAttnDtype).
CUDA_DTYPES = (torch.float32, torch.float16)


def _check_inputs(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int, width: int,
                  window_size: int, shift_size: int, num_heads: int) -> int:
    """The node contract's shape checks (``validate_attributes``, plus ``qkv_bias`` ``[3C]``); return C."""
    channels = validate_attributes(tuple(qkv.shape), tuple(rel_bias.shape), height, width, window_size, shift_size,
                                   num_heads)
    if tuple(qkv_bias.shape) != (3 * channels,):
        raise ValueError(f"{PLUGIN_OP}: qkv_bias must be [{3 * channels}], got {list(qkv_bias.shape)}")
    for name, tensor in (("qkv", qkv), ("rel_bias", rel_bias), ("qkv_bias", qkv_bias)):
        if not tensor.is_floating_point():
            raise TypeError(f"{PLUGIN_OP}: {name} must be a floating-point tensor, got {tensor.dtype}")
    return channels


def triton_selected() -> bool:
    """Whether ``$SWIN_ATTN_KERNEL`` or the committed selection picks the Triton kernel (``pipeline.kernels``)."""
    return kernel_choice().kernel == "triton"


@torch.library.custom_op("swin::window_attention", mutates_args=(), device_types="cpu")
def window_attention(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int, width: int,
                     window_size: int, shift_size: int, num_heads: int, scale: float) -> torch.Tensor:
    """One ``SwinWindowAttention`` node (CPU: the reference, in float32, FP16/BF16 inputs computed in float32 and
    the result cast back to ``qkv``'s dtype; with
    ``SWIN_ATTN_KERNEL=triton`` and ``TRITON_INTERPRET=1``, the Triton kernel under Triton's interpreter)."""
    _check_inputs(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size, num_heads)
    if triton_selected():
        return _window_attention_triton_eager(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size,
                                              num_heads, scale)
    out = window_attention_torch(qkv, rel_bias, qkv_bias, height=height, width=width, window_size=window_size,
                                 shift_size=shift_size, num_heads=num_heads, scale=scale)
    return out.to(qkv.dtype)


def _window_attention_triton_eager(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int,
                                   width: int, window_size: int, shift_size: int, num_heads: int,
                                   scale: float) -> torch.Tensor:
    """The Triton kernel launched directly (CPU tensors: the interpreter; FP16/BF16 others computed in float32)."""
    from pipeline.kernels.window_attention import window_attention as triton_window_attention

    dtype = qkv.dtype if qkv.dtype in CUDA_DTYPES else torch.float32
    out = triton_window_attention(qkv.to(dtype), rel_bias, qkv_bias, height=height, width=width,
                                  window_size=window_size, shift_size=shift_size, num_heads=num_heads, scale=scale)
    return out.to(qkv.dtype)


@torch.library.triton_op("swin::window_attention_triton", mutates_args=())
def window_attention_triton(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int,
                            width: int, window_size: int, shift_size: int, num_heads: int,
                            scale: float) -> torch.Tensor:
    """The node by the Triton kernel as a ``triton_op``: on CUDA ``torch.compile`` sees the kernel itself (no graph
    break, no opaque call). Other devices get ``swin::window_attention`` (an opaque op, so tracing never runs the
    interpreter on fake tensors)."""
    from torch.library import wrap_triton

    from pipeline.kernels.window_attention import window_attention as triton_window_attention

    if not qkv.is_cuda:
        return torch.ops.swin.window_attention(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size,
                                               num_heads, scale)
    _check_inputs(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size, num_heads)
    return triton_window_attention(qkv, rel_bias, qkv_bias, height=height, width=width, window_size=window_size,
                                   shift_size=shift_size, num_heads=num_heads, scale=scale, wrap=wrap_triton)


@torch.library.custom_op("swin::window_attention_map", mutates_args=())
def window_attention_map(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, window_size: int,
                         shift_size: int, num_heads: int, scale: float) -> torch.Tensor:
    """A version-2 node (the map layout): ``qkv [B, H, W, 3C]`` → ``[B, H, W, C]``, H and W read from the tensor.

    ``swin::window_attention`` (on any device) at :func:`pipeline.kernels.reference.launch_params` of the shape: the
    shift is dropped where ``min(H, W) <= window_size``. Exported as the version-2 ``SwinWindowAttention`` node, so a
    graph exported with dynamic H and W holds the node unchanged at every size.
    """
    return _on_tokens(torch.ops.swin.window_attention, qkv, rel_bias, qkv_bias, window_size, shift_size, num_heads,
                      scale)


def _on_tokens(op: Callable, qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, window_size: int,
               shift_size: int, num_heads: int, scale: float) -> torch.Tensor:
    """A version-2 node run by ``op``, a version-1 op: ``qkv [B, H, W, 3C]`` viewed as tokens at the node's
    :func:`~pipeline.kernels.reference.launch_params`, the result viewed back as ``[B, H, W, C]``."""
    p = launch_params(MAP_VERSION, tuple(qkv.shape), window_size=window_size, shift_size=shift_size,
                      num_heads=num_heads, scale=scale)
    out = op(qkv.reshape(p.batch, p.height * p.width, 3 * p.channels), rel_bias, qkv_bias, p.height, p.width,
             p.window_size, p.shift_size, p.num_heads, p.scale)
    return out.view(p.batch, p.height, p.width, p.channels)


@window_attention_map.register_fake
def _window_attention_map_fake(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, window_size: int,
                               shift_size: int, num_heads: int, scale: float) -> torch.Tensor:
    """``[B, H, W, C]`` for symbolic H and W: only the checks that need no size (rank, C, the bias shapes)."""
    if qkv.dim() != 4:
        raise ValueError(f"{PLUGIN_OP} version {MAP_VERSION}: qkv must be [B, H, W, 3C], got rank {qkv.dim()}")
    channels = qkv.shape[-1] // 3
    validate_attributes((1, 1, 3 * channels), tuple(rel_bias.shape), 1, 1, window_size, shift_size, num_heads)
    return qkv.new_empty(*qkv.shape[:-1], channels)


def attend(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, window_size: int, shift_size: int,
           num_heads: int, scale: float) -> torch.Tensor:
    """What the fused model calls with ``qkv [B, H, W, 3C]``: on CUDA with the Triton kernel selected,
    ``swin::window_attention_triton`` at the launch params (so ``torch.compile`` inlines the kernel); otherwise
    ``swin::window_attention_map`` (what the ONNX export maps, for any H and W)."""
    if not (qkv.is_cuda and triton_selected()):
        return torch.ops.swin.window_attention_map(qkv, rel_bias, qkv_bias, window_size, shift_size, num_heads,
                                                   scale)
    return _on_tokens(torch.ops.swin.window_attention_triton, qkv, rel_bias, qkv_bias, window_size, shift_size,
                      num_heads, scale)


@window_attention.register_fake
def _window_attention_fake(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int,
                           width: int, window_size: int, shift_size: int, num_heads: int,
                           scale: float) -> torch.Tensor:
    """The output's shape and dtype only, so that torch.compile and torch.export trace the op as one opaque node."""
    channels = _check_inputs(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size, num_heads)
    return qkv.new_empty(qkv.shape[0], qkv.shape[1], channels)


# ---------------------------------------------------------------------------------------------------------
# CUDA: the kernel's C ABI


_cuda_lock = threading.Lock()
_cuda_library: Any = None  #: the loaded pipeline.kernels.native.SwinAttention, once enable_cuda succeeded
_cuda_library_path: Path | None = None


def cuda_library_path() -> Path:
    """The CUDA C ABI library :func:`enable_cuda` loads by default: ``$SWIN_ATTN_CUDA_LIBRARY``, else the build's."""
    return Path(os.environ.get(CUDA_LIBRARY_ENV) or DEFAULT_CUDA_LIBRARY)


def enable_cuda(library: str | Path | None = None) -> Path:
    """Load the kernel's C ABI library and make it the op's CUDA implementation; return the library's path.

    At import the CUDA key gets only a loader, so importing this module touches neither CUDA nor the library; the
    first call on CUDA tensors (or this function) registers the kernel in its place: asynchronous on
    ``torch.cuda.current_stream()``, FP32 or FP16, capturable in CUDA graphs.

    ``library`` None: :func:`cuda_library_path`. Calling it again with another library switches to that one.
    Raises RuntimeError, saying how to build it, when the library is missing or has no CUDA entry point. Call it (or
    run the op once) before capturing a CUDA graph: loading the library inside a capture is not capturable.
    """
    global _cuda_library, _cuda_library_path
    from pipeline.kernels.native import SwinAttention

    path = Path(library) if library is not None else cuda_library_path()
    with _cuda_lock:
        if _cuda_library is not None and _cuda_library_path == path:
            return path
        if not path.is_file():
            raise RuntimeError(f"torch.ops.swin.window_attention on CUDA needs the kernel's C ABI library, and {path} "
                               "does not exist: build it with `make plugin` (or "
                               "pipeline.kernels.cmake.build_native()), or "
                               f"point ${CUDA_LIBRARY_ENV} or pipeline.kernels.ops.enable_cuda(path) at a built "
                               "libswin_window_attention_cuda.so")
        try:
            binding = SwinAttention(path)
        except (OSError, AttributeError) as error:
            raise RuntimeError(f"cannot load {path} as the SwinWindowAttention C ABI library: {error}") from error
        if not hasattr(binding.lib, "swin_window_attention_forward"):
            raise RuntimeError(f"{path} has no swin_window_attention_forward: it is not the CUDA library "
                               "(libswin_window_attention_cuda.so)")
        _cuda_library, _cuda_library_path = binding, path
        window_attention.register_kernel("cuda")(_window_attention_cuda)
    return path


def _aligned(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` as a contiguous ``dtype`` tensor at a 16-byte aligned address (the C ABI's requirement)."""
    tensor = tensor.to(dtype).contiguous()
    return tensor if tensor.data_ptr() % 16 == 0 else tensor.clone()


def _window_attention_cuda(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, height: int,
                           width: int, window_size: int, shift_size: int, num_heads: int,
                           scale: float) -> torch.Tensor:
    """The CUDA kernel on ``torch.cuda.current_stream()``: no host synchronization, so CUDA graphs capture it
    (the Triton kernel instead when ``$SWIN_ATTN_KERNEL`` or the selection picks it)."""
    channels = _check_inputs(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size, num_heads)
    if triton_selected():
        return _window_attention_triton_eager(qkv, rel_bias, qkv_bias, height, width, window_size, shift_size,
                                              num_heads, scale)
    if qkv.dtype not in CUDA_DTYPES:
        raise TypeError(f"{PLUGIN_OP}: the CUDA kernel takes float32 or float16 qkv, got {qkv.dtype}")
    if rel_bias.device != qkv.device or qkv_bias.device != qkv.device:
        raise ValueError(f"{PLUGIN_OP}: qkv, rel_bias and qkv_bias must be on one device, got {qkv.device}, "
                         f"{rel_bias.device} and {qkv_bias.device}")
    out = torch.empty(qkv.shape[0], qkv.shape[1], channels, device=qkv.device, dtype=qkv.dtype)
    if out.numel() == 0:
        return out
    # One dtype for every input and the output (the contract's configs); the kernel reads them as such.
    qkv, rel_bias, qkv_bias = (_aligned(t, out.dtype) for t in (qkv, rel_bias, qkv_bias))
    with torch.cuda.device(qkv.device):
        stream = torch.cuda.current_stream(qkv.device).cuda_stream
        _cuda_library.forward(qkv, rel_bias, qkv_bias, out, stream=stream, height=height, width=width,
                              window_size=window_size, shift_size=shift_size, num_heads=num_heads, scale=scale)
    return out


def _window_attention_cuda_first_call(*args: Any) -> torch.Tensor:
    """Registered at import: loads the library on the first CUDA call (:func:`enable_cuda` then replaces this)."""
    enable_cuda()
    return _window_attention_cuda(*args)


window_attention.register_kernel("cuda")(_window_attention_cuda_first_call)


# ---------------------------------------------------------------------------------------------------------
# ONNX


def plugin_op_schema(attributes: tuple[str, ...] = ATTRIBUTES) -> onnx.defs.OpSchema:
    """The node's ONNX schema (the contract: three inputs and the output of one float type, the ``attributes`` of
    its version).

    Given to onnxscript to build the node; never registered with onnx, so ``onnx.checker`` treats the node as the
    unknown custom op it is for every other tool (as it does the nodes surgery writes).
    """
    import onnx

    schema = onnx.defs.OpSchema
    kinds = {"int32": schema.AttrType.INT, "float32": schema.AttrType.FLOAT}
    attribute_types = {name: kinds[ATTRIBUTE_TYPES[name]] for name in attributes}
    attribute_types |= {"plugin_version": schema.AttrType.STRING, "plugin_namespace": schema.AttrType.STRING}
    return schema(
        PLUGIN_OP, PLUGIN_DOMAIN, 1, "Swin (shifted) window attention: the TensorRT plugin's node contract.",
        inputs=[schema.FormalParameter(name, "T") for name in INPUTS],
        outputs=[schema.FormalParameter(name, "T") for name in OUTPUTS],
        type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "one dtype for every input and the output")],
        attributes=[schema.Attribute(name, kind) for name, kind in attribute_types.items()],
    )


def onnx_translation_table() -> dict[Callable, Callable]:
    """The ``SwinWindowAttention`` translations for ``torch.onnx.export(dynamo=True)``, node of domain ``trt.plugins``.

    ``swin::window_attention`` becomes a version-1 node with the inputs and attributes graph surgery writes
    (``pipeline.stages.surgery._replacement``); ``swin::window_attention_map`` a version-2 node (``window_size``,
    ``shift_size``, ``num_heads``, ``scale``), whose H and W come from its qkv at run time.
    """
    import onnxscript

    opset = onnxscript.values.Opset(PLUGIN_DOMAIN, 1)
    node = onnxscript.values.Op(opset, PLUGIN_OP, plugin_op_schema())
    map_node = onnxscript.values.Op(opset, PLUGIN_OP, plugin_op_schema(MAP_ATTRIBUTES))

    def swin_window_attention(qkv, rel_bias, qkv_bias, height: int, width: int, window_size: int, shift_size: int,
                              num_heads: int, scale: float):
        return node(qkv, rel_bias, qkv_bias, **node_attributes(
            height=height, width=width, window_size=window_size, shift_size=shift_size, num_heads=num_heads,
            scale=scale))

    def swin_window_attention_map(qkv, rel_bias, qkv_bias, window_size: int, shift_size: int, num_heads: int,
                                  scale: float):
        return map_node(qkv, rel_bias, qkv_bias, **node_attributes(
            MAP_VERSION, window_size=window_size, shift_size=shift_size, num_heads=num_heads, scale=scale))

    return {torch.ops.swin.window_attention.default: swin_window_attention,
            torch.ops.swin.window_attention_map.default: swin_window_attention_map}


def fold_plugin_inputs(model: Any) -> int:
    """Constant-fold what computes the ``SwinWindowAttention`` nodes' constant inputs, whatever its size.

    ``model``: an ``onnx_ir.Model`` (``torch.onnx.export(...).model``). The exporter folds only small tensors, so
    the gathered relative-position bias of a block with 6 or more heads stays a Reshape → Transpose of the gathered
    table; surgery's nodes get initializers, and so do these after this. Returns the number of plugin inputs that are
    still computed (0 once every ``rel_bias`` and ``qkv_bias`` is an initializer).
    """
    import onnxscript.optimizer

    def is_plugin(node: Any) -> bool:
        return node.op_type == PLUGIN_OP and node.domain == PLUGIN_DOMAIN

    graph = model.graph
    feeding: set[int] = set()  # id() of the nodes the plugins' rel_bias and qkv_bias come from
    stack = [value for node in graph if is_plugin(node) for value in node.inputs[1:] if value is not None]
    while stack:
        producer = stack.pop().producer()
        if producer is not None and id(producer) not in feeding:
            feeding.add(id(producer))
            stack.extend(value for value in producer.inputs if value is not None)
    if feeding:
        onnxscript.optimizer.fold_constants(model, should_fold=lambda node: True if id(node) in feeding else None)
        onnxscript.optimizer.remove_unused_nodes(model)
    return sum(value.producer() is not None for node in graph if is_plugin(node) for value in node.inputs[1:])
