"""Stage 5: typed ONNX + plugin library → ``<name>.engine`` and ``<name>.json`` beside it (docs/design.md §1, §4, §5).

Two backends build the same strongly typed network:

- ``tensorrt`` (10.x with ``STRONGLY_TYPED``, 11.x where strong typing is always on) builds for this machine's
  GPU, so it needs one;
- ``tensorrt_rtx`` builds ahead of time for a chosen compute capability and needs no GPU. It always builds in a
  child process (``python -m pipeline.tensorrt.build_worker``): Polygraphy picks TensorRT or TensorRT-RTX once per
  process, when it is imported, and the ONNX parser dlopens the unversioned ``libtensorrt_rtx.so``, which the wheel does
  not ship and the loader looks for only at process start, so the child starts with a private folder holding that
  symlink first on its ``LD_LIBRARY_PATH``.

Both run the same code on Polygraphy's TensorRT loaders: ``NetworkFromOnnxPath`` (strongly typed),
``CreateConfig`` or ``CreateConfigRTX`` (profile, optimization level, profiling verbosity, timing cache, progress
monitor, target compute capability), ``PostprocessConfig`` (``plugins_to_serialize``) and
``EngineBytesFromNetwork``. What stays ours:

- the plugin library is loaded with ``IPluginRegistry.load_library``, not ``LoadPlugins``, which only dlopens it:
  that registers the creator with TensorRT 10 only (the library registers itself at load time with that registry),
  not with TensorRT-RTX or TensorRT 11, and gives no reason when the library does not load;
- the engine is written by us, not by ``SaveEngine``, which needs a deserialized engine (so a GPU) and does not
  write atomically; the timing cache goes through file objects for the same reason (with a path, Polygraphy
  overwrites it in place and leaves ``<path>.lock`` beside it);
- TensorRT's and Polygraphy's messages are forwarded to ``logging`` and their errors collected, so a
  ``PolygraphyException`` becomes a PipelineError that carries them; Ctrl-C cancels through our progress monitor.

The metadata JSON (:mod:`pipeline.tensorrt.metadata`) records what the engine was built from and for, so
:func:`check_engine_compatible` can refuse a mismatched engine before deserializing it.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import datetime
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx

from pipeline.common.artifacts import atomic_path, check_writable, file_sha256, write_json
from pipeline.common.attention import graph_attention
from pipeline.common.errors import PipelineError
from pipeline.common.interrupts import interrupts_deferred
from pipeline.common.onnx_io import QDQ_OPS, graph_input, read_onnx
from pipeline.tensorrt.metadata import (
    REBUILD,
    BatchProfile,
    BuiltWith,
    EngineCheck,
    EngineMetadata,
    OnnxSource,
    PluginLibrary,
    Runtime,
    Target,
    TensorSpec,
    TimingCacheUse,
    metadata_path,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH = (1, 8, 32)
#: Compute capabilities TensorRT-RTX 1.7 builds for ahead of time (docs/design.md §5).
RTX_TARGETS = (75, 80, 86, 89, 120, 121)
_MAKE_PLUGIN_HINT = "build it with `make plugin` (it writes build/plugin/libswin_window_attention_plugin.so)"


# ---------------------------------------------------------------------------------------------------------
# Backends: the few places where TensorRT and TensorRT-RTX differ


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
_POLYGRAPHY_RTX_VARIABLE = "POLYGRAPHY_USE_TENSORRT_RTX"


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


def _polygraphy_bindings(backend: Backend) -> Any:
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
                            f"{_POLYGRAPHY_RTX_VARIABLE} must be {wanted} before Polygraphy is imported "
                            "(pipeline.tensorrt.build.build_engine runs TensorRT-RTX builds in a child process "
                            "that sets it)")
    return bindings


# ---------------------------------------------------------------------------------------------------------
# What the ONNX graph says


def graph_precision(model: onnx.ModelProto) -> str:
    """``int8`` with Q/DQ nodes, ``fp16`` with FP16 weights, else ``fp32``: strongly typed, the graph decides."""
    graph = model.graph
    if any(node.op_type in QDQ_OPS for node in graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer):
        return "fp16"
    return "fp32"


def profile_shapes(batch: tuple[int, int, int], dims: list[int | None], input_name: str) -> dict[str, list[int]]:
    """The optimization profile's min/opt/max shapes of the input: ``batch`` then the graph's other ``dims``."""
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise PipelineError(f"batch profile must be (min, opt, max) with 1 <= min <= opt <= max, got {batch}")
    if dims[0] is not None and set(batch) != {dims[0]}:
        raise PipelineError(f"input {input_name!r} has a static batch of {dims[0]}, so the batch profile must be "
                            f"({dims[0]}, {dims[0]}, {dims[0]}), got {batch}; export with a dynamic batch")
    static = [int(d) for d in dims[1:] if d is not None]
    return {key: [b, *static] for key, b in zip(("min", "opt", "max"), batch, strict=True)}


# ---------------------------------------------------------------------------------------------------------
# The build itself, in whichever process can load the backend


@dataclasses.dataclass(frozen=True)
class BuildRequest:
    """Everything the build needs, JSON-serializable so a child process can run it."""

    onnx_path: str
    engine_path: str
    plugin_library: str | None  #: None: the graph has no plugin nodes (attention route "tensorrt")
    backend: str
    sm: int
    input_name: str
    profile: dict[str, list[int]]
    timing_cache: str | None
    opt_level: int
    embed_plugin: bool
    detailed_profile: bool
    #: Computed from the files before the build, for the metadata.
    precision: str
    onnx_sha256: str
    plugin_sha256: str | None
    attention: str = "plugin"


#: What TensorRT-RTX reports when it probes for a GPU during an ahead-of-time build on a machine without one.
_NO_GPU_MESSAGES = ("CUDA driver version is insufficient", "no CUDA-capable device")


@contextlib.contextmanager
def _polygraphy_log(backend: Backend, cancelled: Callable[[], bool] = lambda: False) -> Iterator[list[str]]:
    """While the block runs, Polygraphy's log, which carries TensorRT's, goes to ``logging`` (not to stdout, which
    is the child's reply channel); yields the list of error messages it collects.

    Warnings and errors are logged as such, the rest at debug level (all of TensorRT's log with ``-v``).
    Polygraphy's critical messages are not: they are raised as PolygraphyException, which the caller reports.
    Ahead of time, a missing GPU is expected: those errors are logged at debug level and not collected; so are the
    errors of a build ``cancelled`` by Ctrl-C (TensorRT's "BuildCanceled"), which the ``interrupted:`` line reports.
    """
    from polygraphy.logger import G_LOGGER

    errors: list[str] = []

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message, level = record.getMessage(), record.levelno
            if level >= logging.CRITICAL:
                log.debug("polygraphy: %s", message)
            elif (backend.ahead_of_time and "\n" not in message.strip()
                  and any(m in message for m in _NO_GPU_MESSAGES)):
                log.debug("%s (expected without a GPU): %s", backend.name, message)
            elif cancelled():
                log.debug("%s (after Ctrl-C): %s", backend.name, message)
            else:
                if level >= logging.ERROR:
                    errors.append(message)
                log.log(level if level >= logging.WARNING else logging.DEBUG, "%s: %s", backend.name, message)

    target, handler = logging.getLogger("Polygraphy"), Forward()
    saved = (G_LOGGER.use_python_logging_system, G_LOGGER.colors, G_LOGGER.letter, target.propagate, target.level)
    G_LOGGER.use_python_logging_system, G_LOGGER.colors, G_LOGGER.letter = True, False, False
    target.propagate = False
    target.setLevel(1)  # Polygraphy's verbosity below decides; its verbose levels are under logging.DEBUG
    target.addHandler(handler)
    try:
        with G_LOGGER.verbosity(G_LOGGER.EXTRA_VERBOSE if log.isEnabledFor(logging.DEBUG) else G_LOGGER.WARNING):
            yield errors
    finally:
        target.removeHandler(handler)
        G_LOGGER.use_python_logging_system, G_LOGGER.colors, G_LOGGER.letter, target.propagate, _ = saved
        target.setLevel(saved[-1])


def _load_plugin_library(trt: Any, backend: Backend, library: str, errors: list[str]) -> None:
    """Register the library's plugin creators (see the module docstring for why not ``LoadPlugins``)."""
    from polygraphy.backend.trt import util as trt_util

    # TensorRT logs through a logger only while a builder or runtime holds it: without one, the reason a
    # library does not load would not reach ``errors``.
    builder = trt.Builder(trt_util.get_trt_logger())
    if not trt.get_plugin_registry().load_library(library):
        raise PipelineError(f"{backend.name} could not load the plugin library {library}: "
                            f"{'; '.join(errors) or 'see the log'}; {_MAKE_PLUGIN_HINT}")
    del builder


def _progress_monitor(trt: Any, cancel: threading.Event) -> Any:
    """TensorRT's build phases as nested tqdm bars (on a terminal; logged phases otherwise).

    Returning False from ``step_complete`` is TensorRT's way to cancel a build: used for Ctrl-C.
    """
    from tqdm import tqdm

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, tqdm] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            log.debug("build phase: %s (%d steps)", phase_name, num_steps)
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=len(self.bars),
                                         leave=parent_phase is None, disable=None, file=sys.stderr)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Progress()


@contextlib.contextmanager
def _timing_cache_files(path: Path | None) -> Iterator[tuple[IO[bytes] | None, IO[bytes] | None]]:
    """(read, write) files for Polygraphy's ``load_timing_cache`` and ``save_timing_cache``: the cache at ``path``
    if there is one, and a temporary file that replaces ``path`` when the block succeeds."""
    if path is None:
        yield None, None
        return
    with contextlib.ExitStack() as files:
        loaded = files.enter_context(open(path, "rb")) if path.is_file() else None
        saved = files.enter_context(open(files.enter_context(atomic_path(path)), "w+b"))
        yield loaded, saved


def _config_loader(trt: Any, backend: Backend, request: BuildRequest, progress: Any,
                   timing_cache: IO[bytes] | None) -> Any:
    """Polygraphy's builder configuration for ``request``; only the class differs between the backends."""
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig, Profile

    options = dict(
        profiles=[Profile().add(request.input_name, **request.profile)],
        builder_optimization_level=request.opt_level,
        # Polygraphy's default is DETAILED; TensorRT's, kept unless asked (per-layer detail for the engine
        # inspector, no effect on speed), is LAYER_NAMES_ONLY.
        profiling_verbosity=(trt.ProfilingVerbosity.DETAILED if request.detailed_profile
                             else trt.ProfilingVerbosity.LAYER_NAMES_ONLY),
        load_timing_cache=timing_cache, progress_monitor=progress)
    if backend.ahead_of_time:
        from polygraphy.backend.tensorrt_rtx import CreateConfigRTX

        config = CreateConfigRTX(compute_capabilities=[divmod(request.sm, 10)], **options)
    else:
        config = CreateConfig(tf32=True, **options)  # TensorRT's default, which CreateConfig would clear

    def finish(builder: Any, network: Any, config: Any) -> None:
        if request.embed_plugin:  # the library inside the engine, so the runtime need not load it
            config.plugins_to_serialize = [request.plugin_library]
        if timing_cache is not None and config.get_timing_cache() is None:
            log.warning("build: timing cache %s is unusable (another TensorRT version?); starting an empty one",
                        request.timing_cache)
            config.set_timing_cache(config.create_timing_cache(b""), False)

    return PostprocessConfig(config, finish)


def _failure(what: str, errors: list[str], error: Exception) -> PipelineError:
    """``what`` failed: Polygraphy raised ``error`` (G_LOGGER.critical) after logging TensorRT's ``errors``."""
    return PipelineError(f"{what}:\n  " + "\n  ".join(errors or [f"{error} (rerun with -v for TensorRT's log)"]))


def run_build(request: BuildRequest) -> EngineMetadata:
    """Build in this process, which must be able to load the backend and have Polygraphy set up for it (see the
    module docstring: TensorRT-RTX builds run in :func:`_run_in_child`)."""
    backend = BACKENDS[request.backend]
    trt = _polygraphy_bindings(backend)
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException

    cache_path = Path(request.timing_cache) if request.timing_cache and backend.uses_timing_cache else None
    cancel = threading.Event()
    # Ctrl-C asks TensorRT to stop (the progress monitor returns False) instead of raising inside its C++ callbacks;
    # it is raised as KeyboardInterrupt once TensorRT has returned, replacing the error a cancelled build reports.
    with _polygraphy_log(backend, cancel.is_set) as errors, interrupts_deferred("the TensorRT build",
                                                                                on_interrupt=cancel.set):
        if request.plugin_library is not None:
            _load_plugin_library(trt, backend, request.plugin_library, errors)
        start = time.perf_counter()
        try:
            # STRONGLY_TYPED is required on TensorRT 10 and accepted but ignored on 11 (always strongly typed).
            builder, network, parser = NetworkFromOnnxPath(request.onnx_path, strongly_typed=True)()
        except PolygraphyException as error:
            raise _failure(f"{backend.name}'s ONNX parser rejected {request.onnx_path}", errors, error) from None
        parse_seconds = time.perf_counter() - start
        if cancel.is_set():
            raise KeyboardInterrupt
        layers = [network.get_layer(i) for i in range(network.num_layers)]
        plugin_layers = [layer.name for layer in layers if layer.type == trt.LayerType.PLUGIN_V3]

        log.info("build: %s %s building %s (%d layers, %d plugin layers)", backend.name, trt.__version__,
                 request.engine_path, len(layers), len(plugin_layers))
        with _timing_cache_files(cache_path) as (cache_in, cache_out):
            config = _config_loader(trt, backend, request, _progress_monitor(trt, cancel), cache_in)
            start = time.perf_counter()
            try:
                serialized = EngineBytesFromNetwork((builder, network, parser), config=config,
                                                    save_timing_cache=cache_out)()
            except PolygraphyException as error:
                raise _failure(f"{backend.name} failed to build {request.engine_path} from {request.onnx_path}",
                               errors, error) from None
            build_seconds = time.perf_counter() - start
            if cancel.is_set():  # finished before it saw the request: keep neither the engine nor the cache
                raise KeyboardInterrupt
            timing_cache = None if cache_path is None else TimingCacheUse(
                path=str(cache_path), loaded_bytes=os.fstat(cache_in.fileno()).st_size if cache_in else 0,
                saved_bytes=os.fstat(cache_out.fileno()).st_size)
        inputs = [network.get_input(i) for i in range(network.num_inputs)]
        outputs = [network.get_output(i) for i in range(network.num_outputs)]

    device = None if backend.ahead_of_time else cuda_device()
    metadata = EngineMetadata(
        engine=Path(request.engine_path).name,
        precision=request.precision,
        onnx=OnnxSource(request.onnx_path, request.onnx_sha256),
        plugin=None if request.plugin_library is None else PluginLibrary(request.plugin_library,
                                                                          request.plugin_sha256, request.embed_plugin),
        backend=BuiltWith(backend.name, trt.__version__),
        target=Target(sm=device.sm if device else request.sm, gpu=device.name if device else None,
                      ahead_of_time=backend.ahead_of_time),
        inputs=tuple(TensorSpec(t.name, np.dtype(trt.nptype(t.dtype)).name, tuple(t.shape)) for t in inputs),
        outputs=tuple(TensorSpec(t.name, np.dtype(trt.nptype(t.dtype)).name, tuple(t.shape)) for t in outputs),
        profile=BatchProfile(request.input_name, *(tuple(request.profile[key]) for key in ("min", "opt", "max"))),
        builder_optimization_level=request.opt_level,
        profiling_verbosity="detailed" if request.detailed_profile else "default",
        timing_cache=timing_cache,
        layers=len(layers),
        plugin_layers=len(plugin_layers),
        plugin_layer_names=tuple(plugin_layers),
        parse_seconds=round(parse_seconds, 3),
        build_seconds=round(build_seconds, 3),
        engine_bytes=serialized.nbytes,
        engine_sha256=hashlib.sha256(memoryview(serialized)).hexdigest(),  # verified before every load
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        attention=request.attention,
    )
    engine_path = Path(request.engine_path)
    # The engine first, then the metadata: an engine without metadata is refused by check_engine_compatible.
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(serialized)
    write_json(metadata_path(engine_path), metadata.to_json())
    log.info("build: wrote %s (%.1f MB, %d layers, %d plugin layers, %.1f s) and %s", engine_path,
             serialized.nbytes / 1e6, len(layers), len(plugin_layers), build_seconds, metadata_path(engine_path))
    return metadata


# ---------------------------------------------------------------------------------------------------------
# The child process for TensorRT-RTX


def _shipped_library(backend: Backend) -> Path:
    """The versioned file the backend's wheel ships for ``backend.unversioned_library``."""
    trt = backend.bindings()
    wheel_dir = Path(trt.tensorrt_rtx_libs.__file__).parent
    candidates = sorted(wheel_dir.glob(f"{backend.unversioned_library}.*"))
    if not candidates:
        raise PipelineError(f"no {backend.unversioned_library}.* in {wheel_dir}; reinstall tensorrt-rtx-cu13-libs")
    return candidates[0]


def _run_in_child(request: BuildRequest, backend: Backend) -> EngineMetadata:
    """Run :func:`run_build` in ``python -m pipeline.tensorrt.build_worker``, with Polygraphy set up for TensorRT-RTX
    and the unversioned library's symlink first on its LD_LIBRARY_PATH.

    The child logs and draws progress on the inherited stderr and prints one JSON line on stdout: the metadata
    or the error. On Ctrl-C (the terminal signals both processes) the child cancels the build and removes its
    partial files; this process waits for that before re-raising.
    """
    assert backend.unversioned_library is not None
    with tempfile.TemporaryDirectory(prefix="swin-trt-libs-") as link_dir:
        (Path(link_dir) / backend.unversioned_library).symlink_to(_shipped_library(backend))
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [link_dir, env.get("LD_LIBRARY_PATH")]))
        env[_POLYGRAPHY_RTX_VARIABLE] = "1"
        payload = {"request": dataclasses.asdict(request), "log_level": log.getEffectiveLevel()}
        command = [sys.executable, "-m", "pipeline.tensorrt.build_worker", json.dumps(payload)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        try:
            stdout, _ = child.communicate()
        except BaseException:
            child.send_signal(signal.SIGINT)
            child.wait()
            raise
    lines = stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if child.returncode == -signal.SIGINT or child.returncode == 130:
        raise KeyboardInterrupt
    if "error" in result:
        raise PipelineError(result["error"])
    if child.returncode != 0 or "metadata" not in result:
        raise RuntimeError(f"the {backend.name} build process exited with status {child.returncode}; "
                           f"its output:\n{stdout[-4000:]}")
    return EngineMetadata.from_json(result["metadata"])


def child_main(payload: str, interrupted: list[int]) -> int:
    """The child's side of :func:`_run_in_child`; ``interrupted`` holds the SIGINTs that came during start-up."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if interrupted:
        return 130
    arguments = json.loads(payload)
    logging.basicConfig(level=arguments["log_level"], format="%(levelname)s %(message)s")
    try:
        metadata = run_build(BuildRequest(**arguments["request"]))
    except PipelineError as error:
        print(json.dumps({"error": str(error)}), flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps({"metadata": metadata.to_json()}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def check_build_options(*, plugin_library: str | Path | None, batch: tuple[int, int, int], opt_level: int,
                        backend: str, sm: int) -> tuple[Path | None, Backend]:
    """The plugin library (None: not needed) and the backend for these options, or the PipelineError that
    :func:`build_engine` would raise for them. Cheap (nothing is read or built): ``pipeline.make`` calls it before
    any stage."""
    plugin_library = None if plugin_library is None else Path(plugin_library)
    if plugin_library is not None and not plugin_library.is_file():
        raise PipelineError(f"plugin library {plugin_library} does not exist; {_MAKE_PLUGIN_HINT} or pass the path "
                            "of yours")
    profile_shapes(tuple(batch), [None], "images")
    if not 0 <= opt_level <= 5:
        raise PipelineError(f"builder optimization level must be 0..5, got {opt_level}")
    return plugin_library, select_backend(backend, sm)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, plugin_library: str | Path | None,
                 batch: tuple[int, int, int] = DEFAULT_BATCH, backend: str = "auto", sm: int = 86,
                 timing_cache: str | Path | None = None, opt_level: int = 3, embed_plugin: bool = False,
                 input_name: str | None = None, detailed_profile: bool = False) -> EngineMetadata:
    """Build ``engine_path`` and ``<engine_path stem>.json`` from a strongly typed ONNX; return the metadata.

    ``batch`` is the optimization profile's (min, opt, max) batch; the other input dims come from the graph.
    ``backend``: ``auto``, ``tensorrt`` (this machine's GPU) or ``rtx`` (TensorRT-RTX, ahead of time for
    ``sm``). ``timing_cache`` is loaded if the file exists and saved after the build. ``embed_plugin`` stores
    the plugin library inside the engine (``plugins_to_serialize``), so the runtime need not load it. A graph of
    the ``tensorrt`` attention route (ONNX ``Attention`` nodes) needs no plugin library: ``plugin_library`` is
    ignored for it.
    ``detailed_profile`` builds with ``ProfilingVerbosity.DETAILED`` so the engine inspector (``make profile``)
    can describe every layer.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if engine_path.suffix != ".engine":
        raise PipelineError(f"engine path {engine_path} must end in .engine (the metadata goes to <name>.json)")
    check_writable(engine_path)
    try:
        model = read_onnx(onnx_path)
    except PipelineError:  # no graph to tell the route: the options are checked as the plugin route's first
        check_build_options(plugin_library=plugin_library, batch=batch, opt_level=opt_level, backend=backend, sm=sm)
        raise
    attention = graph_attention(node.op_type for node in model.graph.node)
    plugin_library, chosen = check_build_options(plugin_library=plugin_library if attention == "plugin" else None,
                                                 batch=batch, opt_level=opt_level, backend=backend, sm=sm)
    if plugin_library is None and attention == "plugin":
        raise PipelineError(f"{onnx_path} has no ONNX Attention nodes, so it needs the plugin library: "
                            f"{_MAKE_PLUGIN_HINT}")
    if plugin_library is None and embed_plugin:
        raise PipelineError(f"{onnx_path} uses TensorRT's own attention: there is no plugin library to embed; "
                            "leave out --embed-plugin")
    input_name, dims = graph_input(model, input_name, onnx_path)
    request = BuildRequest(
        onnx_path=str(onnx_path.resolve()), engine_path=str(engine_path.resolve()),
        plugin_library=None if plugin_library is None else str(plugin_library.resolve()), backend=chosen.name,
        sm=sm, input_name=input_name,
        profile=profile_shapes(tuple(batch), dims, input_name),
        timing_cache=str(Path(timing_cache).resolve()) if timing_cache else None, opt_level=opt_level,
        embed_plugin=embed_plugin, detailed_profile=detailed_profile, precision=graph_precision(model),
        onnx_sha256=file_sha256(onnx_path),
        plugin_sha256=None if plugin_library is None else file_sha256(plugin_library), attention=attention)
    del model  # the parser reads the file itself; do not hold a second copy of the weights during the build
    if chosen is TENSORRT_RTX:  # in a child process: see the module docstring
        return _run_in_child(request, chosen)
    return run_build(request)


def installed_runtimes() -> list[Runtime]:
    device = cuda_device()
    return [Runtime(backend.name, backend.bindings().__version__, device.sm if device else None,
                    device.name if device else None)
            for backend in (TENSORRT, TENSORRT_RTX) if backend.is_installed()]


def engine_plugin_library(engine_path: str | Path, metadata: EngineMetadata,
                          plugin_library: str | Path | None = None) -> Path | None:
    """The plugin library file ``engine_path`` needs (None when the engine embeds it): ``plugin_library`` when given,
    else the path its metadata recorded at build time, else a file of that name beside the engine, which is where an
    engine shipped with its library to another machine, or moved with its folder, has it. Whichever it is must be
    the library the engine was built with (the recorded SHA-256); a PipelineError says what to do otherwise."""
    if metadata.plugin is None or metadata.plugin.embedded:
        return None
    engine_path, recorded = Path(engine_path), Path(metadata.plugin.library)
    candidates = ([Path(plugin_library)] if plugin_library is not None
                  else [recorded, engine_path.parent / recorded.name])
    library = next((candidate for candidate in candidates if candidate.is_file()), None)
    if library is None:
        beside = "" if plugin_library is not None else f", nor is {recorded.name} beside it"
        raise PipelineError(f"plugin library {candidates[0]} that {engine_path} needs is missing{beside}; pass where "
                            f"it is (--plugin, or SwinEngine's plugin_library), or {_MAKE_PLUGIN_HINT}")
    if file_sha256(library) != metadata.plugin.sha256:
        what = "is not the one" if plugin_library is not None else "changed since"
        raise PipelineError(f"plugin library {library} {what} {engine_path} was built with (sha256 "
                            f"{metadata.plugin.sha256[:12]}…): pass the one it was built with, or {REBUILD}")
    return library


def check_engine_compatible(engine_path: str | Path, runtimes: list[Runtime] | None = None, *,
                            plugin_library: str | Path | None = None) -> EngineCheck:
    """Refuse, before deserializing, an engine built for another backend, version or GPU, or whose plugin
    library (:func:`engine_plugin_library`) is missing or changed since; return its metadata and the runtime here
    that can load it.

    ``runtimes`` defaults to :func:`installed_runtimes`; without any (no TensorRT here) only the files are checked.
    """
    engine_path = Path(engine_path)
    meta_path = metadata_path(engine_path)
    if not engine_path.is_file():
        raise PipelineError(f"engine {engine_path} does not exist; build it with `python -m pipeline build`")
    metadata = EngineMetadata.read(engine_path)
    built_with, target = metadata.backend, metadata.target
    # A truncated or corrupted copy must fail here, with our message, not inside TensorRT's deserializer.
    size = engine_path.stat().st_size
    if size != metadata.engine_bytes:
        differs = f"it has {size} bytes, {meta_path} recorded {metadata.engine_bytes} at build time (truncated copy?)"
    elif (sha256 := file_sha256(engine_path)) != metadata.engine_sha256:
        differs = (f"its size is right but its sha256 {sha256[:12]}… is not the {metadata.engine_sha256[:12]}… "
                   f"{meta_path} recorded at build time")
    else:
        differs = None
    if differs:
        raise PipelineError(f"engine {engine_path} is corrupt: {differs}; copy it again or {REBUILD}")

    library = engine_plugin_library(engine_path, metadata, plugin_library)

    runtimes = installed_runtimes() if runtimes is None else runtimes
    if not runtimes:
        log.warning("check: no TensorRT runtime here; checked only the files of %s", engine_path)
        return EngineCheck(metadata, None, library)
    runtime = next((r for r in runtimes if r.backend == built_with.name), None)
    have = ", ".join(f"{r.backend} {r.version}" for r in runtimes)
    if runtime is None:
        raise PipelineError(f"{engine_path} was built with {built_with.name} {built_with.version} but this "
                            f"machine has {have}; {REBUILD} --backend {'rtx' if 'rtx' in have else 'tensorrt'}")
    if runtime.version != built_with.version:
        raise PipelineError(f"{engine_path} was built with {built_with.name} {built_with.version} but this "
                            f"machine runs {runtime.version}; engines do not cross versions: {REBUILD}")
    if runtime.sm is not None and runtime.sm != target.sm:
        built_for = f"SM{target.sm}" + (f" ({target.gpu})" if target.gpu else "")
        raise PipelineError(f"{engine_path} was built for {built_for} but this GPU is {runtime.gpu} (SM{runtime.sm}); "
                            f"{REBUILD}" + (f" --sm {runtime.sm}" if target.ahead_of_time else ""))
    if target.gpu and runtime.gpu and runtime.gpu != target.gpu:
        log.warning("check: %s was built on a %s and runs on a %s (same SM%d): it works, tuned for the other card",
                    engine_path, target.gpu, runtime.gpu, runtime.sm)
    return EngineCheck(metadata, runtime, library)


#: One per bindings module: TensorRT keeps the first logger it was given for the rest of the process.
_FORWARDING_LOGGERS: dict[str, Any] = {}


def _forwarding_logger(trt: Any) -> Any:
    """A ``trt.ILogger`` that forwards the runtime's messages to ``logging`` (errors and warnings as such, the rest at
    debug level); without a GPU, the CUDA-driver errors TensorRT-RTX logs while probing for one go to debug level."""
    if trt.__name__ not in _FORWARDING_LOGGERS:
        severity, no_gpu = trt.ILogger.Severity, cuda_device() is None
        levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
                  severity.WARNING: logging.WARNING}

        class Forward(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)

            def log(self, level: Any, message: str) -> None:
                expected = no_gpu and any(m in message for m in _NO_GPU_MESSAGES)
                log.log(logging.DEBUG if expected else levels.get(level, logging.DEBUG), "%s: %s", trt.__name__,
                        message)

        _FORWARDING_LOGGERS[trt.__name__] = Forward()
    return _FORWARDING_LOGGERS[trt.__name__]


