"""The NumPy reference of the SwinWindowAttention node against torchvision's and timm's window attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from timm.models.swin_transformer import SwinTransformerBlock as TimmBlock
from torchvision.models.swin_transformer import shifted_window_attention

import pipeline.kernels.reference
from pipeline.kernels.reference import shift_mask, validate_attributes, window_attention_reference, window_token_index


def reference_then_proj(x: torch.Tensor, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor, rel_bias: torch.Tensor,
                        proj_weight: torch.Tensor, proj_bias: torch.Tensor, window: int, shift: int,
                        heads: int) -> torch.Tensor:
    b, h, w, c = x.shape
    qkv = (x.reshape(b, h * w, c) @ qkv_weight.T + qkv_bias).numpy()
    out = window_attention_reference(qkv, rel_bias.numpy(), qkv_bias.numpy(), height=h, width=w, window_size=window,
                                     shift_size=shift, num_heads=heads, scale=(c // heads) ** -0.5)
    return (torch.from_numpy(out) @ proj_weight.T + proj_bias).reshape(b, h, w, c)


@pytest.mark.parametrize(("height", "width", "window", "shift", "heads", "channels"), [
    (14, 14, 7, 3, 3, 96),    # shifted, no padding
    (14, 21, 7, 0, 4, 128),   # unshifted, non-square
    (10, 13, 7, 3, 2, 64),    # padded to 14x14, shifted
    (30, 17, 12, 6, 4, 128),  # window 12, padded both ways
    (9, 9, 7, 0, 2, 64),      # padded, unshifted: padded keys carry the qkv bias
])
def test_matches_torchvision(height: int, width: int, window: int, shift: int, heads: int, channels: int) -> None:
    """torchvision pads after the norm and before the shift (official order), like the node contract."""
    g = torch.Generator().manual_seed(height * width)
    x = torch.randn(2, height, width, channels, generator=g)
    qkv_weight = torch.randn(3 * channels, channels, generator=g) * 0.2
    qkv_bias = torch.randn(3 * channels, generator=g)
    proj_weight = torch.randn(channels, channels, generator=g) * 0.2
    proj_bias = torch.randn(channels, generator=g)
    rel_bias = torch.randn(heads, window * window, window * window, generator=g)
    expected = shifted_window_attention(x, qkv_weight, proj_weight, rel_bias[None], [window, window], heads,
                                        [shift, shift], qkv_bias=qkv_bias, proj_bias=proj_bias, training=False)
    actual = reference_then_proj(x, qkv_weight, qkv_bias, rel_bias, proj_weight, proj_bias, window, shift, heads)
    assert float((actual - expected).abs().max()) <= 1e-4


@pytest.mark.parametrize(("resolution", "shift", "window"), [((14, 14), 3, 7), ((28, 21), 3, 7), ((24, 24), 6, 12)])
def test_matches_timm_block(resolution: tuple[int, int], shift: int, window: int) -> None:
    torch.manual_seed(0)
    block = TimmBlock(dim=64, input_resolution=resolution, num_heads=4, window_size=window, shift_size=shift).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1)
        x = block.norm1(torch.randn(2, *resolution, 64))
        expected = block._attn(x)
        attn = block.attn
        actual = reference_then_proj(x, attn.qkv.weight, attn.qkv.bias, attn._get_rel_pos_bias()[0],
                                     attn.proj.weight, attn.proj.bias, window, shift, 4)
    assert float((actual - expected).abs().max()) <= 1e-5


def test_chunks_of_windows_give_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """One window per chunk (padded and shifted, so chunks differ in padded slots and mask) equals one chunk."""
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((2, 30 * 17, 3 * 64), np.float32)
    rel_bias = rng.standard_normal((2, 144, 144), np.float32)
    qkv_bias = rng.standard_normal(3 * 64, np.float32)
    attributes = dict(height=30, width=17, window_size=12, shift_size=6, num_heads=2, scale=0.25)
    monkeypatch.setattr(pipeline.kernels.reference, "SCORES_CHUNK_BYTES", 1 << 40)
    whole = window_attention_reference(qkv, rel_bias, qkv_bias, **attributes)
    monkeypatch.setattr(pipeline.kernels.reference, "SCORES_CHUNK_BYTES", 1)
    np.testing.assert_allclose(window_attention_reference(qkv, rel_bias, qkv_bias, **attributes), whole,
                               rtol=0, atol=1e-6)


def test_token_index_covers_every_token_once() -> None:
    source, region = window_token_index(10, 13, 7, 3)
    assert source.shape == (4, 49)
    real = source[source >= 0]
    assert sorted(real.tolist()) == list(range(10 * 13))
    assert (source < 0).sum() == 14 * 14 - 10 * 13
    assert set(np.unique(region)) <= set(range(9))


def test_shift_mask_matches_official_construction() -> None:
    """Official Swin builds the mask with slices over a region-id image; rebuild it that way."""
    h = w = 14
    m, s = 7, 3
    img = np.zeros((h, w))
    count = 0
    for hs in (slice(0, -m), slice(-m, -s), slice(-s, None)):
        for ws in (slice(0, -m), slice(-m, -s), slice(-s, None)):
            img[hs, ws] = count
            count += 1
    windows = img.reshape(2, m, 2, m).transpose(0, 2, 1, 3).reshape(4, m * m)
    expected = np.where(windows[:, None, :] != windows[:, :, None], -100.0, 0.0)
    np.testing.assert_array_equal(shift_mask(h, w, m, s), expected)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_heads": 5}, "num_heads=5 does not divide C=96"),
    ({"shift_size": 7}, "0 <= shift_size < window_size"),
    ({"height": 8}, "qkv has 3136 tokens but height\\*width = 8\\*56"),
    ({"window_size": 0}, "window_size > 0"),
])
def test_inconsistent_attributes_are_rejected(kwargs: dict, message: str) -> None:
    attrs = {"height": 56, "width": 56, "window_size": 7, "shift_size": 3, "num_heads": 3} | kwargs
    with pytest.raises(ValueError, match=message):
        validate_attributes((1, 3136, 288), (3, 49, 49), **attrs)
