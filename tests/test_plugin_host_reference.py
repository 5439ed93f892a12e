"""The C++ host reference of SwinWindowAttention (the kernel's index math, on the CPU) against the NumPy
contract and an independent PyTorch window attention (official Swin order: pad, roll, partition); and the C++
launchParams (what the plugin's enqueue runs a node of either contract version with) against Python's
launch_params."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.kernels.cmake import NativeLibs
from pipeline.kernels.native import SwinAttention, SwinAttentionError
from pipeline.kernels.reference import (
    MAP_VERSION,
    MASK_VALUE,
    PLUGIN_VERSION,
    launch_params,
    map_attention_reference,
    window_attention_reference,
)

CASES = [
    # (batch, height, width, channels, heads, window, shift)
    (1, 14, 14, 64, 2, 7, 3),    # shifted, no padding
    (3, 14, 14, 64, 4, 7, 0),    # unshifted
    (2, 10, 13, 96, 3, 7, 3),    # padded on both axes, shifted
    (1, 10, 13, 96, 3, 7, 0),    # padded, unshifted
    (3, 7, 7, 128, 4, 7, 0),     # one window (stage 4 of a 224 model)
    (1, 24, 24, 64, 2, 12, 6),   # window 12, shifted
    (2, 30, 17, 48, 1, 12, 6),   # window 12, padded, head_dim 48
    (1, 9, 11, 40, 5, 7, 2),     # head_dim 8, odd shift, padded
]


def random_inputs(batch, height, width, channels, heads, window, seed=0):
    rng = np.random.default_rng(seed)
    n = window * window
    qkv = rng.normal(0, 1, (batch, height * width, 3 * channels)).astype(np.float32)
    rel_bias = rng.normal(0, 1, (heads, n, n)).astype(np.float32)
    qkv_bias = rng.normal(0, 1, (3 * channels,)).astype(np.float32)
    return qkv, rel_bias, qkv_bias


def torch_window_attention(qkv, rel_bias, qkv_bias, *, height, width, window_size, shift_size, num_heads, scale):
    """Official-Swin-order window attention written independently of the index header: pad the map (padded
    tokens get qkv_bias), roll by -shift, partition, attend with rel bias + the -100 region mask, reverse,
    roll back, crop."""
    qkv, rel_bias, qkv_bias = (torch.from_numpy(a).double() for a in (qkv, rel_bias, qkv_bias))
    batch, _, three_c = qkv.shape
    c, m, s = three_c // 3, window_size, shift_size
    hd = c // num_heads
    x = qkv.reshape(batch, height, width, three_c)
    pad_h, pad_w = (-height) % m, (-width) % m
    x = F.pad(x - qkv_bias, (0, 0, 0, pad_w, 0, pad_h)) + qkv_bias  # padded tokens = 0·W + b
    hp, wp = height + pad_h, width + pad_w
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    windows = x.reshape(batch, hp // m, m, wp // m, m, three_c).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m, three_c)
    q, k, v = windows.reshape(-1, m * m, 3, num_heads, hd).permute(2, 0, 3, 1, 4)
    attn = (q * scale) @ k.transpose(-2, -1) + rel_bias
    if s:
        img = torch.zeros(hp, wp)
        region = 0
        for hs in (slice(0, -m), slice(-m, -s), slice(-s, None)):
            for ws in (slice(0, -m), slice(-m, -s), slice(-s, None)):
                img[hs, ws] = region
                region += 1
        ids = img.reshape(hp // m, m, wp // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)
        mask = torch.where(ids[:, :, None] != ids[:, None, :], MASK_VALUE, 0.0).double()
        attn = attn.reshape(batch, -1, num_heads, m * m, m * m) + mask[None, :, None]
        attn = attn.reshape(-1, num_heads, m * m, m * m)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, m * m, c)
    out = out.reshape(batch, hp // m, wp // m, m, m, c).permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, c)
    if s:
        out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out[:, :height, :width].reshape(batch, height * width, c).float().numpy()


@pytest.fixture(scope="module")
def reference_lib(native_libs: NativeLibs) -> SwinAttention:
    return SwinAttention(native_libs.reference)


@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), CASES)
def test_host_reference_matches_contract_and_torch(reference_lib, batch, height, width, channels, heads, window,
                                                   shift):
    qkv, rel_bias, qkv_bias = random_inputs(batch, height, width, channels, heads, window)
    attributes = dict(height=height, width=width, window_size=window, shift_size=shift, num_heads=heads,
                      scale=(channels // heads) ** -0.5)
    host = reference_lib.reference(qkv, rel_bias, qkv_bias, **attributes)
    contract = window_attention_reference(qkv, rel_bias, qkv_bias, **attributes)
    independent = torch_window_attention(qkv, rel_bias, qkv_bias, **attributes)
    assert np.isfinite(host).all()
    assert np.abs(host - contract).max() <= 1e-5
    assert np.abs(host - independent).max() <= 1e-5


def test_host_reference_matches_timm_block(reference_lib):
    """timm's SwinTransformerBlock (no padding, where roll/pad order does not matter) as a third opinion."""
    from timm.models.swin_transformer import SwinTransformerBlock

    torch.manual_seed(0)
    for resolution, shift in [((14, 14), 3), ((28, 21), 3), ((14, 14), 0)]:
        block = SwinTransformerBlock(dim=64, input_resolution=resolution, num_heads=4, window_size=7,
                                     shift_size=shift).eval()
        x = torch.randn(2, *resolution, 64)
        with torch.no_grad():
            xn = block.norm1(x)
            expected = block._attn(xn)
            qkv = block.attn.qkv(xn).reshape(2, -1, 192)
            rel_bias = block.attn._get_rel_pos_bias()[0]
            out = reference_lib.reference(qkv.numpy(), rel_bias.numpy(), block.attn.qkv.bias.numpy(),
                                          height=resolution[0], width=resolution[1], window_size=7, shift_size=shift,
                                          num_heads=4, scale=block.attn.scale)
            out = torch.from_numpy(out) @ block.attn.proj.weight.T + block.attn.proj.bias
        assert (out.reshape(expected.shape) - expected).abs().max().item() <= 1e-5


