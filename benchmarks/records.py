"""The benchmarks' result files as typed records: a whole-network run (:class:`BenchRun`, with a record per route
and per batch) and a kernel benchmark run (:class:`KernelBenchRun`), and the GPU load both carry.

They derive from :class:`pipeline.common.records.JsonRecord`; ``to_json``/``from_json`` keep the files' keys, so the
files committed under benchmarks/results/ load as they are. ``environment`` stays the open, best-effort object of
:func:`benchmarks.environment.collect`, and a route's ``details`` what that kind of route reports about itself.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, TypeVar

from benchmarks.timers import Budget
from pipeline.common.records import JsonRecord, to_plain
from pipeline.make import ModelRecord

R = TypeVar("R", bound="BenchRecord")

#: Field metadata: the key is written only while the field is not None (a skipped batch has no statistics).
OMIT = {"omit": True}
#: Field metadata: a nested record whose keys sit in this record's own object (None: none of them are there).
FLAT = {"flat": True}


def renamed(key: str) -> dict[str, str]:
    """Field metadata: the field's JSON key (``routes`` is "paths" in the files)."""
    return {"key": key}


@functools.cache
def _flat_type(cls: type, name: str) -> type[JsonRecord]:
    hint = typing.get_type_hints(cls)[name]
    return next(a for a in (hint, *typing.get_args(hint)) if isinstance(a, type) and issubclass(a, JsonRecord))


class BenchRecord(JsonRecord):
    """A JsonRecord whose fields may be renamed, omitted while None, or flattened (the metadata above)."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and (field.metadata.get("omit") or field.metadata.get("flat")):
                continue
            if field.metadata.get("flat"):
                data |= value.to_json()
            else:
                data[field.metadata.get("key", field.name)] = to_plain(value)
        return data

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        values = dict(data)
        for field in dataclasses.fields(cls):
            if field.metadata.get("key") in data:
                values[field.name] = data[field.metadata["key"]]
            if field.metadata.get("flat"):
                names = {f.name for f in dataclasses.fields(_flat_type(cls, field.name))}
                values[field.name] = data if names & data.keys() else None
        return super().from_json(values)


# ---------------------------------------------------------------------------------------------------------
# Shared


@dataclasses.dataclass(frozen=True)
class Spread(JsonRecord):
    min: float
    median: float
    max: float


@dataclasses.dataclass(frozen=True)
class GpuLoad(BenchRecord):
    """SM clock and power sampled while GPU work was timed (benchmarks.gpu_load); ``reason`` where none was."""

    samples: int
    sm_clock_mhz: Spread | None = dataclasses.field(default=None, metadata=OMIT)
    power_w: Spread | None = dataclasses.field(default=None, metadata=OMIT)
    reason: str | None = dataclasses.field(default=None, metadata=OMIT)


# ---------------------------------------------------------------------------------------------------------
# A whole-network run (benchmarks.bench)


@dataclasses.dataclass(frozen=True)
class LatencySummary(JsonRecord):
    """Per-iteration latencies of one batch (benchmarks.stats.summarize), the numbers trtexec prints."""

    iterations: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput_img_s: float


@dataclasses.dataclass(frozen=True)
class Measured(LatencySummary):
    """A measured batch: its statistics, why the timed loop stopped, and the device memory the route held."""

    stopped_by: str  #: "iterations" or "time-budget"
    elapsed_s: float
    memory_mb: float | None


@dataclasses.dataclass(frozen=True)
class BatchResult(BenchRecord):
    """One batch of one route: ``measured``, or ``skipped`` with the reason."""

    batch: int
    status: str
    reason: str | None = dataclasses.field(default=None, metadata=OMIT)
    measured: Measured | None = dataclasses.field(default=None, metadata=FLAT)
    gpu_load: GpuLoad | None = dataclasses.field(default=None, metadata=OMIT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RouteRecord(BenchRecord):
    """One deployment route at one precision: ``measured`` (some batch was), ``skipped`` or ``failed`` with the
    reason. ``cuda_graph`` is None in files older than it (they kept it in ``details``)."""

    name: str
    precision: str
    device: str
    note: str = ""
    cuda_graph: bool | None = None
    timer: str | None = None
    budget: Budget | None = None
    results: tuple[BatchResult, ...] = ()
    status: str = "skipped"
    reason: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    gpu_load: GpuLoad | None = dataclasses.field(default=None, metadata=OMIT)

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    def measured_results(self) -> list[BatchResult]:
        return [r for r in self.results if r.measured is not None]

    def graph_used(self) -> bool | None:
        """Whether a CUDA route's steps replayed a CUDA graph; None: not a CUDA route, or not recorded."""
        if self.device != "cuda":
            return None
        used = self.cuda_graph if self.cuda_graph is not None else self.details.get("cuda_graph")
        return None if used is None else bool(used)


