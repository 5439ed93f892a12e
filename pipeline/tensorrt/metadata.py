"""What an engine was built from and for: the ``<name>.json`` beside ``<name>.engine`` as frozen records.

The JSON is the file format users ship with their engines: :meth:`EngineMetadata.to_json` writes the keys the
build always wrote, and :meth:`EngineMetadata.from_json` reads them (keys it does not know are ignored, so a newer
file with more keys still reads). No TensorRT or torch here: ``check-engine`` and verification on a CPU read
metadata without either.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.common.records import JsonRecord

REBUILD = "rebuild it on this machine with `python -m pipeline build` (or pipeline.tensorrt.build.build_engine)"


def metadata_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


@dataclasses.dataclass(frozen=True)
class OnnxSource(JsonRecord):
    path: str
    sha256: str



@dataclasses.dataclass(frozen=True)
class PluginLibrary(JsonRecord):
    library: str
    sha256: str
    embedded: bool  #: stored inside the engine (``plugins_to_serialize``): the file on disk no longer matters



@dataclasses.dataclass(frozen=True)
class BuiltWith(JsonRecord):
    """The ``backend`` entry: which TensorRT built the engine."""

    name: str  #: "tensorrt" or "tensorrt_rtx"
    version: str



@dataclasses.dataclass(frozen=True)
class Target(JsonRecord):
    sm: int  #: compute capability as major*10 + minor
    gpu: str | None  #: the GPU it was built on; None when built ahead of time
    ahead_of_time: bool



@dataclasses.dataclass(frozen=True)
class TensorSpec(JsonRecord):
    name: str
    dtype: str  #: numpy's name, e.g. "float32"
    shape: tuple[int, ...]  #: -1 where dynamic



@dataclasses.dataclass(frozen=True)
class BatchProfile(JsonRecord):
    """The optimization profile of the image input: full input shapes, e.g. (1, 3, 320, 320), (8, 3, 800, 1344),
    (32, 3, 1344, 1344) for an engine taking a range of image sizes (``--img-size min:opt:max``); a fixed-size
    engine's differ in the batch only."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def image_range(self) -> SizeRange:
        """The (H, W) range: the last two dimensions of the shapes."""
        return SizeRange(tuple(self.min[-2:]), tuple(self.opt[-2:]), tuple(self.max[-2:]))



@dataclasses.dataclass(frozen=True)
class TimingCacheUse(JsonRecord):
    path: str
    loaded_bytes: int
    saved_bytes: int



