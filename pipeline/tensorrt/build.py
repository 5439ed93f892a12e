"""Stage 5: typed ONNX + plugin library → ``<name>.engine`` and ``<name>.json`` beside it (docs/design.md §1, §4b, §5).

:func:`check_build_options` checks a build's options once and returns them as :class:`BuildOptions`;
:func:`build_checked` builds with them, :func:`build_engine` does both. TensorRT builds in this process,
TensorRT-RTX in a child (``python -m pipeline.tensorrt.build_worker``), both on Polygraphy's loaders (design §4b
says why). Loading an engine is :mod:`pipeline.tensorrt.load`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import hashlib
import json
import logging
import os
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

from pipeline.common.artifacts import atomic_path, check_writable, file_sha256, partial_files, write_json
from pipeline.common.attention import graph_attention
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.common.interrupts import interrupts_deferred
from pipeline.common.onnx_io import QDQ_OPS, graph_input, read_onnx
from pipeline.tensorrt.backends import (
    BACKENDS,
    MAKE_PLUGIN_HINT,
    NO_GPU_MESSAGES,
    POLYGRAPHY_RTX_VARIABLE,
    TENSORRT_RTX,
    Backend,
    cuda_device,
    polygraphy_bindings,
    select_backend,
)
from pipeline.tensorrt.metadata import (
    BatchProfile,
    BuiltWith,
    EngineMetadata,
    OnnxSource,
    PluginLibrary,
    Target,
    TensorSpec,
    TimingCacheUse,
    metadata_path,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH = (1, 8, 32)


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


def profile_shapes(batch: tuple[int, int, int], dims: list[int | None], input_name: str,
                   sizes: SizeRange | None = None) -> dict[str, list[int]]:
    """The optimization profile's min/opt/max shapes of the input: ``batch`` then the graph's other ``dims``; a
    graph with dynamic H and W (``[B, 3, H, W]``) takes them from ``sizes``, which only such a graph may have."""
    if len(batch) != 3 or not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise PipelineError(f"batch profile must be (min, opt, max) with 1 <= min <= opt <= max, got {batch}")
    if dims[0] is not None and set(batch) != {dims[0]}:
        raise PipelineError(f"input {input_name!r} has a static batch of {dims[0]}, so the batch profile must be "
                            f"({dims[0]}, {dims[0]}, {dims[0]}), got {batch}; export with a dynamic batch")
    dynamic_size = len(dims) == 4 and None in dims[2:]
    if dynamic_size != (sizes is not None) and len(dims) > 1:
        raise PipelineError(f"input {input_name!r} has shape {dims}, " + (
            "dynamic in H and W: give the size range it was exported for (--img-size min:opt:max)" if dynamic_size
            else f"a fixed size: a size range ({sizes}) needs a graph exported with dynamic H and W"))
    if sizes is not None:
        return {key: [b, int(dims[1] or 3), *getattr(sizes, key)]
                for key, b in zip(("min", "opt", "max"), batch, strict=True)}
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
                  and any(m in message for m in NO_GPU_MESSAGES)):
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
    """Register the library's plugin creators (docs/design.md §4b says why not ``LoadPlugins``)."""
    from polygraphy.backend.trt import util as trt_util

    # TensorRT logs through a logger only while a builder or runtime holds it: without one, the reason a
    # library does not load would not reach ``errors``.
    builder = trt.Builder(trt_util.get_trt_logger())
    if not trt.get_plugin_registry().load_library(library):
        raise PipelineError(f"{backend.name} could not load the plugin library {library}: "
                            f"{'; '.join(errors) or 'see the log'}; {MAKE_PLUGIN_HINT}")
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



@dataclasses.dataclass(frozen=True)
class _Parsed:
    """The ONNX parser's network (with the builder and parser it needs alive) and what it says."""

    network: tuple[Any, Any, Any]  #: (builder, network, parser), as ``NetworkFromOnnxPath`` returns them
    seconds: float
    layers: int
    plugin_layers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Serialized:
    """The builder's engine and what it took."""

    engine: Any  #: ``IHostMemory``
    seconds: float
    timing_cache: TimingCacheUse | None


def _parse(trt: Any, backend: Backend, request: BuildRequest, errors: list[str],
           cancel: threading.Event) -> _Parsed:
    """The strongly typed network of ``request.onnx_path``."""
    from polygraphy.backend.trt import NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException

    start = time.perf_counter()
    try:
        # STRONGLY_TYPED is required on TensorRT 10 and accepted but ignored on 11 (always strongly typed).
        builder, network, parser = NetworkFromOnnxPath(request.onnx_path, strongly_typed=True)()
    except PolygraphyException as error:
        raise _failure(f"{backend.name}'s ONNX parser rejected {request.onnx_path}", errors, error) from None
    seconds = time.perf_counter() - start
    if cancel.is_set():
        raise KeyboardInterrupt
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    plugin_layers = tuple(layer.name for layer in layers if layer.type == trt.LayerType.PLUGIN_V3)
    return _Parsed((builder, network, parser), seconds, len(layers), plugin_layers)