@dataclasses.dataclass(frozen=True)
class GoalVerdict(BenchRecord):
    """A goal of the run (benchmarks.report.GOALS): its ratio and verdict, or why it could not be evaluated."""

    id: str
    goal: str
    target: float
    value: float | None = None
    met: bool | None = None
    reason: str | None = dataclasses.field(default=None, metadata=OMIT)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchSettings(BenchRecord):
    """Batches and budgets by device ("cuda", "cpu"), and the options the run had."""

    batches: dict[str, tuple[int, ...]]
    budgets: dict[str, Budget]
    cuda_graphs: bool
    gpu_present: bool | None = None
    cpu_routes: bool | None = dataclasses.field(default=None, metadata=renamed("cpu_paths"))
    compile_budget_s: float | None = None
    precisions: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class OnnxInputs(JsonRecord):
    """The ONNX files the ONNX and TensorRT routes started from, and where they came from (None: not needed)."""

    onnx: str | None
    surgered_onnx: str | None
    source: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchRun(BenchRecord):
    """A run of ``python -m benchmarks.bench``: rewritten as each route finishes (``complete`` False until the end;
    None in files older than it, which were written once, complete)."""

    schema: int = 1
    variant: str
    image_size: tuple[int, int]
    model: ModelRecord | None = None
    created: str
    device: str
    command: tuple[str, ...] = ()
    complete: bool | None = None
    finished: str | None = None
    environment: dict[str, Any]
    settings: BenchSettings
    inputs: OnnxInputs
    gpu_load: GpuLoad | None = None
    routes: tuple[RouteRecord, ...] = dataclasses.field(default=(), metadata=renamed("paths"))
    pending: tuple[str, ...] = ()
    goals: tuple[GoalVerdict, ...] = ()
    interrupted_during: str | None = dataclasses.field(default=None, metadata=OMIT)


# ---------------------------------------------------------------------------------------------------------
# A kernel benchmark run (benchmarks.kernel_bench)


@dataclasses.dataclass(frozen=True)
class KernelStage(JsonRecord):
    model: str  #: "Swin-T"
    stage: int  #: 1..4
    blocks: int


