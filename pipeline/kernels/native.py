"""The native libraries from Python: build them with CMake, and call the C ABI of the kernel and the host reference.

- ``configure_native``, ``build_native``: configure (and build) the CMake project (plugin, CUDA C ABI, host
  reference);
- ``device_code``: the CUDA architectures compiled into a built library (``cuobjdump``);
- ``kernel_resources``: each kernel's registers, shared, local and stack bytes per architecture (``cuobjdump``);
- ``SwinAttention``: ctypes binding of ``plugins/swin_window_attention/swin_window_attention.h``.

Tests, the kernel benchmark and users checking a kernel on their GPU share these.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.kernels.node_contract import ABI_PARAMS, DTYPES
from pipeline.kernels.selection import KernelConfig

ROOT = Path(__file__).resolve().parents[2]


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
                     build_type: str = "Release", source: Path = ROOT) -> None:
    """Configure the CMake project in ``source`` (this checkout's, or another revision's: the kernel benchmark's
    baseline) into ``build_dir``; raise RuntimeError with CMake's output on failure.

    ``cuda_arch`` None keeps the folder's architectures: the project's default (what ``make plugin`` builds)
    unless an earlier configure chose some.
    """
    cmake, nvcc = _tools()
    command = [cmake, "-S", str(source), "-B", str(build_dir), f"-DCMAKE_BUILD_TYPE={build_type}",
               f"-DCMAKE_CUDA_COMPILER={nvcc}", f"-DSWIN_PYTHON={sys.executable}"]
    if cuda_arch:
        command.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_arch}")
    _run(command)


def arch_build_dir(cuda_arch: str) -> Path:
    """``build/native-sm<arch>``: the build for one architecture that the kernel tools share (the resource report,
    the kernel benchmark, the device run's fused model), so that each after the first finds it built."""
    return ROOT / "build" / f"native-sm{cuda_arch}"


def build_native(build_dir: Path = ROOT / "build" / "plugin", cuda_arch: str | None = None,
                 build_type: str = "Release", source: Path = ROOT) -> NativeLibs:
    """Configure (``configure_native``) and build the CMake project; raise RuntimeError on failure."""
    configure_native(build_dir, cuda_arch, build_type, source)
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


def _cuobjdump(option: str, library: Path) -> str:
    """cuobjdump's output for ``option`` on ``library``; "" when the library holds no device code."""
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found; install the test extra (pip install -e '.[test]') or the CUDA toolkit")
    result = subprocess.run([str(cuobjdump), option, str(library)], capture_output=True, text=True, check=False)
    if "does not contain device code" in result.stderr:
        return ""
    if result.returncode != 0:
        raise RuntimeError(f"cuobjdump {option} {library} failed: {' '.join(result.stderr.split())}")
    return result.stdout


def device_code(library: Path, kind: Literal["elf", "ptx"] = "elf") -> list[str]:
    """The architectures of a library's SASS (``elf``) or PTX, in cuobjdump's order: ``["sm_75", "sm_86"]``."""
    # Lines read "ELF file    1: libname.1.sm_86.cubin" (PTX: "... .sm_86.ptx").
    return re.findall(r"\.(sm_\w+)\.(?:cubin|ptx)$", _cuobjdump(f"--list-{kind}", library), flags=re.MULTILINE)


@dataclass(frozen=True)
class KernelResources:
    """What ptxas allotted one function of one architecture's SASS (``cuobjdump --dump-resource-usage``)."""

    arch: str  #: "sm_86"
    function: str  #: mangled
    name: str  #: readable: "windowAttentionHalfKernel<4>"
    registers: int  #: per thread
    shared_bytes: int  #: static shared memory per block
    local_bytes: int  #: per thread; > 0 means register spills (or local arrays), slow
    stack_bytes: int  #: per thread call stack frame
    constant_bytes: int  #: all constant banks (bank 0 holds the kernel parameters)
    threads: int | None = None  #: per block, where the image fixes it (Triton); the CUDA kernels choose at launch
    dynamic_shared_bytes: int = 0  #: per block at launch, where the image fixes it (Triton)


def kernel_resources(library: Path) -> list[KernelResources]:
    """Every function of every architecture of a library's SASS, in cuobjdump's order ([] without device code)."""
    return parse_resource_usage(_cuobjdump("--dump-resource-usage", library))


def triton_image_resources(build_dir: Path) -> list[KernelResources]:
    """The Triton cubins ``make plugin`` compiled into ``build_dir`` (its ``triton/manifest.json``), each named by
    dtype, window and config, with the block size and dynamic shared memory it launches with ([] without triton)."""
    manifest = build_dir / "triton" / "manifest.json"
    if not manifest.is_file():
        return []
    kernels = []
    for entry in json.loads(manifest.read_text()):
        spec = entry["spec"]
        if spec["ptx"]:
            continue
        found = parse_resource_usage(_cuobjdump("--dump-resource-usage", build_dir / "triton" / "images" /
                                                entry["file"]))
        name = f"triton {spec['dtype']} w{spec['window']} {KernelConfig(**spec['config']).name}"
        kernels += [dataclasses.replace(k, arch=f"sm_{spec['arch']}", name=name, threads=32 * entry["num_warps"],
                                        dynamic_shared_bytes=entry["shared_bytes"]) for k in found]
    return kernels


def parse_resource_usage(text: str) -> list[KernelResources]:
    """Parse ``cuobjdump --dump-resource-usage``: an "arch = sm_XX" line opens each architecture's section, then
    " Function <mangled>:" followed by a line of "KEY:value" pairs (REG, STACK, SHARED, LOCAL, CONSTANT[n], ...)."""
    kernels, arch = [], ""
    for match in re.finditer(r"^arch = (\S+)$|^\s*Function (\S+):\s*\n(.*)$", text, flags=re.MULTILINE):
        if match.group(1):
            arch = match.group(1)
            continue
        function, line = match.group(2), match.group(3)
        usage = {key: int(value) for key, value in re.findall(r"([A-Z]+(?:\[\d+\])?):(\d+)", line)}
        if missing := {"REG", "SHARED", "LOCAL", "STACK"} - usage.keys():
            raise RuntimeError(f"cuobjdump's resource usage of {function} lacks {sorted(missing)}: {line.strip()!r}")
        kernels.append(KernelResources(
            arch=arch, function=function, name=readable_name(function), registers=usage["REG"],
            shared_bytes=usage["SHARED"], local_bytes=usage["LOCAL"], stack_bytes=usage["STACK"],
            constant_bytes=sum(value for key, value in usage.items() if key.startswith("CONSTANT"))))
    return kernels


#: Itanium codes of the builtin types a template argument may name.
_BUILTIN_TYPES = {"b": "bool", "c": "char", "a": "signed char", "h": "unsigned char", "s": "short",
                  "t": "unsigned short", "i": "int", "j": "unsigned", "l": "long", "m": "unsigned long",
                  "x": "long long", "y": "unsigned long long", "f": "float", "d": "double"}


def readable_name(mangled: str) -> str:
    """A kernel's identifier and its template arguments where they are integers, builtin or plainly named types
    (``windowAttentionHalfKernel<4>``, ``kernel<__half, 2>``), ``<...>`` for other arguments; the name as is when it
    is not Itanium-mangled (extern "C"). Parsed here because c++filt is not always installed."""
    prefix = re.match(r"_Z(N?)L?", mangled)  # L: internal linkage (a static function)
    if prefix is None:
        return mangled
    rest, identifier = mangled[prefix.end():], None
    # <length><identifier> components: namespaces, then the function; an unnested name has one, then its parameters.
    while (component := re.match(r"\d+", rest)) and (identifier is None or prefix.group(1)):
        length, start = int(component.group()), component.end()
        identifier, rest = rest[start:start + length], rest[start + length:]
    if identifier is None:
        return mangled
    if not rest.startswith("I"):
        return identifier
    arguments, rest = [], rest[1:]
    while rest and not rest.startswith("E"):
        argument, rest = _template_argument(rest)
        if argument is None:
            return f"{identifier}<...>"
        arguments.append(argument)
    return f"{identifier}<{', '.join(arguments)}>"


def _template_argument(text: str) -> tuple[str | None, str]:
    """The first template argument of ``text`` readable, and the text after it; None when it is not a simple one."""
    if literal := re.match(r"L[a-z](n?)(\d+)E", text):  # an integer: Li4E, Lin1E (-1), Lj2E (2u), Lb1E (true)
        return ("-" if literal.group(1) else "") + literal.group(2), text[literal.end():]
    if text[0] in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[text[0]], text[1:]
    if named := re.match(r"\d+", text):  # a class named at namespace scope: 6__half
        length, start = int(named.group()), named.end()
        return text[start:start + length], text[start + length:]
    return None, text


# ---------------------------------------------------------------------------------------------------------
# C ABI (plugins/swin_window_attention/swin_window_attention.h)

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
