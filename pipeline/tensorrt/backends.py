"""What building and loading an engine both need: the two backends (TensorRT builds for this machine's GPU,
TensorRT-RTX ahead of time for a chosen compute capability), which one a build uses (:func:`select_backend`), the
GPU here, the runtimes installed, and the bindings Polygraphy's loaders use in this process (docs/design.md §4b).
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.util
import logging
import platform
import sys
from typing import Any

from pipeline.common.errors import PipelineError
from pipeline.tensorrt.metadata import Runtime

log = logging.getLogger(__name__)

#: Compute capabilities TensorRT-RTX 1.7 builds for ahead of time (docs/design.md §5).
RTX_TARGETS = (75, 80, 86, 89, 120, 121)
MAKE_PLUGIN_HINT = "build it with `make plugin` (it writes build/plugin/libswin_window_attention_plugin.so)"
#: What TensorRT-RTX reports when it probes for a GPU during an ahead-of-time build on a machine without one.
NO_GPU_MESSAGES = ("CUDA driver version is insufficient", "no CUDA-capable device")


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str  #: recorded in the metadata: "tensorrt" or "tensorrt_rtx"
    module: str  #: the Python bindings
    #: The module name Polygraphy imports for this backend (``POLYGRAPHY_USE_TENSORRT_RTX`` picks which).
    polygraphy_module: str
    #: True: builds for ``sm`` without a GPU; False: builds for this machine's GPU (and needs one).
    ahead_of_time: bool
    #: TensorRT-RTX ignores timing caches (its set/get are no-ops since 1.2, and loading one warns "Failed to
    #: deserialize timing cache"): its builds neither read nor write the file.
    uses_timing_cache: bool
    #: A library the ONNX parser dlopens by this unversioned name, shipped only as ``<name>.1``.
    unversioned_library: str | None

    def bindings(self) -> Any:
        return importlib.import_module(self.module)

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


TENSORRT = Backend("tensorrt", "tensorrt", "tensorrt", ahead_of_time=False, uses_timing_cache=True,
                   unversioned_library=None)
TENSORRT_RTX = Backend("tensorrt_rtx", "tensorrt_rtx_bindings", "tensorrt_rtx", ahead_of_time=True,
                       uses_timing_cache=False, unversioned_library="libtensorrt_rtx.so")
BACKENDS = {"tensorrt": TENSORRT, "rtx": TENSORRT_RTX, "tensorrt_rtx": TENSORRT_RTX}
#: Set in the build child's environment: Polygraphy reads it once, when it is first imported.
POLYGRAPHY_RTX_VARIABLE = "POLYGRAPHY_USE_TENSORRT_RTX"


@dataclasses.dataclass(frozen=True)
class CudaDevice:
    name: str
    sm: int  #: compute capability as major*10 + minor, e.g. 86


def cuda_device() -> CudaDevice | None:
    """The first visible CUDA device through the driver API (no torch import), or None without one."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count, major, minor = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGetName(name, len(name), 0)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, 0)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, 0)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    return CudaDevice(name.value.decode(), major.value * 10 + minor.value)


#: GPUs TensorRT-RTX cannot build for, by compute capability: their engines are built on the device with TensorRT.
_TENSORRT_ONLY_GPUS = {72: "Jetson Xavier", 87: "Jetson Orin", 90: "Hopper (H100/H200)",
                       100: "Blackwell (B200/GB200)", 103: "Blackwell Ultra (B300)", 110: "Jetson Thor"}


_JETSON_SMS = (72, 87, 110)


def _install_tensorrt_hint(sm: int) -> str:
    if platform.machine() == "aarch64" or sm in _JETSON_SMS:  # Jetson: TensorRT comes with JetPack, not from pip
        return ("on the Jetson, TensorRT comes with JetPack (sudo apt install nvidia-jetpack); recreate the venv "
                "there so it sees the system package (rm -rf .venv) and run make engine BACKEND=tensorrt")
    return ("install TensorRT 10/11 on the GPU machine (pip install tensorrt, or an NGC TensorRT container) and run "
            "make engine BACKEND=tensorrt there")