@dataclasses.dataclass(frozen=True)
class CandidateTiming(JsonRecord):
    """One candidate's µs per call (median of the trials, and their range) and the bandwidth that implies."""

    us: float
    us_min: float
    us_max: float
    gbs: float
    fraction_of_peak: float


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelRow(JsonRecord):
    """One (shape, batch, dtype) of the kernel benchmark. In the file each candidate's timing is ``<name>_us``,
    ``<name>_us_min``… and each speedup (the candidate's time over the kernel's) ``speedup_vs_<name>``."""

    shape: str
    models: tuple[str, ...]
    stages: tuple[KernelStage, ...]
    dtype: str
    batch: int
    resolution: int
    tokens: int
    channels: int
    heads: int
    window: int
    shift: int
    bytes: int
    peak_dram_gbs: float
    timings: dict[str, CandidateTiming] = dataclasses.field(default_factory=dict)
    speedups: dict[str, float] = dataclasses.field(default_factory=dict)
    max_abs_error_vs_eager: dict[str, float] | None = None
    failed: dict[str, str] | None = None
    gpu_load: GpuLoad | None = None

    _OPTIONAL = ("max_abs_error_vs_eager", "failed", "gpu_load")
    _TIMING_KEYS = tuple(f.name for f in dataclasses.fields(CandidateTiming))

    def to_json(self) -> dict[str, Any]:
        data = {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)
                if f.name not in ("timings", "speedups", *self._OPTIONAL)}
        for name, timing in self.timings.items():
            data |= {f"{name}_{key}": value for key, value in timing.to_json().items()}
        data |= {f"speedup_vs_{name}": value for name, value in self.speedups.items()}
        return data | {key: to_plain(getattr(self, key)) for key in self._OPTIONAL if getattr(self, key) is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KernelRow:
        row = super().from_json(data)
        names = [key.removesuffix("_us") for key in data if key.endswith("_us")]
        timings = {name: CandidateTiming.from_json({key: data[f"{name}_{key}"] for key in cls._TIMING_KEYS})
                   for name in names}
        speedups = {key.removeprefix("speedup_vs_"): float(value) for key, value in data.items()
                    if key.startswith("speedup_vs_")}
        return dataclasses.replace(row, timings=timings, speedups=speedups)


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelVerdict(BenchRecord):
    """A kernel goal (benchmarks.kernel_bench.KERNEL_GOALS) on one row; ``row`` None: no row was selected. Each
    carries what judging it needs, so a file stays readable after the goals change."""

    id: str
    goal: str
    dtype: str
    comparison: str
    target: float
    row: str | None
    batch: int | None
    value: float | None
    met: bool | None
    reason: str | None = dataclasses.field(default=None, metadata=OMIT)


@dataclasses.dataclass(frozen=True)
class NetworkAttention(JsonRecord):
    """A model's window-attention time at one dtype and batch: Σ blocks × µs over the benchmarked stages."""

    model: str
    dtype: str
    batch: int
    stages: tuple[int, ...]
    blocks: int
    us: dict[str, float]


@dataclasses.dataclass(frozen=True)
class KernelBenchConfig(JsonRecord):
    candidates: tuple[str, ...]
    calls_per_graph: int
    min_replays_per_trial: int
    min_trial_ms: float
    trials: int
    cuda_graphs: bool
    compile_reset_per_row: bool
    baseline: str | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class KernelBenchRun(JsonRecord):
    """A run of ``python -m benchmarks.kernel_bench``. ``environment`` adds the device's DRAM peak and the GPU load
    under the timed rows to benchmarks.environment's record. ``kernel_resources``: pipeline.kernels.cuobjdump's
    records of the timed libraries, for reading (nothing reads them back)."""

    environment: dict[str, Any]
    config: KernelBenchConfig
    complete: bool
    results: tuple[KernelRow, ...]
    network_attention_us: tuple[NetworkAttention, ...]
    kernel_resources: tuple[dict[str, Any], ...]
    goals: tuple[KernelVerdict, ...]

    @staticmethod
    def current_format(data: dict[str, Any]) -> bool:
        """Whether a file is of this format: the first GPU run's files (2026-11-25) predate it and have no goals."""
        return "goals" in data

    @property
    def gpu_load(self) -> GpuLoad | None:
        load = self.environment.get("gpu_load")
        return None if load is None else GpuLoad.from_json(load)


# ---------------------------------------------------------------------------------------------------------
# make profile (benchmarks/profile.py): build/swin_<v>/profile.json


@dataclasses.dataclass(frozen=True)
class LayerTime(JsonRecord):
    """One engine layer's average time over the profiled runs and its share of their sum."""

    name: str
    average_ms: float
    percent: float


@dataclasses.dataclass(frozen=True)
class LayerSummary(JsonRecord):
    """Where an engine's time goes: the plugin layers, TensorRT's own attention layers (how many blocks became one
    layer), Myelin's fused regions and any Softmax left as a layer of its own (attention not fused)."""

    total_ms: float
    layers: int
    plugin_layers: int
    plugin_ms: float
    plugin_percent: float
    myelin_regions: int
    myelin_percent: float
    standalone_softmax_layers: tuple[str, ...]
    attention_fused_by_myelin: bool
    attention_layers: int
    attention_percent: float
    attention_blocks: int
    attention_blocks_in_one_layer: int


@dataclasses.dataclass(frozen=True)
class EngineProfile(JsonRecord):
    """One engine profiled: ``inspector`` is TensorRT's engine inspector's JSON, as TensorRT writes it."""

    engine: str
    batch: int
    iterations: int
    summary: LayerSummary
    layers: tuple[LayerTime, ...]
    inspector: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Skipped(JsonRecord):
    """A route that was not profiled."""

    skipped: str  #: why


@dataclasses.dataclass(frozen=True)
class ProfileRun(BenchRecord):
    """``profile.json``: the plugin engine's profile, and TensorRT's own attention's and the plain ONNX's engines'
    (each skipped with the reason when it could not be built or run)."""

    variant: str
    precision: str
    plugin_engine: EngineProfile
    attention_engine: EngineProfile | Skipped
    native_engine: EngineProfile | Skipped | None = dataclasses.field(default=None, metadata=OMIT)

