"""Fixtures and helpers for the SwinWindowAttention plugin tests (registered in conftest.py).

- ``native_libs_for(arch)``: the native libraries for one CUDA arch, built once a session into
  ``build/native-sm<arch>`` (``pipeline.kernels.cmake.arch_build_dir``, the folder the kernel tools build into too, so
  a device run's build step leaves nothing for the GPU tests to build); ``pipeline.kernels.native.SwinAttention`` calls
  their C ABI. ``plugin_library_for(arch)``: its TensorRT plugin library;
- ``triton_images_for(arch)``: the Triton images that build embeds (its ``triton/manifest.json``);
- ``native_libs``: session fixture, ``native_libs_for(TEST_CUDA_ARCH)``, what the CPU tests use;
- ``synthetic_onnx``: a small ONNX graph with SwinWindowAttention nodes per the contract (version 1, [B, H*W, C]);
  ``synthetic_map_onnx``: the same with version-2 nodes on a map input [B, H, W, C] whose H and W are dynamic;
- ``plugin_library``: session fixture, the TensorRT plugin library of ``native_libs`` (fails the test if
  CMake found no TensorRT headers). Engines are built with ``pipeline.tensorrt.build.build_engine``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from pipeline.kernels.cmake import NativeLibs, arch_build_dir, build_native
from pipeline.kernels.reference import MAP_VERSION, PLUGIN_DOMAIN, PLUGIN_OP, PLUGIN_VERSION, node_attributes

#: One architecture keeps the CI build short (2 cores); SM86 is also what the TensorRT-RTX tests target.
TEST_CUDA_ARCH = "86"


@functools.cache
def native_libs_for(cuda_arch: str) -> NativeLibs:
    """The native libraries compiled for ``cuda_arch`` only; a failed build fails the test that asked."""
    try:
        return build_native(arch_build_dir(cuda_arch), cuda_arch=cuda_arch)
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


def plugin_library_for(cuda_arch: str) -> Path:
    plugin = native_libs_for(cuda_arch).plugin
    assert plugin is not None, "CMake found no TensorRT headers, so no plugin library was built"
    return plugin


def triton_images_for(cuda_arch: str) -> dict[str, dict]:
    """The Triton images built into :func:`native_libs_for` ``(cuda_arch)``: file path -> its manifest entry."""
    folder = native_libs_for(cuda_arch).cuda.parent / "triton"
    manifest = json.loads((folder / "manifest.json").read_text())
    return {str(folder / "images" / entry["file"]): entry for entry in manifest}


@pytest.fixture(scope="session")
def native_libs() -> NativeLibs:
    return native_libs_for(TEST_CUDA_ARCH)


@pytest.fixture(scope="session")
def plugin_library() -> Path:
    return plugin_library_for(TEST_CUDA_ARCH)


# ---------------------------------------------------------------------------------------------------------
# Synthetic ONNX with SwinWindowAttention nodes


def swin_node(inputs: list[str], output: str, name: str, version: str = PLUGIN_VERSION,
              **attributes) -> onnx.NodeProto:
    """A SwinWindowAttention node of contract ``version`` (``node_attributes``: exactly that version's attributes)."""
    return helper.make_node(PLUGIN_OP, inputs, [output], name=name, domain=PLUGIN_DOMAIN,
                            **node_attributes(version, **attributes))


def synthetic_onnx(path: Path, blocks: list[dict], *, channels: int, height: int, width: int,
                   dtype: type = np.float32, seed: int = 0) -> Path:
    """Input ``tokens`` [B, H·W, C] → per block: MatMul+Add to 3C → SwinWindowAttention → MatMul (proj) → next block.

    ``blocks`` holds each node's window_size, shift_size, num_heads and optionally scale; height and width
    default to the graph's (overriding them makes deliberately inconsistent nodes).
    """
    def attributes(block: dict) -> dict:
        return {"height": block.get("height", height), "width": block.get("width", width)}

    return _synthetic_graph(path, blocks, "tokens", ["batch", height * width, channels], PLUGIN_VERSION, attributes,
                            channels=channels, dtype=dtype, seed=seed)


def synthetic_map_onnx(path: Path, blocks: list[dict], *, channels: int, dtype: type = np.float32,
                       seed: int = 0) -> Path:
    """Input ``maps`` [B, H, W, C] with B, H and W dynamic → per block: MatMul+Add to 3C → a version-2
    SwinWindowAttention (qkv [B, H, W, 3C], H and W from the tensor) → MatMul (proj) → next block.

    ``blocks`` holds each node's window_size, shift_size, num_heads and optionally scale.
    """
    return _synthetic_graph(path, blocks, "maps", ["batch", "height", "width", channels], MAP_VERSION,
                            lambda block: {}, channels=channels, dtype=dtype, seed=seed)


def _synthetic_graph(path: Path, blocks: list[dict], input_name: str, shape: list, version: str,
                     size_attributes, *, channels: int, dtype: type, seed: int) -> Path:
    """The blocks of :func:`synthetic_onnx` over an input of ``shape``, nodes of contract ``version`` (with
    ``size_attributes(block)`` besides window_size, shift_size, num_heads and scale)."""
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    initializers, nodes = [], []
    current = input_name
    for b, block in enumerate(blocks):
        heads, n = block["num_heads"], block["window_size"] ** 2
        weights = {
            f"qkv_w{b}": rng.normal(0, channels ** -0.5, (channels, 3 * channels)),
            f"qkv_b{b}": rng.normal(0, 0.1, (3 * channels,)),
            f"rel_bias{b}": rng.normal(0, 0.5, (heads, n, n)),
            f"proj_w{b}": rng.normal(0, channels ** -0.5, (channels, channels)),
        }
        initializers += [numpy_helper.from_array(w.astype(dtype), name) for name, w in weights.items()]
        attributes = {"window_size": block["window_size"], "shift_size": block["shift_size"], "num_heads": heads,
                      "scale": float(block.get("scale", (channels // heads) ** -0.5)), **size_attributes(block)}
        nodes += [
            helper.make_node("MatMul", [current, f"qkv_w{b}"], [f"qkv_mm{b}"], name=f"qkv_matmul{b}"),
            helper.make_node("Add", [f"qkv_mm{b}", f"qkv_b{b}"], [f"qkv{b}"], name=f"qkv_add{b}"),
            swin_node([f"qkv{b}", f"rel_bias{b}", f"qkv_b{b}"], f"attn{b}", f"swin_attention{b}", version,
                      **attributes),
            helper.make_node("MatMul", [f"attn{b}", f"proj_w{b}"], [f"proj{b}"], name=f"proj_matmul{b}"),
        ]
        current = f"proj{b}"
    graph = helper.make_graph(nodes, f"swin_window_attention_synthetic_v{version}",
                              [helper.make_tensor_value_info(input_name, elem, shape)],
                              [helper.make_tensor_value_info(current, elem, shape)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(PLUGIN_DOMAIN, 1)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
