"""Shared helpers and fixtures for the SwinWindowAttention plugin tests and the kernel benchmark.

- ``build_native``: configure and build the CMake project (plugin, CUDA C ABI, host reference);
- ``native_libs``: session fixture building it once into ``build/test-plugin`` for one CUDA arch;
- ``SwinAttention``: ctypes binding of the C ABI (host reference and CUDA forward);
- ``synthetic_onnx``: a small ONNX graph with SwinWindowAttention nodes per the contract;
- ``plugin_library``: session fixture, the TensorRT plugin library of ``native_libs`` (fails the test if
  CMake found no TensorRT headers). Engines are built with ``pipeline.build.build_engine``.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from pipeline.reference import ATTRIBUTES, PLUGIN_DOMAIN, PLUGIN_OP, PLUGIN_VERSION

ROOT = Path(__file__).resolve().parents[1]
TEST_BUILD_DIR = ROOT / "build" / "test-plugin"
#: One architecture keeps the CI build short (2 cores); SM86 is also what the TensorRT-RTX tests target.
TEST_CUDA_ARCH = "86"


@dataclass(frozen=True)
class NativeLibs:
    reference: Path
    cuda: Path
    plugin: Path | None  # None when CMake found no TensorRT headers


def find_nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def build_native(build_dir: Path = TEST_BUILD_DIR, cuda_arch: str | None = TEST_CUDA_ARCH,
                 build_type: str = "Release") -> NativeLibs:
    """Configure and build the CMake project; raise RuntimeError with CMake's output on failure."""
    cmake = shutil.which("cmake")
    nvcc = find_nvcc()
    if cmake is None or nvcc is None:
        raise RuntimeError(f"building the plugin needs cmake and nvcc on PATH (cmake={cmake}, nvcc={nvcc}); "
                           "install CMake >= 3.18 and the CUDA toolkit, or set CUDACXX to nvcc")
    configure = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
                 f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DSWIN_PYTHON={sys.executable}"]
    if cuda_arch:
        configure.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    for command in (configure, [cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)]):
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    plugin = build_dir / "libswin_window_attention_plugin.so"
    return NativeLibs(reference=build_dir / "libswin_window_attention_reference.so",
                      cuda=build_dir / "libswin_window_attention_cuda.so",
                      plugin=plugin if plugin.exists() else None)


@pytest.fixture(scope="session")
def native_libs() -> NativeLibs:
    try:
        return build_native()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def plugin_library(native_libs: NativeLibs) -> Path:
    assert native_libs.plugin is not None, "CMake found no TensorRT headers, so no plugin library was built"
    return native_libs.plugin


# ---------------------------------------------------------------------------------------------------------
# C ABI (plugins/swin_window_attention/swin_window_attention.h)

SWIN_ATTN_FLOAT32 = 0
SWIN_ATTN_FLOAT16 = 1


class SwinAttnParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int32) for name in
                ("batch", "height", "width", "channels", "num_heads", "window_size", "shift_size")]
    _fields_ += [("scale", ctypes.c_float)]


class SwinAttentionError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"status {status}: {message}")
        self.status = status
        self.message = message


