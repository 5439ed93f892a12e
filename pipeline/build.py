"""Stage 5: typed ONNX + plugin library → ``<name>.engine`` and ``<name>.json`` beside it (docs/design.md §1, §4, §5).

Two backends build the same strongly typed network:

- ``tensorrt`` (10.x with ``STRONGLY_TYPED``, 11.x where strong typing is always on) builds for this machine's
  GPU, so it needs one;
- ``tensorrt_rtx`` builds ahead of time for a chosen compute capability and needs no GPU. Its ONNX parser
  dlopens the unversioned ``libtensorrt_rtx.so``, which the wheel does not ship, and the loader reads
  ``LD_LIBRARY_PATH`` only at process start: when this process cannot load that name, the build runs in a
  child process (``python -m pipeline.build_worker``) whose ``LD_LIBRARY_PATH`` starts with a private folder holding
  the symlink. Everything else is the same code in both cases.

The metadata JSON records what the engine was built from and for, so :func:`check_engine_compatible` can
refuse a mismatched engine before deserializing it.
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
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from pipeline.artifacts import atomic_path, file_sha256, read_onnx, write_json
from pipeline.errors import PipelineError
from pipeline.precision import QDQ_OPS

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
    #: True: builds for ``sm`` without a GPU; False: builds for this machine's GPU (and needs one).
    ahead_of_time: bool
    #: TensorRT-RTX ignores timing caches (its set/get are no-ops since 1.2); the file is still written.
    uses_timing_cache: bool
    #: A library the ONNX parser dlopens by this unversioned name, shipped only as ``<name>.1``.
    unversioned_library: str | None

    def bindings(self) -> Any:
        return importlib.import_module(self.module)

    def is_installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def set_target(self, trt: Any, config: Any, sm: int) -> None:
        if self.ahead_of_time:
            config.num_compute_capabilities = 1
            config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{sm}"), 0)


TENSORRT = Backend("tensorrt", "tensorrt", ahead_of_time=False, uses_timing_cache=True, unversioned_library=None)
TENSORRT_RTX = Backend("tensorrt_rtx", "tensorrt_rtx_bindings", ahead_of_time=True, uses_timing_cache=False,
                       unversioned_library="libtensorrt_rtx.so")
BACKENDS = {"tensorrt": TENSORRT, "rtx": TENSORRT_RTX, "tensorrt_rtx": TENSORRT_RTX}


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
    """
    if choice not in ("auto", "tensorrt", "rtx"):
        raise PipelineError(f"unknown backend {choice!r}: expected auto, tensorrt or rtx")
    if choice in ("auto", "tensorrt") and TENSORRT.is_installed() and cuda_device() is not None:
        return TENSORRT
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