@dataclasses.dataclass(frozen=True)
class EngineMetadata(JsonRecord):
    """Everything ``<name>.json`` records, in the order it is written."""

    engine: str  #: the engine's file name
    precision: str  #: fp32, fp16 or int8: what the typed ONNX decided
    onnx: OnnxSource
    plugin: PluginLibrary | None  #: None: the engine has no plugin layers (``attention`` "tensorrt")
    backend: BuiltWith
    target: Target
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: BatchProfile
    builder_optimization_level: int
    profiling_verbosity: str  #: "detailed" or "default"
    timing_cache: TimingCacheUse | None
    layers: int
    plugin_layers: int
    plugin_layer_names: tuple[str, ...]
    parse_seconds: float
    build_seconds: float
    engine_bytes: int
    engine_sha256: str  #: verified before every load
    built_at: str  #: ISO 8601, UTC
    attention: str = "plugin"  #: the route (pipeline.common.attention): "tensorrt" is TensorRT's own, no plugin library

    @property
    def embeds_plugin(self) -> bool:
        return self.plugin is not None and self.plugin.embedded

    @property
    def needs_plugin_library(self) -> bool:
        """Whether a plugin library file must be loaded before the engine: it has plugin layers and no embedded one."""
        return self.plugin is not None and not self.plugin.embedded and self.plugin_layers > 0

    @property
    def dynamic_size(self) -> bool:
        """Whether the image input takes a range of sizes (-1 beyond the batch dimension, ``--img-size
        min:opt:max``); :attr:`BatchProfile.image_range` is then the range."""
        return any(spec.name == self.profile.input and -1 in spec.shape[1:] for spec in self.inputs)

    @classmethod
    def read(cls, engine_path: str | Path) -> EngineMetadata:
        """The metadata beside ``engine_path``, or the PipelineError that says to rebuild the engine."""
        path = metadata_path(engine_path)
        if not path.is_file():
            raise PipelineError(f"{path} is missing: it records what {engine_path} was built for; {REBUILD}")
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PipelineError(f"{path} is not the JSON the build wrote ({error}); {REBUILD}") from None
        # A truncated or corrupted engine must fail with our message, not inside TensorRT's deserializer.
        if isinstance(data, dict) and "engine_sha256" not in data:
            raise PipelineError(f"{path} records no engine checksum (written by an older swin-trt); {REBUILD}")
        try:
            return cls.from_json(data)
        except KeyError as error:
            raise PipelineError(f"{path} has no {error} entry (written by an older swin-trt?); {REBUILD}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise PipelineError(f"{path} is not the metadata the build wrote ({error}); {REBUILD}") from None


@dataclasses.dataclass(frozen=True)
class Runtime(JsonRecord):
    """A TensorRT runtime on this machine: which one, its version, and the GPU it would run on (if any)."""

    backend: str
    version: str
    sm: int | None
    gpu: str | None


@dataclasses.dataclass(frozen=True)
class EngineCheck(JsonRecord):
    """What ``check_engine_compatible`` found: the engine's metadata, the runtime that can load it and the plugin
    library it needs."""

    metadata: EngineMetadata
    runtime: Runtime | None  #: None: no TensorRT here, so only the files were checked
    plugin_library: Path | None = None  #: the file found and checked (None: the engine embeds it)

    def verdict(self) -> str:
        """What ``check-engine`` prints: whether this machine can run the engine, and the few facts behind it."""
        meta = self.metadata
        target = f"SM{meta.target.sm}" + (f" ({meta.target.gpu})" if meta.target.gpu else "")
        plugin = ("embedded" if meta.embeds_plugin else "none needed" if self.plugin_library is None
                  else f"{self.plugin_library} (sha256 matches)")
        if self.runtime is None:
            verdict = "files OK: size, sha256 and plugin library match the build's record; no TensorRT runtime here, " \
                      "so loading it was not checked"
        elif self.runtime.sm is None:
            verdict = (f"files OK and {self.runtime.backend} {self.runtime.version} here is what built it, but there "
                       "is no GPU here to run it on")
        else:
            verdict = f"OK: {self.runtime.backend} {self.runtime.version} on {self.runtime.gpu} can run it"
        inputs = ", ".join(input_text(t, meta.profile) for t in meta.inputs)
        return "\n".join([f"{meta.engine}: {verdict}",
                          f"  built with {meta.backend.name} {meta.backend.version} for {target}, {meta.precision}, "
                          f"batch {meta.profile.min[0]}..{meta.profile.max[0]}, attention {meta.attention}",
                          f"  inputs {inputs}; {len(meta.outputs)} output(s)",
                          f"  plugin library: {plugin}", "  (--json prints everything checked)"])


def input_text(spec: TensorSpec, profile: BatchProfile) -> str:
    """``images float32 [-1, 3, 224, 224]``; for the profile's input when a dimension beyond the batch is dynamic,
    each dynamic dimension's range and the optimum: ``images float32 [1..32, 3, 320..1344, 320..1344] (opt
    8x3x800x1344)``."""
    if spec.name != profile.input or -1 not in spec.shape[1:]:
        return f"{spec.name} {spec.dtype} {list(spec.shape)}"
    dims = [str(d) if d != -1 else f"{low}..{high}" if low != high else str(low)
            for d, low, high in zip(spec.shape, profile.min, profile.max, strict=True)]
    return f"{spec.name} {spec.dtype} [{', '.join(dims)}] (opt {'x'.join(map(str, profile.opt))})"
