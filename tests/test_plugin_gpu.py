"""The CUDA kernel (through the C ABI, on torch CUDA tensors) against the host reference and PyTorch.
Needs a CUDA device; skipped with the reason otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from plugin_build import native_libs_for
from test_plugin_host_reference import CASES, MAP_CASES, random_inputs, torch_window_attention

from pipeline.kernels.native import SwinAttention
from pipeline.kernels.reference import MAP_VERSION, map_attention_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]


@pytest.fixture(scope="module")
def libs():
    """Built for this device's architecture only (the CI build targets SM86, which may not run here)."""
    major, minor = torch.cuda.get_device_capability()
    built = native_libs_for(f"{major}{minor}")
    return SwinAttention(built.reference), SwinAttention(built.cuda)


GPU_CASES = [*CASES,
             (64, 56, 56, 96, 3, 7, 3),      # Swin-T stage 1, large batch
             (2, 24, 24, 256, 4, 12, 6),     # head_dim 64, window 12
             (3, 19, 23, 192, 3, 12, 0)]     # head_dim 64, window 12, padded


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), GPU_CASES)
def test_kernel_matches_reference(libs, dtype, batch, height, width, channels, heads, window, shift):
    reference, cuda = libs
    qkv, rel_bias, qkv_bias = random_inputs(batch, height, width, channels, heads, window, seed=1)
    attributes = dict(height=height, width=width, window_size=window, shift_size=shift, num_heads=heads,
                      scale=(channels // heads) ** -0.5)
    # Round the inputs to the kernel's dtype first so that only the kernel's arithmetic is compared.
    qkv, rel_bias, qkv_bias = (a.astype(np.float16).astype(np.float32) if dtype == torch.float16 else a
                               for a in (qkv, rel_bias, qkv_bias))
    expected = reference.reference(qkv, rel_bias, qkv_bias, **attributes)
    if batch <= 3:
        independent = torch_window_attention(qkv, rel_bias, qkv_bias, **attributes)
        assert np.abs(expected - independent).max() <= 1e-5

    device = [torch.from_numpy(a).to("cuda", dtype) for a in (qkv, rel_bias, qkv_bias)]
    out = torch.full((batch, height * width, channels), float("nan"), device="cuda", dtype=dtype)
    cuda.forward(*device, out, stream=torch.cuda.current_stream().cuda_stream, **attributes)
    torch.cuda.synchronize()
    got = out.float().cpu().numpy()
    assert np.isfinite(got).all(), "the kernel left output tokens unwritten"
    error = np.abs(got - expected).max()
    if dtype == torch.float32:
        assert error <= 1e-5
    else:
        assert error <= 2e-3 * max(1.0, np.abs(expected).max())


def test_kernel_rejects_bad_params_without_launching(libs):
    _, cuda = libs
    qkv = torch.zeros(1, 196, 192, device="cuda")
    rel_bias, qkv_bias, out = torch.zeros(4, 49, 49, device="cuda"), torch.zeros(192, device="cuda"), torch.zeros(
        1, 196, 64, device="cuda")
    with pytest.raises(RuntimeError, match="num_heads=5 does not divide C=64"):
        cuda.forward(qkv, rel_bias, qkv_bias, out, height=14, width=14, window_size=7, shift_size=3, num_heads=5,
                     scale=0.1)
    misaligned = torch.zeros(196 * 192 + 1, device="cuda")[1:].view(1, 196, 192)
    with pytest.raises(RuntimeError, match="16-byte aligned"):
        cuda.forward(misaligned, rel_bias, qkv_bias, out, height=14, width=14, window_size=7, shift_size=3,
                     num_heads=4, scale=0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), MAP_CASES)
def test_kernel_runs_the_map_layout_at_its_launch_params(libs, dtype, batch, height, width, channels, heads, window,
                                                         shift):
    """Version 2: qkv [B, H, W, 3C] through the C++ launchParams (as the plugin's enqueue) gives
    map_attention_reference, the shift dropped on small maps."""
    _, cuda = libs
    qkv, rel_bias, qkv_bias = random_inputs(batch, height, width, channels, heads, window, seed=2)
    qkv = qkv.reshape(batch, height, width, 3 * channels)
    qkv, rel_bias, qkv_bias = (a.astype(np.float16).astype(np.float32) if dtype == torch.float16 else a
                               for a in (qkv, rel_bias, qkv_bias))
    attributes = dict(window_size=window, shift_size=shift, num_heads=heads, scale=(channels // heads) ** -0.5)
    expected = map_attention_reference(qkv, rel_bias, qkv_bias, **attributes)
    device = [torch.from_numpy(a).to("cuda", dtype) for a in (qkv, rel_bias, qkv_bias)]
    out = torch.full((batch, height, width, channels), float("nan"), device="cuda", dtype=dtype)
    cuda.node_forward(MAP_VERSION, *device, out, stream=torch.cuda.current_stream().cuda_stream, height=0, width=0,
                      **attributes)
    torch.cuda.synchronize()
    got = out.float().cpu().numpy()
    assert np.isfinite(got).all(), "the kernel left output tokens unwritten"
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3 * max(1.0, np.abs(expected).max())
    assert np.abs(got - expected).max() <= tolerance