def graph_input(model: onnx.ModelProto, input_name: str | None, source: Path) -> tuple[str, list[int | None]]:
    """The image input's name and dims (None where symbolic); the batch dim may be symbolic, no other."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    if input_name is None:
        if len(inputs) != 1:
            raise PipelineError(f"{source} has {len(inputs)} inputs {sorted(inputs)}; name the image input")
        input_name = next(iter(inputs))
    if input_name not in inputs:
        raise PipelineError(f"{source} has no input {input_name!r}; its inputs are {sorted(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[input_name].type.tensor_type.shape.dim]
    if not dims or None in dims[1:]:
        raise PipelineError(f"input {input_name!r} of {source} has shape {dims}: only the batch dimension may be "
                            "dynamic; export with a fixed image size")
    return input_name, dims


def batch_profile(batch: tuple[int, int, int], dims: list[int | None], input_name: str
                  ) -> dict[str, list[int]]:
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
    plugin_library: str
    backend: str
    sm: int
    input_name: str
    profile: dict[str, list[int]]
    timing_cache: str | None
    opt_level: int
    embed_plugin: bool
    detailed_profile: bool
    metadata: dict[str, Any]  #: fields computed from the files (precision, hashes) before the build


def metadata_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def _tensor_description(trt: Any, tensor: Any) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": np.dtype(trt.nptype(tensor.dtype)).name, "shape": list(tensor.shape)}


#: What TensorRT-RTX reports when it probes for a GPU during an ahead-of-time build on a machine without one.
_NO_GPU_MESSAGES = ("CUDA driver version is insufficient", "no CUDA-capable device")


def _logger(trt: Any, ahead_of_time: bool) -> tuple[Any, list[str]]:
    """A TensorRT logger forwarding to ``logging``; also returns the list of error messages it collects.

    Ahead of time, a missing GPU is expected: those errors are logged at debug level and not collected.
    """
    errors: list[str] = []
    severity = trt.ILogger.Severity
    levels = {severity.INTERNAL_ERROR: logging.ERROR, severity.ERROR: logging.ERROR,
              severity.WARNING: logging.WARNING, severity.INFO: logging.DEBUG, severity.VERBOSE: logging.DEBUG}

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, level: Any, message: str) -> None:
            if ahead_of_time and any(m in message for m in _NO_GPU_MESSAGES):
                log.debug("%s (expected without a GPU): %s", trt.__name__, message)
                return
            if levels[level] >= logging.ERROR:
                errors.append(message)
            log.log(levels[level], "%s: %s", trt.__name__, message)

    return Logger(), errors


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
def _sigint_cancels(cancel: threading.Event) -> Iterator[None]:
    """While TensorRT builds, Ctrl-C asks it to stop (through the progress monitor) instead of raising inside
    a C++ callback; the caller raises KeyboardInterrupt once the build has returned."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def _quiet_deprecations() -> Iterator[None]:
    # TensorRT-RTX marks the timing-cache calls deprecated no-ops; one code path serves both backends.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def _timing_cache(config: Any, path: Path | None) -> dict[str, Any] | None:
    """Load the persistent timing cache into ``config`` (an empty one when the file is missing or unusable)."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    with _quiet_deprecations():
        cache = config.create_timing_cache(data)
        if cache is None or not config.set_timing_cache(cache, False):
            log.warning("build: timing cache %s is unusable (another TensorRT version?); starting an empty one", path)
            config.set_timing_cache(config.create_timing_cache(b""), False)
    return {"path": str(path), "loaded_bytes": len(data)}


def _save_timing_cache(config: Any, path: Path) -> int:
    with _quiet_deprecations():
        data = bytes(config.get_timing_cache().serialize())
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return len(data)


def run_build(request: BuildRequest) -> dict[str, Any]:
    """Build in this process; the process must be able to load the backend (see the module docstring)."""
    backend = BACKENDS[request.backend]
    trt = backend.bindings()
    logger, errors = _logger(trt, backend.ahead_of_time)
    builder = trt.Builder(logger)
    if not trt.get_plugin_registry().load_library(request.plugin_library):
        raise PipelineError(f"{backend.name} could not load the plugin library {request.plugin_library}: "
                            f"{'; '.join(errors) or 'see the log'}; {_MAKE_PLUGIN_HINT}")

    # STRONGLY_TYPED is required on TensorRT 10 and accepted but ignored on 11, where strong typing is always on.
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    start = time.perf_counter()
    if not parser.parse_from_file(request.onnx_path):
        problems = [str(parser.get_error(i)).strip() for i in range(parser.num_errors)]
        raise PipelineError(f"{backend.name}'s ONNX parser rejected {request.onnx_path} ({len(problems)} errors):\n  "
                            + "\n  ".join(problems or errors))
    parse_seconds = time.perf_counter() - start
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    plugin_layers = [layer.name for layer in layers if layer.type == trt.LayerType.PLUGIN_V3]

    config = builder.create_builder_config()
    backend.set_target(trt, config, request.sm)
    config.builder_optimization_level = request.opt_level
    if request.detailed_profile:  # per-layer detail for the engine inspector; no effect on speed
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    profile = builder.create_optimization_profile()
    profile.set_shape(request.input_name, *(request.profile[key] for key in ("min", "opt", "max")))
    config.add_optimization_profile(profile)
    cache_path = Path(request.timing_cache) if request.timing_cache else None
    timing_cache = _timing_cache(config, cache_path)
    if request.embed_plugin:
        config.plugins_to_serialize = [request.plugin_library]
    cancel = threading.Event()
    config.progress_monitor = _progress_monitor(trt, cancel)

    log.info("build: %s %s building %s (%d layers, %d plugin layers)", backend.name, trt.__version__,
             request.engine_path, len(layers), len(plugin_layers))
    start = time.perf_counter()
    with _sigint_cancels(cancel):
        serialized = builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - start
    if cancel.is_set():
        raise KeyboardInterrupt
    if serialized is None:
        raise PipelineError(f"{backend.name} failed to build {request.engine_path} from {request.onnx_path}:\n  "
                            + "\n  ".join(errors or ["no error message; rerun with -v for TensorRT's log"]))
    if timing_cache is not None and cache_path is not None:
        timing_cache["saved_bytes"] = _save_timing_cache(config, cache_path)
        timing_cache["used_by_backend"] = backend.uses_timing_cache

    device = None if backend.ahead_of_time else cuda_device()
    metadata = {
        **request.metadata,
        "backend": {"name": backend.name, "version": trt.__version__},
        "target": {"sm": device.sm if device else request.sm, "gpu": device.name if device else None,
                   "ahead_of_time": backend.ahead_of_time},
        "inputs": [_tensor_description(trt, network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [_tensor_description(trt, network.get_output(i)) for i in range(network.num_outputs)],
        "profile": {"input": request.input_name, **request.profile},
        "builder_optimization_level": request.opt_level,
        "profiling_verbosity": "detailed" if request.detailed_profile else "default",
        "timing_cache": timing_cache,
        "layers": len(layers),
        "plugin_layers": len(plugin_layers),
        "plugin_layer_names": plugin_layers,
        "parse_seconds": round(parse_seconds, 3),
        "build_seconds": round(build_seconds, 3),
        "engine_bytes": serialized.nbytes,
        "engine_sha256": hashlib.sha256(memoryview(serialized)).hexdigest(),  # verified before every load
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    engine_path = Path(request.engine_path)
    # The engine first, then the metadata: an engine without metadata is refused by check_engine_compatible.
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(serialized)
    write_json(metadata_path(engine_path), metadata)
    log.info("build: wrote %s (%.1f MB, %d layers, %d plugin layers, %.1f s) and %s", engine_path,
             serialized.nbytes / 1e6, len(layers), len(plugin_layers), build_seconds, metadata_path(engine_path))
    return metadata


# ---------------------------------------------------------------------------------------------------------
# A child process for TensorRT-RTX's unversioned library


def _can_load(library: str) -> bool:
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def _shipped_library(backend: Backend) -> Path:
    """The versioned file the backend's wheel ships for ``backend.unversioned_library``."""
    trt = backend.bindings()
    wheel_dir = Path(trt.tensorrt_rtx_libs.__file__).parent
    candidates = sorted(wheel_dir.glob(f"{backend.unversioned_library}.*"))
    if not candidates:
        raise PipelineError(f"no {backend.unversioned_library}.* in {wheel_dir}; reinstall tensorrt-rtx-cu13-libs")
    return candidates[0]


