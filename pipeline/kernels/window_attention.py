"""The ``SwinWindowAttention`` node as one Triton kernel, its launcher and its declared tuning space.

The same source runs three ways: compiled by Triton's JIT on CUDA tensors (``torch.ops.swin.window_attention``
with ``SWIN_ATTN_KERNEL=triton``), executed by Triton's interpreter on CPU tensors (``TRITON_INTERPRET=1``, the
tests), and compiled ahead of time into the plugin's images (``pipeline.kernels.aot``). docs/design.md §8c.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import triton
import triton.language as tl

from pipeline.kernels.reference import MASK_VALUE, PLUGIN_OP, validate_attributes
from pipeline.kernels.selection import DEFAULT_CONFIG, KernelConfig

if TYPE_CHECKING:
    import torch

#: Largest window and head_dim the kernel takes, and the multiple head_dim must be (the node contract's limits).
MAX_WINDOW = 16
HEAD_DIM_MULTIPLE = 8
MAX_HEAD_DIM = 64
#: head_dim is padded to one of these (tl.dot needs K >= 16); one compiled image per block and dtype.
HEAD_DIM_BLOCKS = (16, 32, 64)
#: Window sizes compiled with the window as a constant (Swin's 7 and 12); others read it at run time.
SPECIALIZED_WINDOWS = (7, 12)
_MASK = tl.constexpr(MASK_VALUE)
_LOG2E = tl.constexpr(1.4426950408889634)


@triton.jit
def _slots(window, slot, height, width, window_size, shift_size, padded_height, padded_width, windows_x):
    """Source token (``-1`` when padding) and shift region of window slots (docs: pipeline/kernels/reference.py)."""
    y = (window // windows_x) * window_size + slot // window_size
    x = (window % windows_x) * window_size + slot % window_size
    h = (y + shift_size) % padded_height
    w = (x + shift_size) % padded_width
    source = tl.where((h < height) & (w < width), h * width + w, -1)
    region_y = tl.where(y < padded_height - window_size, 0, tl.where(y < padded_height - shift_size, 1, 2))
    region_x = tl.where(x < padded_width - window_size, 0, tl.where(x < padded_width - shift_size, 1, 2))
    region = tl.where(shift_size > 0, region_y * 3 + region_x, 0)
    return source, region


@triton.jit
def _gather(qkv_image, qkv_bias, source, offset, dims, dim_ok, row_stride):
    """Rows of q, k or v (``offset`` = part * C + head * head_dim) for slots ``source``: the token's row, or
    ``qkv_bias`` for a padded slot (the q/k/v of a zero token)."""
    real = source >= 0
    rows = tl.multiple_of(tl.where(real, source, 0) * row_stride + offset, 8)
    values = tl.load(qkv_image + rows[:, None] + dims[None, :], mask=real[:, None] & dim_ok[None, :], other=0.0)
    padded = tl.load(qkv_bias + offset + dims, mask=dim_ok, other=0.0)
    return tl.where(real[:, None], values, padded[None, :])


@triton.jit
def _attend_block(qkv_image, rel_bias, qkv_bias, out_image, window, head, row_start, height, width, window_size,
                  shift_size, padded_height, padded_width, windows_x, tokens, channels, head_dim, scale,
                  HEAD_DIM_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """``BLOCK_M`` query slots of one window and head against all its keys (online FP32 softmax), stored."""
    row_stride = 3 * channels
    dims = tl.arange(0, HEAD_DIM_BLOCK)
    dim_ok = dims < head_dim
    rows = row_start + tl.arange(0, BLOCK_M)
    row_source, row_region = _slots(window, rows, height, width, window_size, shift_size, padded_height,
                                    padded_width, windows_x)
    row_source = tl.where(rows < tokens, row_source, -1)
    q = _gather(qkv_image, qkv_bias, row_source, head * head_dim, dims, dim_ok, row_stride)
    row_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    row_sum = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_BLOCK], tl.float32)
    bias_rows = rel_bias + (head * tokens + rows) * tokens
    for col_start in range(0, tokens, BLOCK_N):
        cols = col_start + tl.arange(0, BLOCK_N)
        col_source, col_region = _slots(window, cols, height, width, window_size, shift_size, padded_height,
                                        padded_width, windows_x)
        col_source = tl.where(cols < tokens, col_source, -1)
        k = _gather(qkv_image, qkv_bias, col_source, channels + head * head_dim, dims, dim_ok, row_stride)
        v = _gather(qkv_image, qkv_bias, col_source, 2 * channels + head * head_dim, dims, dim_ok, row_stride)
        if qkv_image.dtype.element_ty == tl.float32:  # FP32 I/O: exact FMA dots, not TF32
            scores = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            scores = tl.dot(q, tl.trans(k))
        bias = tl.load(bias_rows[:, None] + cols[None, :], mask=(rows[:, None] < tokens) & (cols[None, :] < tokens),
                       other=0.0).to(tl.float32)
        scores = scores * scale + bias + tl.where(row_region[:, None] != col_region[None, :], _MASK, 0.0)
        scores = tl.where(cols[None, :] < tokens, scores * _LOG2E, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(scores, 1))
        p = tl.exp2(scores - new_max[:, None])
        alpha = tl.exp2(row_max - new_max)
        row_sum = row_sum * alpha + tl.sum(p, 1)
        if qkv_image.dtype.element_ty == tl.float32:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        row_max = new_max
    acc = acc / row_sum[:, None]
    targets = tl.multiple_of(tl.where(row_source >= 0, row_source, 0) * channels + head * head_dim, 8)
    tl.store(out_image + targets[:, None] + dims[None, :], acc.to(out_image.dtype.element_ty),
             mask=(row_source >= 0)[:, None] & dim_ok[None, :])


@triton.jit
def window_attention_kernel(
    qkv, rel_bias, qkv_bias, out,
    height, width, window_size, shift_size, num_heads, head_dim, scale,
    WINDOW: tl.constexpr, HEAD_DIM_BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    WINDOWS: tl.constexpr, HEADS: tl.constexpr,
):
    """Grid (window groups, head groups, images): ``WINDOWS`` windows x ``HEADS`` heads per program, each query
    block against every key block; nothing intermediate leaves the program. ``WINDOW`` > 0 specializes the kernel
    for that window_size (constant index arithmetic, unrolled tiles); 0 reads it at run time."""
    if WINDOW > 0:
        window_size = WINDOW
    channels = num_heads * head_dim
    padded_height = tl.cdiv(height, window_size) * window_size
    padded_width = tl.cdiv(width, window_size) * window_size
    windows_x = padded_width // window_size
    num_windows = (padded_height // window_size) * windows_x
    tokens = window_size * window_size
    image = tl.program_id(2).to(tl.int64)
    qkv_image = qkv + image * height * width * 3 * channels
    out_image = out + image * height * width * channels
    for head_step in tl.static_range(HEADS):
        head = tl.program_id(1) * HEADS + head_step
        for window_step in tl.static_range(WINDOWS):
            window = tl.program_id(0) * WINDOWS + window_step
            if (window < num_windows) & (head < num_heads):
                for row_start in range(0, tokens, BLOCK_M):
                    _attend_block(qkv_image, rel_bias, qkv_bias, out_image, window, head, row_start, height, width,
                                  window_size, shift_size, padded_height, padded_width, windows_x, tokens, channels,
                                  head_dim, scale, HEAD_DIM_BLOCK, BLOCK_M, BLOCK_N)


def head_dim_block(head_dim: int) -> int:
    """The compiled head_dim block for ``head_dim`` (the smallest of :data:`HEAD_DIM_BLOCKS` that holds it)."""
    return next(block for block in HEAD_DIM_BLOCKS if block >= head_dim)


def check_kernel_limits(window_size: int, head_dim: int) -> None:
    """The kernel's limits beyond the node contract's shape checks; ValueError naming the bound."""
    if window_size > MAX_WINDOW:
        raise ValueError(f"{PLUGIN_OP}: window_size={window_size} is above the kernel's {MAX_WINDOW}")
    if head_dim % HEAD_DIM_MULTIPLE or head_dim > MAX_HEAD_DIM:
        raise ValueError(f"{PLUGIN_OP}: head_dim={head_dim} must be a multiple of {HEAD_DIM_MULTIPLE} up to "
                         f"{MAX_HEAD_DIM}")


def grid(config: KernelConfig, batch: int, height: int, width: int, window_size: int,
         num_heads: int) -> tuple[int, int, int]:
    """The launch grid of ``config`` for one node: (window groups, head groups, images)."""
    windows = triton.cdiv(height, window_size) * triton.cdiv(width, window_size)
    return triton.cdiv(windows, config.windows), triton.cdiv(num_heads, config.heads), batch


def kernel_for(device: torch.device) -> triton.runtime.KernelInterface:
    """The kernel for tensors on ``device``: on the CPU only under Triton's interpreter, which Triton switches on
    when it is imported (``TRITON_INTERPRET=1`` in the environment of the process)."""
    if device.type != "cuda" and isinstance(window_attention_kernel, triton.runtime.JITFunction):
        raise RuntimeError(f"{PLUGIN_OP}: the Triton kernel runs on CPU tensors only under Triton's interpreter: "
                           "start Python with TRITON_INTERPRET=1 in the environment, or move the tensors to a CUDA "
                           "device")
    return window_attention_kernel


def window_attention(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, *, height: int, width: int,
                     window_size: int, shift_size: int, num_heads: int, scale: float,
                     config: KernelConfig = DEFAULT_CONFIG, wrap: Callable | None = None) -> torch.Tensor:
    """One ``SwinWindowAttention`` node by the Triton kernel: ``[B, H*W, C]`` in ``qkv``'s dtype (float16/32).

    ``rel_bias`` and ``qkv_bias`` are read in ``qkv``'s dtype, as the plugin reads them. ``wrap``:
    ``torch.library.wrap_triton`` inside a ``triton_op``, so that ``torch.compile`` traces the launch.
    """
    import torch

    channels = validate_attributes(tuple(qkv.shape), tuple(rel_bias.shape), height, width, window_size, shift_size,
                                   num_heads)
    head_dim = channels // num_heads
    check_kernel_limits(window_size, head_dim)
    if qkv.dtype not in (torch.float16, torch.float32):
        raise TypeError(f"{PLUGIN_OP}: the Triton kernel takes float16 or float32 qkv, got {qkv.dtype}")
    kernel = kernel_for(qkv.device)
    kernel = wrap(kernel) if wrap is not None else kernel
    qkv, rel_bias, qkv_bias = (t.to(qkv.dtype).contiguous() for t in (qkv, rel_bias, qkv_bias))
    out = torch.empty(qkv.shape[0], qkv.shape[1], channels, device=qkv.device, dtype=qkv.dtype)
    if out.numel():
        kernel[grid(config, qkv.shape[0], height, width, window_size, num_heads)](
            qkv, rel_bias, qkv_bias, out, height, width, window_size, shift_size, num_heads, head_dim, float(scale),
            WINDOW=window_size if window_size in SPECIALIZED_WINDOWS else 0, HEAD_DIM_BLOCK=head_dim_block(head_dim),
            BLOCK_M=config.block_m, BLOCK_N=config.block_n,
            WINDOWS=config.windows, HEADS=config.heads, num_warps=config.num_warps, num_stages=config.num_stages)
    return out