def engine_runtime(metadata: EngineMetadata) -> tuple[Any, Any, Any]:
    """(bindings, ``Runtime``, its logger) of the backend that built the engine. TensorRT's runtime logs through
    Polygraphy's logger, as the build does; TensorRT-RTX's through :func:`_forwarding_logger`, since Polygraphy in
    this process is normally loaded for TensorRT (it picks one per process: :func:`_polygraphy_bindings`)."""
    if metadata.backend.name == TENSORRT_RTX.name:
        trt = TENSORRT_RTX.bindings()
        logger = _forwarding_logger(trt)
    else:
        trt = _polygraphy_bindings(TENSORRT)
        from polygraphy.backend.trt import util as trt_util

        logger = trt_util.get_trt_logger()
    return trt, trt.Runtime(logger), logger


def load_engine(engine_path: str | Path, metadata: EngineMetadata, plugin_library: str | Path | None = None) -> Any:
    """The ``ICudaEngine`` of ``engine_path`` (check it with :func:`check_engine_compatible` first), deserialized by
    the backend that built it (TensorRT, or TensorRT-RTX), with the plugin library (``plugin_library``: the check's,
    else :func:`engine_plugin_library` finds it) loaded unless the engine embeds it or has no plugin layers. Needs
    that backend and its GPU; :class:`pipeline.runtime.SwinEngine` is the way to load and run one.

    Host code in the engine (an embedded plugin library) is allowed only when the metadata says it is there:
    Polygraphy's ``EngineFromBytes`` would allow it for every engine, hence our own deserialization.
    """
    trt, runtime, logger = engine_runtime(metadata)  # the runtime first: TensorRT logs through it while it lives
    trt.init_libnvinfer_plugins(logger, "")  # TensorRT's own, as NetworkFromOnnxPath registers
    if metadata.needs_plugin_library:
        library = str(plugin_library or engine_plugin_library(engine_path, metadata))
        if not trt.get_plugin_registry().load_library(library):
            raise PipelineError(f"{metadata.backend.name} could not load the plugin library {library}; "
                                f"{_MAKE_PLUGIN_HINT}")
    runtime.engine_host_code_allowed = metadata.embeds_plugin
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise PipelineError(f"{metadata.backend.name} could not deserialize {engine_path}; {REBUILD}")
    return engine
