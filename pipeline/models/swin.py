"""Swin Transformer (Liu et al., 2021) as the paper and the official implementation define it.

Configs as data, then the layers top-down; parameter names are the official checkpoints' (docs/design.md §6). The
residual stream stays ``[B, H, W, C]``, so any input size works: each block pads to a multiple of the window
(bottom/right, after norm1: §3), shifts, attends with exactly the node contract (``pipeline.kernels.reference``),
reverses and crops. With ``fused_attention`` the blocks run the data flow surgery leaves (LN → qkv →
``torch.ops.swin.window_attention`` → proj, §2); one state dict loads into either form, and the export holds the node.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

import pipeline.kernels.ops
from pipeline.common.variants import SwinConfig
from pipeline.kernels.reference import applied_shift, padded_size, shift_mask


def relative_position_index(window_size: int) -> torch.Tensor:
    """``[N, N]`` index into the ``(2M-1)²`` bias table for every query/key pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij"))
    coords = coords.flatten(1)  # [2, N]
    relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window_size - 1)
    return relative[..., 0] * (2 * window_size - 1) + relative[..., 1]


@functools.lru_cache(maxsize=64)
def _cached_shift_mask(height: int, width: int, window_size: int, shift_size: int, device: torch.device,
                       dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(shift_mask(height, width, window_size, shift_size)).to(device=device, dtype=dtype)


def shift_mask_like(like: torch.Tensor, height: int, width: int, window_size: int, shift_size: int) -> torch.Tensor:
    """The ``[nW, N, N]`` shift mask on ``like``'s device and dtype.

    It depends only on static sizes, so an exported graph holds it as a constant. Eager runs reuse one copy per
    device/dtype (no host-to-device copy per block and call); traces build a fresh one, never caching a fake tensor.
    """
    if torch.compiler.is_compiling():
        return torch.from_numpy(shift_mask(height, width, window_size, shift_size)).to(like)
    return _cached_shift_mask(height, width, window_size, shift_size, like.device, like.dtype)


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """``[B, Hp, Wp, C]`` → ``[B·nW, M², C]``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)


def window_reverse(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``[B·nW, M², C]`` → ``[B, Hp, Wp, C]``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def needs_padding(*sizes: int | torch.SymInt, multiple: int) -> bool:
    """Whether to pad these sizes up to ``multiple``: static ones only when needed (so fixed-size graphs hold no Pad
    of 0), symbolic ones (an export with dynamic H and W) always, since a pad of 0 is exact and no guard is taken."""
    return any(not isinstance(size, int) or size % multiple for size in sizes)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with relative position bias and optional shift mask."""

    def __init__(self, dim: int, num_heads: int, window_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def relative_position_bias(self) -> torch.Tensor:
        """``[heads, N, N]`` bias gathered from the table."""
        n = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(n, n, self.num_heads).permute(2, 0, 1).contiguous()

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b_, n, c = windows.shape
        qkv = self.qkv(windows).reshape(b_, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.relative_position_bias().unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.view(-1, num_windows, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(x)

    def forward_fused(self, x: torch.Tensor, shift_size: int) -> torch.Tensor:
        """``[B, H, W, C]`` → qkv → one ``SwinWindowAttention`` (contract version 2) → proj, ``[B, H, W, C]``.

        The op pads, shifts (dropping ``shift_size`` where ``min(H, W) ≤ window``) and partitions internally; a padded
        token's q/k/v is the qkv bias (0·W + b), which is what the unfused path computes for the zero padding it adds
        after norm1. Nothing here depends on H or W, so the model exports with dynamic sizes.
        """
        out = pipeline.kernels.ops.attend(self.qkv(x), self.relative_position_bias(), self.qkv.bias,
                                          self.window_size, shift_size, self.num_heads, self.scale)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """W-MSA (``shift_size`` 0) or SW-MSA block; the shift is dropped where ``min(H, W) ≤ window``."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float,
                 fused_attention: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.fused_attention = fused_attention
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def effective_shift(self, height: int, width: int) -> int:
        return applied_shift(height, width, self.window_size, self.shift_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_attention:
            x = x + self.attn.forward_fused(self.norm1(x), self.shift_size)
            return x + self.mlp(self.norm2(x))
        _, height, width, _ = x.shape
        m, s = self.window_size, self.effective_shift(height, width)
        hp, wp = padded_size(height, m), padded_size(width, m)
        y = self.norm1(x)
        if (hp, wp) != (height, width):
            y = F.pad(y, (0, 0, 0, wp - width, 0, hp - height))
        if s:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
        mask = shift_mask_like(y, height, width, m, s) if s else None
        y = window_reverse(self.attn(window_partition(y, m), mask), m, hp, wp)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + (y[:, :height, :width] if (hp, wp) != (height, width) else y)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (order x[0::2,0::2], x[1::2,0::2], x[0::2,1::2], x[1::2,1::2]) → LN → 4C→2C."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        if needs_padding(h, w, multiple=2):
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
            h, w = h + h % 2, w + w % 2
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).reshape(b, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x))


class BasicLayer(nn.Module):
    """One stage: pairs of W-MSA / SW-MSA blocks, then (except the last stage) patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int, mlp_ratio: float,
                 downsample: bool, fused_attention: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio,
                                 fused_attention)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (stage output before merging, input of the next stage)."""
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    """Patch partition + linear embedding as one stride-4 convolution, then LayerNorm."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        p = self.patch_size
        if needs_padding(h, w, multiple=p):
            x = F.pad(x, (0, (-w) % p, 0, (-h) % p))
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTransformer(nn.Module):
    """Image classifier, or with ``features_only`` a backbone returning the four stage maps ``[B, C_i, H_i, W_i]``.

    ``fused_attention``: every block's attention is one ``torch.ops.swin.window_attention`` between the qkv and proj
    Linears (the module docstring); same parameters and outputs.
    """

    def __init__(self, config: SwinConfig, features_only: bool = False, fused_attention: bool = False) -> None:
        super().__init__()
        self.config = config
        self.features_only = features_only
        self.fused_attention = fused_attention
        self.patch_embed = PatchEmbed(config.patch_size, config.embed_dim)
        self.layers = nn.ModuleList(
            BasicLayer(config.stage_dim(i), depth, heads, config.window_size, config.mlp_ratio, downsample=i < 3,
                       fused_attention=fused_attention)
            for i, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True))
        )
        self.norm = None if features_only else nn.LayerNorm(config.stage_dim(3))
        self.head = None if features_only else nn.Linear(config.stage_dim(3), config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        x = self.patch_embed(images)
        features = []
        for layer in self.layers:
            stage_out, x = layer(x)
            features.append(stage_out.permute(0, 3, 1, 2).contiguous())  # NCHW maps callers can view()
        if self.features_only:
            return features
        return self.head(self.norm(x).mean(dim=(1, 2)))