def _run_in_child(request: BuildRequest, backend: Backend) -> dict[str, Any]:
    """Run :func:`run_build` in ``python -m pipeline.build_worker`` with the symlink on its LD_LIBRARY_PATH.

    The child logs and draws progress on the inherited stderr and prints one JSON line on stdout: the metadata
    or the error. On Ctrl-C (the terminal signals both processes) the child cancels the build and removes its
    partial files; this process waits for that before re-raising.
    """
    assert backend.unversioned_library is not None
    with tempfile.TemporaryDirectory(prefix="swin-trt-libs-") as link_dir:
        (Path(link_dir) / backend.unversioned_library).symlink_to(_shipped_library(backend))
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [link_dir, env.get("LD_LIBRARY_PATH")]))
        payload = {"request": dataclasses.asdict(request), "log_level": log.getEffectiveLevel()}
        command = [sys.executable, "-m", "pipeline.build_worker", json.dumps(payload)]
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
    return result["metadata"]


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
    print(json.dumps({"metadata": metadata}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def check_build_options(*, plugin_library: str | Path, batch: tuple[int, int, int], opt_level: int, backend: str,
                        sm: int) -> tuple[Path, Backend]:
    """The plugin library and the backend for these options, or the PipelineError that :func:`build_engine`
    would raise for them. Cheap (nothing is read or built): ``pipeline.engine`` calls it before any stage."""
    plugin_library = Path(plugin_library)
    if not plugin_library.is_file():
        raise PipelineError(f"plugin library {plugin_library} does not exist; {_MAKE_PLUGIN_HINT} or pass the path "
                            "of yours")
    batch_profile(tuple(batch), [None], "images")
    if not 0 <= opt_level <= 5:
        raise PipelineError(f"builder optimization level must be 0..5, got {opt_level}")
    return plugin_library, select_backend(backend, sm)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, plugin_library: str | Path,
                 batch: tuple[int, int, int] = DEFAULT_BATCH, backend: str = "auto", sm: int = 86,
                 timing_cache: str | Path | None = None, opt_level: int = 3, embed_plugin: bool = False,
                 input_name: str | None = None, detailed_profile: bool = False) -> dict[str, Any]:
    """Build ``engine_path`` and ``<engine_path stem>.json`` from a strongly typed ONNX; return the metadata.

    ``batch`` is the optimization profile's (min, opt, max) batch; the other input dims come from the graph.
    ``backend``: ``auto``, ``tensorrt`` (this machine's GPU) or ``rtx`` (TensorRT-RTX, ahead of time for
    ``sm``). ``timing_cache`` is loaded if the file exists and saved after the build. ``embed_plugin`` stores
    the plugin library inside the engine (``plugins_to_serialize``), so the runtime need not load it.
    ``detailed_profile`` builds with ``ProfilingVerbosity.DETAILED`` so the engine inspector (``make profile``)
    can describe every layer.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if engine_path.suffix != ".engine":
        raise PipelineError(f"engine path {engine_path} must end in .engine (the metadata goes to <name>.json)")
    plugin_library, chosen = check_build_options(plugin_library=plugin_library, batch=batch, opt_level=opt_level,
                                                 backend=backend, sm=sm)
    model = read_onnx(onnx_path)
    input_name, dims = graph_input(model, input_name, onnx_path)
    request = BuildRequest(
        onnx_path=str(onnx_path.resolve()), engine_path=str(engine_path.resolve()),
        plugin_library=str(plugin_library.resolve()), backend=chosen.name, sm=sm, input_name=input_name,
        profile=batch_profile(tuple(batch), dims, input_name),
        timing_cache=str(Path(timing_cache).resolve()) if timing_cache else None, opt_level=opt_level,
        embed_plugin=embed_plugin, detailed_profile=detailed_profile,
        metadata={
            "engine": engine_path.name,
            "precision": graph_precision(model),
            "onnx": {"path": str(onnx_path.resolve()), "sha256": file_sha256(onnx_path)},
            "plugin": {"library": str(plugin_library.resolve()), "sha256": file_sha256(plugin_library),
                       "embedded": embed_plugin},
        })
    del model  # the parser reads the file itself; do not hold a second copy of the weights during the build
    if chosen.unversioned_library and not _can_load(chosen.unversioned_library):
        return _run_in_child(request, chosen)
    return run_build(request)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """A TensorRT runtime on this machine: which one, its version, and the GPU it would run on (if any)."""

    backend: str
    version: str
    sm: int | None
    gpu: str | None


def installed_runtimes() -> list[Runtime]:
    device = cuda_device()
    return [Runtime(backend.name, backend.bindings().__version__, device.sm if device else None,
                    device.name if device else None)
            for backend in (TENSORRT, TENSORRT_RTX) if backend.is_installed()]


def check_engine_compatible(engine_path: str | Path, runtimes: list[Runtime] | None = None) -> dict[str, Any]:
    """Refuse, before deserializing, an engine built for another backend, version or GPU, or whose plugin
    library changed since; return ``{"metadata": ..., "runtime": Runtime fields or None}``.

    ``runtimes`` defaults to :func:`installed_runtimes`; without any (no TensorRT here) only the files are checked.
    """
    engine_path = Path(engine_path)
    meta_path = metadata_path(engine_path)
    rebuild = "rebuild it on this machine with `python -m pipeline build` (or pipeline.build.build_engine)"
    if not engine_path.is_file():
        raise PipelineError(f"engine {engine_path} does not exist; build it with `python -m pipeline build`")
    if not meta_path.is_file():
        raise PipelineError(f"{meta_path} is missing: it records what {engine_path} was built for; {rebuild}")
    try:
        metadata = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PipelineError(f"{meta_path} is not the JSON the build wrote ({error}); {rebuild}") from None
    built_with, target, plugin = metadata["backend"], metadata["target"], metadata["plugin"]
    # A truncated or corrupted copy must fail here, with our message, not inside TensorRT's deserializer.
    if "engine_sha256" not in metadata:
        raise PipelineError(f"{meta_path} records no engine checksum (written by an older swin-trt); {rebuild}")
    size = engine_path.stat().st_size
    if size != metadata["engine_bytes"] or file_sha256(engine_path) != metadata["engine_sha256"]:
        raise PipelineError(f"engine {engine_path} is corrupt: its {size} bytes do not match the "
                            f"{metadata['engine_bytes']} bytes and sha256 {metadata['engine_sha256'][:12]}… "
                            f"recorded in {meta_path} at build time; copy it again or {rebuild}")

    # An embedded plugin library travels inside the engine, so the file on disk no longer matters.
    if not plugin["embedded"]:
        library = Path(plugin["library"])
        if not library.is_file():
            raise PipelineError(f"plugin library {library} that {engine_path} needs is missing; {_MAKE_PLUGIN_HINT}")
        if file_sha256(library) != plugin["sha256"]:
            raise PipelineError(f"plugin library {library} changed since {engine_path} was built (sha256 "
                                f"{plugin['sha256'][:12]}…); {rebuild}")

    runtimes = installed_runtimes() if runtimes is None else runtimes
    if not runtimes:
        log.warning("check: no TensorRT runtime here; checked only the files of %s", engine_path)
        return {"metadata": metadata, "runtime": None}
    runtime = next((r for r in runtimes if r.backend == built_with["name"]), None)
    have = ", ".join(f"{r.backend} {r.version}" for r in runtimes)
    if runtime is None:
        raise PipelineError(f"{engine_path} was built with {built_with['name']} {built_with['version']} but this "
                            f"machine has {have}; {rebuild} --backend {'rtx' if 'rtx' in have else 'tensorrt'}")
    if runtime.version != built_with["version"]:
        raise PipelineError(f"{engine_path} was built with {built_with['name']} {built_with['version']} but this "
                            f"machine runs {runtime.version}; engines do not cross versions: {rebuild}")
    if runtime.sm is not None and runtime.sm != target["sm"]:
        built_for = f"SM{target['sm']}" + (f" ({target['gpu']})" if target["gpu"] else "")
        raise PipelineError(f"{engine_path} was built for {built_for} but this GPU is {runtime.gpu} (SM{runtime.sm}); "
                            f"{rebuild}" + (f" --sm {runtime.sm}" if target["ahead_of_time"] else ""))
    if target["gpu"] and runtime.gpu and runtime.gpu != target["gpu"]:
        log.warning("check: %s was built on a %s and runs on a %s (same SM%d): it works, tuned for the other card",
                    engine_path, target["gpu"], runtime.gpu, runtime.sm)
    return {"metadata": metadata, "runtime": dataclasses.asdict(runtime)}

