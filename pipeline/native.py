"""The native libraries from Python: build them with CMake, and call the C ABI of the kernel and the host reference.

- ``configure_native``, ``build_native``: configure (and build) the CMake project (plugin, CUDA C ABI, host
  reference);
- ``device_code``: the CUDA architectures compiled into a built library (``cuobjdump``);
- ``SwinAttention``: ctypes binding of ``plugins/swin_window_attention/swin_window_attention.h``.

Tests, the kernel benchmark and users checking a kernel on their GPU share these.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


def _tools() -> tuple[str, str]:
    """cmake and nvcc, or a RuntimeError that says how to get them."""
    cmake = shutil.which("cmake")
    nvcc = find_nvcc()
    if cmake is None or nvcc is None:
        raise RuntimeError(f"building the plugin needs cmake and nvcc on PATH (cmake={cmake}, nvcc={nvcc}); "
                           "install CMake >= 3.18 and the CUDA toolkit, or set CUDACXX to nvcc")
    return cmake, nvcc


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")


def configure_native(build_dir: Path = ROOT / "build" / "plugin", cuda_arch: str | None = None,
                     build_type: str = "Release") -> None:
    """Configure the CMake project into ``build_dir``; raise RuntimeError with CMake's output on failure.

    ``cuda_arch`` None keeps the folder's architectures: the project's default (what ``make plugin`` builds)
    unless an earlier configure chose some.
    """
    cmake, nvcc = _tools()
    command = [cmake, "-S", str(ROOT), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
               f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DSWIN_PYTHON={sys.executable}"]
    if cuda_arch:
        command.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    _run(command)


def build_native(build_dir: Path = ROOT / "build" / "plugin", cuda_arch: str | None = None,
                 build_type: str = "Release") -> NativeLibs:
    """Configure (``configure_native``) and build the CMake project; raise RuntimeError on failure."""
    configure_native(build_dir, cuda_arch, build_type)
    cmake, _ = _tools()
    _run([cmake, "--build", str(build_dir), "-j", str(os.cpu_count() or 2)])
    plugin = build_dir / "libswin_window_attention_plugin.so"
    return NativeLibs(reference=build_dir / "libswin_window_attention_reference.so",
                      cuda=build_dir / "libswin_window_attention_cuda.so",
                      plugin=plugin if plugin.exists() else None)


def find_cuobjdump() -> Path | None:
    """cuobjdump of the pinned ``nvidia-cuda-cuobjdump`` wheel (the ``test`` extra), else the one on PATH."""
    try:
        files = importlib.metadata.files("nvidia-cuda-cuobjdump") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "cuobjdump":
            return Path(str(file.locate()))
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


def device_code(library: Path, kind: Literal["elf", "ptx"] = "elf") -> list[str]:
    """The architectures of a library's SASS (``elf``) or PTX, in cuobjdump's order: ``["sm_75", "sm_86"]``."""
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found; install the test extra (pip install -e '.[test]') or the CUDA toolkit")
    result = subprocess.run([str(cuobjdump), f"--list-{kind}", str(library)], capture_output=True, text=True,
                            check=False)
    if "does not contain device code" in result.stderr:
        return []
    if result.returncode != 0:
        raise RuntimeError(f"cuobjdump --list-{kind} {library} failed: {result.stderr.strip()}")
    # Lines read "ELF file    1: libname.1.sm_86.cubin" (PTX: "... .sm_86.ptx").
    return re.findall(r"\.(sm_\w+)\.(?:cubin|ptx)$", result.stdout, flags=re.MULTILINE)


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
