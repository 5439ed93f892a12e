"""ctypes binding of the kernel's C ABI (``plugins/swin_window_attention/swin_window_attention.h``).

``SwinAttention`` loads one of the C ABI libraries that ``pipeline.kernels.cmake.build_native`` builds: the host
reference (``check``, ``reference``) or the CUDA one (``check``, ``forward``). ``SwinAttnParams`` mirrors the C
struct from the node contract's ``ABI_PARAMS``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from pipeline.kernels.node_contract import ABI_PARAMS, DTYPES

SWIN_ATTN_FLOAT32 = DTYPES["float32"]
SWIN_ATTN_FLOAT16 = DTYPES["float16"]
_CTYPES = {"int32": ctypes.c_int32, "float32": ctypes.c_float}


class SwinAttnParams(ctypes.Structure):
    """The C struct field for field (the contract's c_abi_params, which the C header static_asserts)."""

    _fields_ = [(name, _CTYPES[kind]) for name, kind in ABI_PARAMS]


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
        return SwinAttnParams(batch=batch, channels=channels, height=height, width=width, window_size=window_size,
                              shift_size=shift_size, num_heads=num_heads, scale=scale)

    @staticmethod
    def _raise(status: int, error: ctypes.Array) -> None:
        if status != 0:
            raise SwinAttentionError(status, error.value.decode())

    def check(self, params: SwinAttnParams) -> None:
        error = ctypes.create_string_buffer(512)
        self._raise(self.lib.swin_window_attention_check(ctypes.byref(params), error, len(error)), error)

    def reference(self, qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, **attributes) -> np.ndarray:
        """Host float32 reference; the keyword attributes of ``kernels.reference.window_attention_reference``."""
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