def _serialize(trt: Any, backend: Backend, request: BuildRequest, parsed: _Parsed, errors: list[str],
               cancel: threading.Event) -> _Serialized:
    """The engine's bytes, with the timing cache read before and replaced after, when the backend uses one."""
    from polygraphy.backend.trt import EngineBytesFromNetwork
    from polygraphy.exception import PolygraphyException

    cache_path = Path(request.timing_cache) if request.timing_cache and backend.uses_timing_cache else None
    with _timing_cache_files(cache_path) as (cache_in, cache_out):
        config = _config_loader(trt, backend, request, _progress_monitor(trt, cancel), cache_in)
        start = time.perf_counter()
        try:
            serialized = EngineBytesFromNetwork(parsed.network, config=config, save_timing_cache=cache_out)()
        except PolygraphyException as error:
            raise _failure(f"{backend.name} failed to build {request.engine_path} from {request.onnx_path}",
                           errors, error) from None
        seconds = time.perf_counter() - start
        if cancel.is_set():  # finished before it saw the request: keep neither the engine nor the cache
            raise KeyboardInterrupt
        timing_cache = None if cache_path is None else TimingCacheUse(
            path=str(cache_path), loaded_bytes=os.fstat(cache_in.fileno()).st_size if cache_in else 0,
            saved_bytes=os.fstat(cache_out.fileno()).st_size)
    return _Serialized(serialized, seconds, timing_cache)


def _tensor_specs(trt: Any, tensors: list[Any]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, np.dtype(trt.nptype(t.dtype)).name, tuple(t.shape)) for t in tensors)


def _engine_metadata(trt: Any, backend: Backend, request: BuildRequest, parsed: _Parsed,
                     serialized: _Serialized) -> EngineMetadata:
    """What the engine was built from and for, as :func:`pipeline.tensorrt.load.check_engine_compatible` reads it."""
    network = parsed.network[1]
    device = None if backend.ahead_of_time else cuda_device()
    return EngineMetadata(
        engine=Path(request.engine_path).name,
        precision=request.precision,
        onnx=OnnxSource(request.onnx_path, request.onnx_sha256),
        plugin=None if request.plugin_library is None else PluginLibrary(request.plugin_library,
                                                                          request.plugin_sha256, request.embed_plugin),
        backend=BuiltWith(backend.name, trt.__version__),
        target=Target(sm=device.sm if device else request.sm, gpu=device.name if device else None,
                      ahead_of_time=backend.ahead_of_time),
        inputs=_tensor_specs(trt, [network.get_input(i) for i in range(network.num_inputs)]),
        outputs=_tensor_specs(trt, [network.get_output(i) for i in range(network.num_outputs)]),
        profile=BatchProfile(request.input_name, *(tuple(request.profile[key]) for key in ("min", "opt", "max"))),
        builder_optimization_level=request.opt_level,
        profiling_verbosity="detailed" if request.detailed_profile else "default",
        timing_cache=serialized.timing_cache,
        layers=parsed.layers,
        plugin_layers=len(parsed.plugin_layers),
        plugin_layer_names=parsed.plugin_layers,
        parse_seconds=round(parsed.seconds, 3),
        build_seconds=round(serialized.seconds, 3),
        engine_bytes=serialized.engine.nbytes,
        engine_sha256=hashlib.sha256(memoryview(serialized.engine)).hexdigest(),  # verified before every load
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        attention=request.attention,
    )


