"""ctypes binding of the kernel's C ABI (``plugins/swin_window_attention/swin_window_attention.h``).

``SwinAttention`` loads one of the C ABI libraries that ``pipeline.kernels.cmake.build_native`` builds: the host
reference (``check``, ``launch_params``, ``reference``, ``node_reference``) or the CUDA one (``check``,
``launch_params``, ``forward``). ``SwinAttnParams`` mirrors the C struct from the node contract's ``ABI_PARAMS``,
``SwinAttnAttributes`` from its ``ATTRIBUTES``.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from pipeline.kernels.node_contract import ABI_PARAMS, ATTRIBUTE_TYPES, ATTRIBUTES, DTYPES

SWIN_ATTN_FLOAT32 = DTYPES["float32"]
SWIN_ATTN_FLOAT16 = DTYPES["float16"]
_CTYPES = {"int32": ctypes.c_int32, "float32": ctypes.c_float}


class SwinAttnParams(ctypes.Structure):
    """The C struct field for field (the contract's c_abi_params, which the C header static_asserts)."""

    _fields_ = [(name, _CTYPES[kind]) for name, kind in ABI_PARAMS]


class SwinAttnAttributes(ctypes.Structure):
    """The C struct: version 1's attributes in order (the generated header static_asserts it)."""

    _fields_ = [(name, _CTYPES[ATTRIBUTE_TYPES[name]]) for name in ATTRIBUTES]


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
        node = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int64), ctypes.c_int32, ctypes.POINTER(SwinAttnAttributes)]
        self.lib.swin_window_attention_launch_params.argtypes = [*node, ctypes.POINTER(SwinAttnParams),
                                                                 ctypes.c_char_p, ctypes.c_size_t]
        if hasattr(self.lib, "swin_window_attention_node_reference"):
            self.lib.swin_window_attention_node_reference.argtypes = [*node, *[ctypes.c_void_p] * 4, ctypes.c_char_p,
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

    @staticmethod
    def _node(version: str, qkv_shape: tuple[int, ...], attributes: dict[str, float]) -> list:
        """The C ABI's first four arguments for a node: version, qkv dims, their count, the attributes (version 2's
        lack height and width: 0 there, which the C side ignores)."""
        dims = (ctypes.c_int64 * len(qkv_shape))(*qkv_shape)
        return [version.encode(), dims, len(qkv_shape), ctypes.byref(SwinAttnAttributes(**attributes))]

    def launch_params(self, version: str, qkv_shape: tuple[int, ...], **attributes: float) -> SwinAttnParams:
        """The C++ ``launchParams`` (what the plugin's enqueue runs a node with); keyword arguments as
        ``kernels.reference.launch_params``'s."""
        params = SwinAttnParams()
        error = ctypes.create_string_buffer(512)
        status = self.lib.swin_window_attention_launch_params(*self._node(version, qkv_shape, attributes),
                                                              ctypes.byref(params), error, len(error))
        self._raise(status, error)
        return params

    def node_reference(self, version: str, qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray,
                       **attributes: float) -> np.ndarray:
        """Host float32 reference of a node of contract ``version``: out has qkv's shape with C for 3C."""
        qkv, rel_bias, qkv_bias = (np.ascontiguousarray(a, dtype=np.float32) for a in (qkv, rel_bias, qkv_bias))
        out = np.full((*qkv.shape[:-1], qkv.shape[-1] // 3), np.nan, dtype=np.float32)
        error = ctypes.create_string_buffer(512)
        status = self.lib.swin_window_attention_node_reference(
            *self._node(version, qkv.shape, attributes), qkv.ctypes.data, rel_bias.ctypes.data, qkv_bias.ctypes.data,
            out.ctypes.data, error, len(error))
        self._raise(status, error)
        return out

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

    def node_forward(self, version: str, qkv, rel_bias, qkv_bias, out, stream: int = 0, **attributes: float) -> None:
        """CUDA kernel for a node of contract ``version`` at the C++ launchParams of ``qkv``'s shape, as the plugin's
        enqueue runs it; ``out`` has qkv's shape with C for 3C. Tensors as :meth:`forward`'s."""
        import torch

        dtype = {torch.float32: SWIN_ATTN_FLOAT32, torch.float16: SWIN_ATTN_FLOAT16}[qkv.dtype]
        params = self.launch_params(version, tuple(qkv.shape), **attributes)
        error = ctypes.create_string_buffer(512)
        status = self.lib.swin_window_attention_forward(
            ctypes.byref(params), dtype, qkv.data_ptr(), rel_bias.data_ptr(), qkv_bias.data_ptr(), out.data_ptr(),
            stream, error, len(error))
        self._raise(status, error)

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
