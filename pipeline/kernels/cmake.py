"""Build the native libraries (plugin, CUDA C ABI, host reference) with CMake from Python.

``configure_native`` and ``build_native`` configure (and build) the project's CMake build; ``arch_build_dir`` is the
one-architecture build folder the kernel tools and the GPU tests share. Tests, the kernel benchmark and users
checking a kernel on their GPU build through these.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

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