@pytest.mark.parametrize(("attributes", "channels", "message"), [
    (dict(num_heads=5), 64, "num_heads=5 does not divide C=64"),
    (dict(shift_size=7), 64, "got window_size=7, shift_size=7"),
    (dict(shift_size=-1), 64, "got window_size=7, shift_size=-1"),
    (dict(window_size=0, shift_size=0), 64, "got window_size=0, shift_size=0"),
    (dict(num_heads=16), 64, "head_dim = C/num_heads = 64/16 = 4 is not supported"),
    (dict(num_heads=1), 128, "head_dim = C/num_heads = 128/1 = 128 is not supported"),
    (dict(window_size=17, shift_size=0), 64, "window_size=17 exceeds the supported maximum 16"),
])
def test_invalid_attributes_are_rejected_with_a_message(reference_lib, attributes, channels, message):
    params = dict(height=14, width=14, window_size=7, shift_size=3, num_heads=4, scale=0.125) | attributes
    with pytest.raises(SwinAttentionError) as error:
        reference_lib.check(SwinAttention.params(1, channels, **params))
    assert error.value.status == 1
    assert "SwinWindowAttention" in error.value.message and message in error.value.message


# ---------------------------------------------------------------------------------------------------------
# Both contract versions: launchParams and the host reference at its params

#: Map sides for window 7: odd, below, equal to and above the window, a multiple of it and padded.
SIDES = (1, 3, 6, 7, 8, 13, 14, 23)


def launch_cases() -> list[tuple[str, tuple[int, ...], dict]]:
    """(version, qkv shape, attributes) over sizes around the window, non-square too, shifted or not, both versions."""
    cases = []
    for (height, width), shift, (window, heads) in itertools.product(
            itertools.product(SIDES, SIDES), (0, 3), ((7, 2), (12, 4))):
        attributes = dict(window_size=window, shift_size=shift, num_heads=heads, scale=0.125)
        batch, channels = 1 + (height + width) % 3, 16 * heads
        cases.append((MAP_VERSION, (batch, height, width, 3 * channels), attributes))
        cases.append((PLUGIN_VERSION, (batch, height * width, 3 * channels),
                      dict(attributes, height=height, width=width)))
    return cases


def test_launch_params_match_python_field_for_field(reference_lib):
    """One definition: the C++ launchParams (the plugin's enqueue, the host reference) equals Python's launch_params
    for every case, including the map layout's dropped shift where min(H, W) <= window_size."""
    cases = launch_cases()
    assert {version for version, _, _ in cases} == {PLUGIN_VERSION, MAP_VERSION}
    wrong = []
    for version, shape, attributes in cases:
        native = reference_lib.launch_params(version, shape, **{"height": 0, "width": 0, **attributes})
        python = dataclasses.asdict(launch_params(version, shape, **attributes))
        if {name: getattr(native, name) for name, _ in native._fields_} != python:
            wrong.append((version, shape, attributes))
    assert wrong == []
    kept = {launch_params(version, shape, **a).shift_size > 0 for version, shape, a in cases
            if version == MAP_VERSION and a["shift_size"]}
    assert kept == {True, False}, "the cases must cover maps that keep the shift and maps that drop it"