class SwinAttention:
    """ctypes binding of one of the C ABI libraries (the reference library has no forward, the CUDA one has)."""

    def __init__(self, path: Path) -> None:
        self.lib = ctypes.CDLL(str(path))
        self.lib.swin_window_attention_check.argtypes = [ctypes.POINTER(SwinAttnParams), ctypes.c_char_p,
                                                         ctypes.c_size_t]
        if hasattr(self.lib, "swin_window_attention_reference"):
            self.lib.swin_window_attention_reference.argtypes = [
                ctypes.POINTER(SwinAttnParams), *[ctypes.c_void_p] * 4, ctypes.c_char_p, ctypes.c_size_t]
        if hasattr(self.lib, "swin_window_attention_forward"):
            self.lib.swin_window_attention_forward.argtypes = [
                ctypes.POINTER(SwinAttnParams), ctypes.c_int, *[ctypes.c_void_p] * 5, ctypes.c_char_p,
                ctypes.c_size_t]

    @staticmethod
    def params(batch: int, channels: int, *, height: int, width: int, window_size: int, shift_size: int,
               num_heads: int, scale: float) -> SwinAttnParams:
        return SwinAttnParams(batch, height, width, channels, num_heads, window_size, shift_size, scale)

    @staticmethod
    def _raise(status: int, error: ctypes.Array) -> None:
        if status != 0:
            raise SwinAttentionError(status, error.value.decode())

    def check(self, params: SwinAttnParams) -> None:
        error = ctypes.create_string_buffer(512)
        self._raise(self.lib.swin_window_attention_check(ctypes.byref(params), error, len(error)), error)

    def reference(self, qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, **attributes) -> np.ndarray:
        """Host float32 reference; same keyword attributes as ``pipeline.reference.window_attention_reference``."""
        qkv, rel_bias, qkv_bias = (np.ascontiguousarray(a, dtype=np.float32) for a in (qkv, rel_bias, qkv_bias))
        batch, tokens, three_c = qkv.shape
        out = np.full((batch, tokens, three_c // 3), np.nan, dtype=np.float32)
        error = ctypes.create_string_buffer(512)
        params = self.params(batch, three_c // 3, **attributes)
        status = self.lib.swin_window_attention_reference(
            ctypes.byref(params), qkv.ctypes.data, rel_bias.ctypes.data, qkv_bias.ctypes.data, out.ctypes.data,
            error, len(error))
        self._raise(status, error)
        return out

    def forward(self, qkv, rel_bias, qkv_bias, out, stream: int = 0, **attributes) -> None:
        """CUDA kernel on torch CUDA tensors (float32 or float16, contiguous); asynchronous on ``stream``."""
        import torch

        dtype = {torch.float32: SWIN_ATTN_FLOAT32, torch.float16: SWIN_ATTN_FLOAT16}[qkv.dtype]
        batch, _, three_c = qkv.shape
        params = self.params(batch, three_c // 3, **attributes)
        error = ctypes.create_string_buffer(512)
        status = self.lib.swin_window_attention_forward(
            ctypes.byref(params), dtype, qkv.data_ptr(), rel_bias.data_ptr(), qkv_bias.data_ptr(), out.data_ptr(),
            stream, error, len(error))
        self._raise(status, error)


# ---------------------------------------------------------------------------------------------------------
# Synthetic ONNX with SwinWindowAttention nodes


def swin_node(inputs: list[str], output: str, name: str, **attributes) -> onnx.NodeProto:
    """A SwinWindowAttention node as the contract defines it (attributes in ``ATTRIBUTES``)."""
    missing = set(ATTRIBUTES) - set(attributes)
    if missing:
        raise ValueError(f"missing attributes {sorted(missing)}")
    return helper.make_node(PLUGIN_OP, inputs, [output], name=name, domain=PLUGIN_DOMAIN,
                            plugin_version=PLUGIN_VERSION, plugin_namespace="", **attributes)


def synthetic_onnx(path: Path, blocks: list[dict], *, channels: int, height: int, width: int,
                   dtype: type = np.float32, seed: int = 0) -> Path:
    """Input [B, H·W, C] → per block: MatMul+Add to 3C → SwinWindowAttention → MatMul (proj) → next block.

    ``blocks`` holds each node's window_size, shift_size, num_heads and optionally scale; height and width
    default to the graph's (overriding them makes deliberately inconsistent nodes).
    """
    rng = np.random.default_rng(seed)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    initializers, nodes = [], []
    current = "tokens"
    for b, block in enumerate(blocks):
        heads, window = block["num_heads"], block["window_size"]
        n = window * window
        weights = {
            f"qkv_w{b}": rng.normal(0, channels ** -0.5, (channels, 3 * channels)),
            f"qkv_b{b}": rng.normal(0, 0.1, (3 * channels,)),
            f"rel_bias{b}": rng.normal(0, 0.5, (heads, n, n)),
            f"proj_w{b}": rng.normal(0, channels ** -0.5, (channels, channels)),
        }
        initializers += [numpy_helper.from_array(w.astype(dtype), name) for name, w in weights.items()]
        attributes = {
            "height": block.get("height", height), "width": block.get("width", width), "window_size": window,
            "shift_size": block["shift_size"], "num_heads": heads,
            "scale": float(block.get("scale", (channels // heads) ** -0.5)),
        }
        nodes += [
            helper.make_node("MatMul", [current, f"qkv_w{b}"], [f"qkv_mm{b}"], name=f"qkv_matmul{b}"),
            helper.make_node("Add", [f"qkv_mm{b}", f"qkv_b{b}"], [f"qkv{b}"], name=f"qkv_add{b}"),
            swin_node([f"qkv{b}", f"rel_bias{b}", f"qkv_b{b}"], f"attn{b}", f"swin_attention{b}", **attributes),
            helper.make_node("MatMul", [f"attn{b}", f"proj_w{b}"], [f"proj{b}"], name=f"proj_matmul{b}"),
        ]
        current = f"proj{b}"
    graph = helper.make_graph(
        nodes, "swin_window_attention_synthetic",
        [helper.make_tensor_value_info("tokens", elem, ["batch", height * width, channels])],
        [helper.make_tensor_value_info(current, elem, ["batch", height * width, channels])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(PLUGIN_DOMAIN, 1)])
    model.ir_version = 8
    onnx.save(model, path)
    return path
