"""CPU reference of the ``SwinWindowAttention`` node: the exact contract the TensorRT plugin implements.

One node does everything in a (shifted) window-attention block that depends on token position:
cyclic shift, window gather, the shift mask, the relative-position bias, softmax, P·V, window
reverse and the back-shift. The GEMMs around it (qkv and proj) stay ordinary ONNX MatMul+Add.
See ``plugins/swin_window_attention/README.md`` for the node contract; its constants come from
``pipeline.kernels.node_contract``, generated from the contract's YAML.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING

import numpy as np

# Re-exported (``X as X``): the rest of the project reads the contract's constants from here.
from pipeline.kernels.node_contract import ATTRIBUTE_TYPES, PLUGIN_NAMESPACE
from pipeline.kernels.node_contract import ATTRIBUTES as ATTRIBUTES
from pipeline.kernels.node_contract import MAP_ATTRIBUTES as MAP_ATTRIBUTES
from pipeline.kernels.node_contract import MAP_VERSION as MAP_VERSION
from pipeline.kernels.node_contract import MASK_VALUE as MASK_VALUE
from pipeline.kernels.node_contract import PLUGIN_DOMAIN as PLUGIN_DOMAIN
from pipeline.kernels.node_contract import PLUGIN_OP as PLUGIN_OP
from pipeline.kernels.node_contract import PLUGIN_VERSION as PLUGIN_VERSION

if TYPE_CHECKING:
    import torch

#: The Python type of each of the contract's attribute types (its ONNX attribute is INT or FLOAT).
_PYTHON_TYPES = {"int32": int, "float32": float}
#: Scores computed at once by :func:`window_attention_reference`: bounds its memory on large maps (an 800x1333
#: backbone's stage 1 has ~1400 windows); cache-sized chunks also measured fastest (1-16 MiB alike on 2 cores).
SCORES_CHUNK_BYTES = 4 << 20


def version_attributes(version: str) -> tuple[str, ...]:
    """The attribute names of a node of contract ``version`` ("1": with height and width; "2": the map layout)."""
    if version not in (PLUGIN_VERSION, MAP_VERSION):
        raise ValueError(f"{PLUGIN_OP}: plugin_version {version!r} is unknown; the contract has "
                         f"{PLUGIN_VERSION!r} and {MAP_VERSION!r}")
    return ATTRIBUTES if version == PLUGIN_VERSION else MAP_ATTRIBUTES


def node_attributes(version: str = PLUGIN_VERSION, **values: float) -> dict[str, int | float | str]:
    """The ONNX attributes of a node of contract ``version`` with these attribute values: each of its attributes in
    order as its contract type, then the ``plugin_version`` and ``plugin_namespace`` the TensorRT ONNX parser reads."""
    names = version_attributes(version)
    if sorted(values) != sorted(names):
        raise ValueError(f"{PLUGIN_OP}: attributes {sorted(values)} given, version {version}'s are {list(names)}")
    typed: dict[str, int | float | str] = {name: _PYTHON_TYPES[ATTRIBUTE_TYPES[name]](values[name]) for name in names}
    return typed | {"plugin_version": version, "plugin_namespace": PLUGIN_NAMESPACE}


def applied_shift(height: int, width: int, window_size: int, shift_size: int) -> int:
    """The shift a block of an ``height`` × ``width`` map applies: none where ``min(H, W) <= window_size`` (one window
    covers that side; official Swin drops it), else ``shift_size``."""
    return 0 if min(height, width) <= window_size else shift_size


@dataclasses.dataclass(frozen=True)
class LaunchParams:
    """What the kernels run one node with: the C ABI's ``SwinAttnParams`` (``ABI_PARAMS``), field for field."""

    batch: int
    height: int
    width: int
    channels: int
    num_heads: int
    window_size: int
    shift_size: int  #: the shift applied: version 2 drops it where min(H, W) <= window_size
    scale: float