@pytest.mark.parametrize(("version", "shape", "message"), [
    ("3", (1, 7, 7, 192), "plugin_version '3' is unknown; the contract has '1' and '2'"),
    (MAP_VERSION, (1, 49, 192), "qkv must be [B, H, W, 3C] in version 2, got rank 3"),
    (PLUGIN_VERSION, (1, 7, 7, 192), "qkv must be [B, H*W, 3C] in version 1, got rank 4"),
    (MAP_VERSION, (1, -1, 7, 192), "qkv's dimension 1 is -1, outside 0..2^31-1"),
])
def test_launch_params_refuse_what_fits_no_version(reference_lib, version, shape, message):
    with pytest.raises(SwinAttentionError) as error:
        reference_lib.launch_params(version, shape, height=7, width=7, window_size=7, shift_size=3, num_heads=2,
                                    scale=0.125)
    assert error.value.message == f"SwinWindowAttention: {message}"


MAP_CASES = [
    # (batch, height, width, channels, heads, window, shift)
    (2, 14, 14, 64, 2, 7, 3),    # above the window, square, shifted
    (1, 9, 17, 96, 3, 7, 3),     # odd, non-square, padded, shifted
    (3, 7, 7, 64, 2, 7, 3),      # equal to the window: the shift is dropped
    (1, 5, 23, 64, 4, 7, 3),     # H below the window, W above: the shift is dropped
    (2, 3, 4, 64, 2, 7, 0),      # both below, unshifted
    (1, 13, 8, 48, 1, 7, 0),     # above, unshifted, head_dim 48
    (1, 25, 26, 64, 2, 12, 6),   # window 12, shifted
]


@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), MAP_CASES)
def test_map_layout_host_reference_matches_python(reference_lib, batch, height, width, channels, heads, window,
                                                  shift):
    """Version 2: the C++ host reference at launchParams of qkv [B, H, W, 3C] equals map_attention_reference."""
    qkv, rel_bias, qkv_bias = random_inputs(batch, height, width, channels, heads, window, seed=height * width)
    qkv = qkv.reshape(batch, height, width, 3 * channels)
    attributes = dict(window_size=window, shift_size=shift, num_heads=heads, scale=(channels // heads) ** -0.5)
    host = reference_lib.node_reference(MAP_VERSION, qkv, rel_bias, qkv_bias, height=0, width=0, **attributes)
    expected = map_attention_reference(qkv, rel_bias, qkv_bias, **attributes)
    assert host.shape == expected.shape == (batch, height, width, channels)
    assert np.isfinite(host).all()
    assert np.abs(host - expected).max() <= 1e-5


def test_token_layout_node_reference_is_the_reference(reference_lib):
    """Version 1 through the node entry point gives exactly what swin_window_attention_reference gives, and a token
    count other than height*width is refused rather than read past."""
    batch, height, width, channels, heads, window, shift = CASES[2]
    qkv, rel_bias, qkv_bias = random_inputs(batch, height, width, channels, heads, window)
    attributes = dict(height=height, width=width, window_size=window, shift_size=shift, num_heads=heads, scale=0.25)
    node = reference_lib.node_reference(PLUGIN_VERSION, qkv, rel_bias, qkv_bias, **attributes)
    assert np.array_equal(node, reference_lib.reference(qkv, rel_bias, qkv_bias, **attributes))
    with pytest.raises(SwinAttentionError, match="qkv has 130 tokens but height\\*width = 11\\*13"):
        reference_lib.node_reference(PLUGIN_VERSION, qkv, rel_bias, qkv_bias, **(attributes | dict(height=11)))


def _undefined_symbols(path) -> str:
    return subprocess.run(["nm", "-D", "--undefined-only", str(path)], capture_output=True, text=True,
                          check=True).stdout


def _exported_functions(path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()[1:2] == ["T"]}


def test_plugin_library_links_no_tensorrt(native_libs: NativeLibs):
    assert native_libs.plugin is not None, "CMake found no TensorRT headers; the kernel-lens fallback should apply"
    undefined = _undefined_symbols(native_libs.plugin)
    offending = [line for line in undefined.splitlines()
                 if any(word in line.lower() for word in ("nvinfer", "tensorrt", "getpluginregistry", "getlogger"))]
    assert not offending, f"the plugin must not depend on TensorRT at link time: {offending}"
    assert _exported_functions(native_libs.plugin) == {"getCreators", "setLoggerFinder"}
    needed = subprocess.run(["readelf", "-d", str(native_libs.plugin)], capture_output=True, text=True,
                            check=True).stdout
    assert "nvinfer" not in needed and "libcudart" not in needed  # CUDA runtime is linked statically


def test_host_reference_library_needs_no_cuda(native_libs: NativeLibs):
    needed = subprocess.run(["readelf", "-d", str(native_libs.reference)], capture_output=True, text=True,
                            check=True).stdout
    assert "cuda" not in needed.lower()
    assert _exported_functions(native_libs.reference) == {
        "swin_window_attention_reference", "swin_window_attention_node_reference", "swin_window_attention_check",
        "swin_window_attention_launch_params"}
    assert _exported_functions(native_libs.cuda) == {"swin_window_attention_forward", "swin_window_attention_check",
                                                     "swin_window_attention_launch_params"}
