"""Loading an engine: find its plugin library, refuse one built for another backend, version or GPU before
deserializing it (:func:`check_engine_compatible`, from the metadata JSON beside it), and deserialize it with the
backend that built it (:func:`load_engine`). Nothing here builds: the runtime, serving and verification import
this module, never :mod:`pipeline.tensorrt.build`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.common.artifacts import file_sha256
from pipeline.common.errors import PipelineError
from pipeline.tensorrt.backends import (
    MAKE_PLUGIN_HINT,
    NO_GPU_MESSAGES,
    TENSORRT,
    TENSORRT_RTX,
    cuda_device,
    installed_runtimes,
    polygraphy_bindings,
)
from pipeline.tensorrt.metadata import REBUILD, EngineCheck, EngineMetadata, Runtime, metadata_path

log = logging.getLogger(__name__)


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
                            f"it is (--plugin, or SwinEngine's plugin_library), or {MAKE_PLUGIN_HINT}")
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
                expected = no_gpu and any(m in message for m in NO_GPU_MESSAGES)
                log.log(logging.DEBUG if expected else levels.get(level, logging.DEBUG), "%s: %s", trt.__name__,
                        message)

        _FORWARDING_LOGGERS[trt.__name__] = Forward()
    return _FORWARDING_LOGGERS[trt.__name__]


def engine_runtime(metadata: EngineMetadata) -> tuple[Any, Any, Any]:
    """(bindings, ``Runtime``, its logger) of the backend that built the engine. TensorRT's runtime logs through
    Polygraphy's logger, as the build does; TensorRT-RTX's through :func:`_forwarding_logger`, since Polygraphy in
    this process is normally loaded for TensorRT (it picks one per process: :func:`polygraphy_bindings`)."""
    if metadata.backend.name == TENSORRT_RTX.name:
        trt = TENSORRT_RTX.bindings()
        logger = _forwarding_logger(trt)
    else:
        trt = polygraphy_bindings(TENSORRT)
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
                                f"{MAKE_PLUGIN_HINT}")
    runtime.engine_host_code_allowed = metadata.embeds_plugin
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise PipelineError(f"{metadata.backend.name} could not deserialize {engine_path}; {REBUILD}")
    return engine