def _write_engine(engine_path: Path, serialized: Any, metadata: EngineMetadata) -> None:
    # The engine first, then the metadata: an engine without metadata is refused by check_engine_compatible.
    with atomic_path(engine_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(serialized)
    write_json(metadata_path(engine_path), metadata.to_json())


def run_build(request: BuildRequest) -> EngineMetadata:
    """Build in this process, which must be able to load the backend and have Polygraphy set up for it
    (TensorRT-RTX builds run in :func:`_run_in_child`): parse, build, then write the engine and its metadata."""
    backend = BACKENDS[request.backend]
    trt = polygraphy_bindings(backend)
    cancel = threading.Event()
    # Ctrl-C asks TensorRT to stop (the progress monitor returns False) instead of raising inside its C++ callbacks;
    # it is raised as KeyboardInterrupt once TensorRT has returned, replacing the error a cancelled build reports.
    with _polygraphy_log(backend, cancel.is_set) as errors, interrupts_deferred("the TensorRT build",
                                                                                on_interrupt=cancel.set):
        if request.plugin_library is not None:
            _load_plugin_library(trt, backend, request.plugin_library, errors)
        parsed = _parse(trt, backend, request, errors, cancel)
        log.info("build: %s %s building %s (%d layers, %d plugin layers)", backend.name, trt.__version__,
                 request.engine_path, parsed.layers, len(parsed.plugin_layers))
        serialized = _serialize(trt, backend, request, parsed, errors, cancel)
    metadata = _engine_metadata(trt, backend, request, parsed, serialized)
    engine_path = Path(request.engine_path)
    _write_engine(engine_path, serialized.engine, metadata)
    log.info("build: wrote %s (%.1f MB, %d layers, %d plugin layers, %.1f s) and %s", engine_path,
             serialized.engine.nbytes / 1e6, parsed.layers, len(parsed.plugin_layers), serialized.seconds,
             metadata_path(engine_path))
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
        env[POLYGRAPHY_RTX_VARIABLE] = "1"
        payload = {"request": dataclasses.asdict(request), "log_level": log.getEffectiveLevel()}
        command = [sys.executable, "-m", "pipeline.tensorrt.build_worker", json.dumps(payload)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
        try:
            stdout, _ = child.communicate()
        except BaseException:
            stop_child(child, partial_files=lambda: _partial_files(request))
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


#: Seconds a cancelled build may take to stop before it is killed: TensorRT-RTX stops within about a second
#: (2 cores) once the progress monitor asks it to, and Ctrl-C must end the command even when it does not.
CANCEL_GRACE_S = 30.0


def stop_child(child: subprocess.Popen, partial_files: Callable[[], list[Path]],
               grace_s: float = CANCEL_GRACE_S) -> None:
    """Forward Ctrl-C to ``child`` and wait for it to cancel and clean up; if it has not ended after ``grace_s``,
    kill it and remove what it left (``partial_files()``)."""
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("interrupt: the build process did not stop within %.0f s; killed it", grace_s)
        child.kill()
        child.wait()
        for path in partial_files():
            path.unlink(missing_ok=True)


def _partial_files(request: BuildRequest) -> list[Path]:
    """The temporary files a killed build child may leave (engine, metadata, timing cache: atomic_path's names)."""
    targets = [Path(request.engine_path), Path(request.engine_path).with_suffix(".json")]
    if request.timing_cache:
        targets.append(Path(request.timing_cache))
    return [path for target in targets for path in partial_files(target)]


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


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """A build's options as :func:`check_build_options` checked them; :func:`build_checked` trusts them."""

    backend: Backend  #: selected for this machine by :func:`pipeline.tensorrt.backends.select_backend`
    plugin_library: Path | None  #: an existing file; None: not needed (attention route "tensorrt")
    batch: tuple[int, int, int]  #: the optimization profile's (min, opt, max) batch
    opt_level: int  #: builder optimization level, 0..5
    sm: int  #: compute capability an ahead-of-time build targets
    embed_plugin: bool = False
    detailed_profile: bool = False
    sizes: SizeRange | None = None  #: the H×W range of a graph exported with dynamic H and W


def check_build_options(*, plugin_library: str | Path | None, batch: tuple[int, int, int], opt_level: int,
                        backend: str, sm: int, embed_plugin: bool = False,
                        detailed_profile: bool = False, sizes: SizeRange | None = None) -> BuildOptions:
    """The options, checked, with the backend selected for them, or the PipelineError a build would raise for them.
    Cheap (nothing is read or built): ``pipeline.make`` calls it before any stage."""
    plugin_library = None if plugin_library is None else Path(plugin_library)
    if plugin_library is not None and not plugin_library.is_file():
        raise PipelineError(f"plugin library {plugin_library} does not exist; {MAKE_PLUGIN_HINT} or pass the path "
                            "of yours")
    profile_shapes(tuple(batch), [None], "images")
    if not 0 <= opt_level <= 5:
        raise PipelineError(f"builder optimization level must be 0..5, got {opt_level}")
    return BuildOptions(select_backend(backend, sm), plugin_library, (batch[0], batch[1], batch[2]), opt_level, sm,
                        embed_plugin, detailed_profile, sizes)


def _checked_engine_path(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    if engine_path.suffix != ".engine":
        raise PipelineError(f"engine path {engine_path} must end in .engine (the metadata goes to <name>.json)")
    check_writable(engine_path)
    return engine_path


def _build_request(model: onnx.ModelProto, onnx_path: Path, engine_path: Path, options: BuildOptions,
                   timing_cache: str | Path | None, input_name: str | None) -> BuildRequest:
    """What building ``model`` (read from ``onnx_path``) takes. A graph of the ``tensorrt`` attention route (ONNX
    ``Attention`` nodes) takes no plugin library: ``options.plugin_library`` is ignored for it."""
    attention = graph_attention(node.op_type for node in model.graph.node)
    plugin_library = options.plugin_library if attention == "plugin" else None
    if plugin_library is None and attention == "plugin":
        raise PipelineError(f"{onnx_path} has no ONNX Attention nodes, so it needs the plugin library: "
                            f"{MAKE_PLUGIN_HINT}")
    if plugin_library is None and options.embed_plugin:
        raise PipelineError(f"{onnx_path} uses TensorRT's own attention: there is no plugin library to embed; "
                            "leave out --embed-plugin")
    input_name, dims = graph_input(model, input_name, onnx_path, dynamic_size=options.sizes is not None)
    return BuildRequest(
        onnx_path=str(onnx_path.resolve()), engine_path=str(engine_path.resolve()),
        plugin_library=None if plugin_library is None else str(plugin_library.resolve()),
        backend=options.backend.name, sm=options.sm, input_name=input_name,
        profile=profile_shapes(options.batch, dims, input_name, options.sizes),
        timing_cache=str(Path(timing_cache).resolve()) if timing_cache else None, opt_level=options.opt_level,
        embed_plugin=options.embed_plugin, detailed_profile=options.detailed_profile,
        precision=graph_precision(model), onnx_sha256=file_sha256(onnx_path),
        plugin_sha256=None if plugin_library is None else file_sha256(plugin_library), attention=attention)


def _run(request: BuildRequest, backend: Backend) -> EngineMetadata:
    """TensorRT-RTX builds in a child process (docs/design.md §4b says why), TensorRT in this one."""
    return _run_in_child(request, backend) if backend is TENSORRT_RTX else run_build(request)


def build_checked(onnx_path: str | Path, engine_path: str | Path, options: BuildOptions, *,
                  timing_cache: str | Path | None = None, input_name: str | None = None) -> EngineMetadata:
    """Build ``engine_path`` and ``<engine_path stem>.json`` from a strongly typed ONNX with ``options`` as
    :func:`check_build_options` returned them (not checked again, the backend not selected again); return the
    metadata. ``timing_cache`` is loaded if the file exists and saved after the build; ``input_name`` defaults to
    the graph's one input."""
    onnx_path, engine_path = Path(onnx_path), _checked_engine_path(engine_path)
    # The parser reads the file itself: the graph is dropped before the build, not held as a second copy.
    request = _build_request(read_onnx(onnx_path), onnx_path, engine_path, options, timing_cache, input_name)
    return _run(request, options.backend)


def build_engine(onnx_path: str | Path, engine_path: str | Path, *, plugin_library: str | Path | None,
                 batch: tuple[int, int, int] = DEFAULT_BATCH, backend: str = "auto", sm: int = 86,
                 timing_cache: str | Path | None = None, opt_level: int = 3, embed_plugin: bool = False,
                 input_name: str | None = None, detailed_profile: bool = False,
                 sizes: SizeRange | None = None) -> EngineMetadata:
    """:func:`check_build_options`, then :func:`build_checked`: the entry for a build on its own.

    ``batch`` is the optimization profile's (min, opt, max) batch; the other input dims come from the graph.
    ``backend``: ``auto``, ``tensorrt`` (this machine's GPU) or ``rtx`` (TensorRT-RTX, ahead of time for
    ``sm``). ``embed_plugin`` stores the plugin library inside the engine (``plugins_to_serialize``), so the runtime
    need not load it. A graph of the ``tensorrt`` attention route (ONNX ``Attention`` nodes) needs no plugin
    library: ``plugin_library`` is neither checked nor used for it.
    ``detailed_profile`` builds with ``ProfilingVerbosity.DETAILED`` so the engine inspector (``make profile``)
    can describe every layer. ``sizes``: the profile's H×W range, for a graph exported with dynamic H and W.
    """
    onnx_path, engine_path = Path(onnx_path), _checked_engine_path(engine_path)
    check = functools.partial(check_build_options, batch=batch, opt_level=opt_level, backend=backend, sm=sm,
                              embed_plugin=embed_plugin, detailed_profile=detailed_profile, sizes=sizes)
    try:
        model = read_onnx(onnx_path)
    except PipelineError:  # no graph to tell the route: the options are checked as the plugin route's first
        check(plugin_library=plugin_library)
        raise
    options = check(plugin_library=plugin_library if graph_attention(n.op_type for n in model.graph.node) == "plugin"
                    else None)
    request = _build_request(model, onnx_path, engine_path, options, timing_cache, input_name)
    del model  # the parser reads the file itself: do not hold a second copy of the weights during the build
    return _run(request, options.backend)