def launch_params(version: str, qkv_shape: tuple[int, ...], *, window_size: int, shift_size: int, num_heads: int,
                  scale: float, height: int | None = None, width: int | None = None) -> LaunchParams:
    """The one pure function from a node's runtime ``qkv`` shape and attributes to what its kernels run with (the
    plugin's enqueue computes the same in C++: ``launchParams`` in swin_window_attention_index.h).

    Version 1: ``qkv [B, H*W, 3C]``, ``height`` and ``width`` are attributes and the shift is taken as given.
    Version 2: ``qkv [B, H, W, 3C]``; the shift is dropped where ``min(H, W) <= window_size``, as the model's blocks do.
    """
    if version == MAP_VERSION:
        if len(qkv_shape) != 4:
            raise ValueError(f"{PLUGIN_OP} version {MAP_VERSION}: qkv must be [B, H, W, 3C], got {list(qkv_shape)}")
        batch, height, width, three_c = qkv_shape
        shift_size = applied_shift(height, width, window_size, shift_size)
    else:
        if len(qkv_shape) != 3 or height is None or width is None:
            raise ValueError(f"{PLUGIN_OP} version {PLUGIN_VERSION}: qkv must be [B, H*W, 3C] with height and width "
                             f"attributes, got shape {list(qkv_shape)}")
        batch, _, three_c = qkv_shape
    return LaunchParams(batch=int(batch), height=int(height), width=int(width), channels=int(three_c) // 3,
                        num_heads=num_heads, window_size=window_size, shift_size=shift_size, scale=scale)


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


def map_attention_reference(qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, *, window_size: int,
                            shift_size: int, num_heads: int, scale: float) -> np.ndarray:
    """Evaluate one version-2 node: ``qkv [B, H, W, 3C]`` → ``[B, H, W, C]``; version 1's semantics at the
    :func:`launch_params` of its shape (H and W from the tensor, the shift dropped on small maps)."""
    p = launch_params(MAP_VERSION, qkv.shape, window_size=window_size, shift_size=shift_size, num_heads=num_heads,
                      scale=scale)
    tokens = np.ascontiguousarray(qkv).reshape(p.batch, p.height * p.width, 3 * p.channels)
    out = window_attention_reference(tokens, rel_bias, qkv_bias, height=p.height, width=p.width,
                                     window_size=p.window_size, shift_size=p.shift_size, num_heads=p.num_heads,
                                     scale=p.scale)
    return out.reshape(p.batch, p.height, p.width, p.channels)


def window_attention_reference(qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, *, height: int,
                               width: int, window_size: int, shift_size: int, num_heads: int,
                               scale: float) -> np.ndarray:
    """Evaluate one ``SwinWindowAttention`` node in float32.

    ``qkv``: ``[B, H*W, 3C]`` tokens in image order, channels ``[q | k | v]`` each ``[heads, head_dim]``;
    ``rel_bias``: ``[heads, N, N]``; ``qkv_bias``: ``[3C]``, the q/k/v of padded tokens.
    Returns ``[B, H*W, C]`` in image order.

    NumPy in and out around :func:`window_attention_torch`, which computes it (no copy of float32 C-contiguous
    inputs).
    """
    import torch  # here, not at the top: checking a recipe imports this module and must not wait for torch

    qkv, rel_bias, qkv_bias = (torch.from_numpy(np.require(a, np.float32, "CW")) for a in (qkv, rel_bias, qkv_bias))
    return window_attention_torch(qkv, rel_bias, qkv_bias, height=height, width=width, window_size=window_size,
                                  shift_size=shift_size, num_heads=num_heads, scale=scale).numpy()


def window_attention_torch(qkv: torch.Tensor, rel_bias: torch.Tensor, qkv_bias: torch.Tensor, *, height: int,
                           width: int, window_size: int, shift_size: int, num_heads: int,
                           scale: float) -> torch.Tensor:
    """:func:`window_attention_reference` on torch tensors: float32 ``[B, H*W, C]`` on ``qkv``'s device.

    Inputs of any floating dtype are read as float32. Computed with torch (batched GEMMs and softmax on all cores)
    a chunk of windows at a time: about :data:`SCORES_CHUNK_BYTES` of scores (at least one window's) exist at once,
    whatever the map size. This is the CPU implementation of ``torch.ops.swin.window_attention``
    (``pipeline.kernels.ops``).
    """
    import torch

    channels = validate_attributes(tuple(qkv.shape), tuple(rel_bias.shape), height, width, window_size, shift_size,
                                   num_heads)
    batch = qkv.shape[0]
    head_dim = channels // num_heads
    device = qkv.device
    source, _region = window_token_index(height, width, window_size, shift_size)
    num_windows, n = source.shape
    tokens_in, rel, pad_token = (a.to(device=device, dtype=torch.float32) for a in (qkv, rel_bias, qkv_bias))
    mask = (torch.from_numpy(shift_mask(height, width, window_size, shift_size)).to(device) if shift_size else None)
    slot_source = torch.from_numpy(source.reshape(-1)).to(device)
    result = torch.empty(batch, height * width, channels, device=device)
    step = max(1, SCORES_CHUNK_BYTES // max(1, batch * num_heads * n * n * 4))
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
    return result