def select_backend(choice: str = "auto", sm: int = 86) -> Backend:
    """``tensorrt`` when installed and a GPU is present, else TensorRT-RTX ahead of time for ``sm``.

    Cheap (no build, no import of the bindings): run it before any stage, so an impossible target fails at once.
    ``auto`` on a machine whose GPU is not ``sm`` and that lacks TensorRT is refused: it would quietly build an
    engine for another card, which that machine's user most likely meant to run there.
    """
    if choice not in ("auto", "tensorrt", "rtx"):
        raise PipelineError(f"unknown backend {choice!r}: expected auto, tensorrt or rtx")
    device = cuda_device()
    if choice in ("auto", "tensorrt") and TENSORRT.is_installed() and device is not None:
        return TENSORRT
    if choice == "auto" and device is not None and device.sm != sm:
        raise PipelineError(f"this machine has {device.name} (SM{device.sm}) but no TensorRT, so the engine would be "
                            f"built for SM{sm} ahead of time and could not run here: "
                            f"{_install_tensorrt_hint(device.sm)}; or, to build for another card on purpose, choose "
                            "it: --backend rtx --sm <its compute capability> (make: BACKEND=rtx SM=...)")
    if choice == "tensorrt":
        raise PipelineError("backend 'tensorrt' needs the tensorrt Python package and a CUDA GPU on this machine: "
                            f"{_install_tensorrt_hint(sm)}; or build ahead of time for an RTX card with --backend rtx")
    if not TENSORRT_RTX.is_installed():
        raise PipelineError(f"no TensorRT found: {_install_tensorrt_hint(sm)}; or install TensorRT-RTX "
                            "(x86_64: pip install -e '.[rtx]') to build ahead of time without a GPU")
    if sm not in RTX_TARGETS:
        gpu = _TENSORRT_ONLY_GPUS.get(sm, f"SM{sm}")
        raise PipelineError(f"TensorRT-RTX builds ahead of time only for SM{', SM'.join(map(str, RTX_TARGETS))}; "
                            f"an engine for {gpu} is built on that GPU with TensorRT: {_install_tensorrt_hint(sm)}")
    if choice == "auto":
        log.info("build: no TensorRT with a CUDA GPU here; building ahead of time with TensorRT-RTX for SM%d", sm)
    return TENSORRT_RTX


def polygraphy_bindings(backend: Backend) -> Any:
    """``backend``'s bindings, checked to be the ones Polygraphy's TensorRT loaders use in this process.

    Polygraphy imports ``tensorrt``, or ``tensorrt_rtx`` when ``POLYGRAPHY_USE_TENSORRT_RTX=1`` was set before it
    was first imported. The TensorRT-RTX wheel names its module ``tensorrt_rtx_bindings``, so it is registered under
    the name Polygraphy imports (its lazy import takes a module already in ``sys.modules``).
    """
    bindings = backend.bindings()
    sys.modules.setdefault(backend.polygraphy_module, bindings)
    from polygraphy import config

    if config.USE_TENSORRT_RTX != (backend is TENSORRT_RTX):
        wanted = "set" if backend is TENSORRT_RTX else "unset"
        raise PipelineError(f"Polygraphy in this process was loaded for "
                            f"{'TensorRT-RTX' if config.USE_TENSORRT_RTX else 'TensorRT'}, not {backend.name}: "
                            f"{POLYGRAPHY_RTX_VARIABLE} must be {wanted} before Polygraphy is imported "
                            "(pipeline.tensorrt.build.build_engine runs TensorRT-RTX builds in a child process "
                            "that sets it)")
    return bindings


def installed_runtimes() -> list[Runtime]:
    device = cuda_device()
    return [Runtime(backend.name, backend.bindings().__version__, device.sm if device else None,
                    device.name if device else None)
            for backend in (TENSORRT, TENSORRT_RTX) if backend.is_installed()]

