"""Benchmark the SwinWindowAttention kernels against PyTorch on the stage shapes of every Swin variant.

Candidates (``CANDIDATES``: the CUDA kernel and the Triton image through the C ABI, Triton JIT per config, another
revision's library with --baseline, the op, timm-style eager, SDPA, torch.compile), rows and goals: docs/design.md
§8b, §8d. Needs a CUDA GPU with torch, nvcc and cmake (no TensorRT). Writes
build/bench/kernel_bench_<device>_<UTC time>.json (rewritten after every row) and prints the goals' verdicts last.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.environment import collect as collect_environment
from benchmarks.environment import device_slug
from benchmarks.gpu_load import GpuLoadSampler
from benchmarks.records import (
    CandidateTiming,
    KernelBenchConfig,
    KernelBenchRun,
    KernelRow,
    KernelStage,
    KernelVerdict,
    NetworkAttention,
)
from benchmarks.report import RUNS_DIR, goal_lines, start_run, timestamped, update_run, utc_now
from benchmarks.stats import percentile
from benchmarks.timers import capture
from pipeline.common.errors import PipelineError
from pipeline.common.variants import VARIANTS
from pipeline.kernels.cmake import arch_build_dir, build_native
from pipeline.kernels.cuobjdump import kernel_resources
from pipeline.kernels.native import SwinAttention
from pipeline.kernels.ops import enable_cuda  # also registers torch.ops.swin.window_attention, the "op" candidate
from pipeline.kernels.reference import shift_mask
from pipeline.kernels.selection import CONFIGS, KERNEL_ENV, KernelConfig
from pipeline.kernels.window_attention import window_attention as triton_window_attention

#: Candidates in report order; the first is the one the others are compared with.
CANDIDATES = ("kernel", "triton", "triton-jit", "baseline", "op", "eager", "sdpa", "compile")
#: The Triton kernel's JIT candidates, one per config of the tuning space ("triton-jit" on the command line).
TRITON_JIT = {f"triton-{config.name}": config for config in CONFIGS}


def expand_candidates(names: Sequence[str]) -> list[str]:
    """``triton-jit`` stands for one candidate per config of the Triton kernel's tuning space."""
    return [expanded for name in names for expanded in (TRITON_JIT if name == "triton-jit" else [name])]
#: Stages benchmarked per variant: all four at 224; at 384 the fourth stage (12×12) is a single unshifted window.
DEFAULT_STAGES = {"T": 4, "S": 4, "B": 4, "B384": 3, "L384": 3}
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
ELEMENT_BYTES = {"fp16": 2, "fp32": 4}

#: Theoretical DRAM bandwidth (GB/s) by a substring of the device name, first match wins (so the specific names
#: first). The driver's memory clock × bus width is a fallback only: HBM parts report it inconsistently.
PEAK_BANDWIDTH_GBS = (
    ("GH200", 4000), ("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100 80GB HBM3", 3350),
    ("H100 SXM", 3350), ("H800", 3350), ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935),
    ("A100-SXM4-40GB", 1555), ("A100-PCIE-40GB", 1555), ("L40S", 864), ("L40", 864), ("L4", 300),
    ("A10G", 600), ("A10", 600), ("RTX 4090", 1008), ("RTX 6000 Ada", 960), ("T4", 320), ("V100", 900),
)


# ---------------------------------------------------------------------------------------------------------
# Pure parts: rows, bytes, peaks, aggregation (tests/test_kernel_bench.py)


@dataclasses.dataclass(frozen=True)
class Shape:
    """One window-attention shape (square stage): what the kernel sees, and the model stages that have it."""

    resolution: int  #: H = W
    channels: int
    heads: int
    window: int
    shift: int
    stages: tuple[tuple[str, int, int], ...]  #: (model, stage 1..4, blocks in that stage) with this shape

    @property
    def tokens(self) -> int:
        return self.resolution * self.resolution

    @property
    def label(self) -> str:
        return "/".join(f"Swin-{model} s{stage}" for model, stage, _ in self.stages)

    def attributes(self) -> dict[str, int | float]:
        """The node attributes (``pipeline.kernels.reference`` keywords) of this shape."""
        return {"height": self.resolution, "width": self.resolution, "window_size": self.window,
                "shift_size": self.shift, "num_heads": self.heads, "scale": (self.channels // self.heads) ** -0.5}


def stage_shapes(stages: dict[str, int] | None = None) -> list[Shape]:
    """The distinct shapes of the first ``stages[variant]`` stages of each variant at its own image size, in the
    order first met; a stage's blocks shift by window // 2 unless it fits in one window (as the model does)."""
    found: dict[tuple[int, int, int, int, int], list[tuple[str, int, int]]] = {}
    for variant, count in (DEFAULT_STAGES if stages is None else stages).items():
        config = VARIANTS[variant.upper()]
        for i in range(count):
            resolution = config.img_size // config.patch_size // 2**i
            m = config.window_size
            key = (resolution, config.stage_dim(i), config.num_heads[i], m, m // 2 if resolution > m else 0)
            found.setdefault(key, []).append((variant.upper(), i + 1, config.depths[i]))
    return [Shape(*key, stages=tuple(models)) for key, models in found.items()]


def bench_rows(shapes: Sequence[Shape], batches: Iterable[int], dtypes: Iterable[str]) -> list[tuple[Shape, int, str]]:
    """Every (shape, batch, dtype) to time: dtype outermost, then shape, then batch."""
    batches = list(batches)
    return [(shape, batch, dtype) for dtype in dtypes for shape in shapes for batch in batches]


def bytes_moved(shape: Shape, batch: int, element_bytes: int) -> int:
    """The least DRAM traffic of one node: qkv [B, T, 3C], rel_bias [heads, N, N] and qkv_bias [3C] read once,
    the output [B, T, C] written once (the shift mask is index arithmetic, never read)."""
    n = shape.window * shape.window
    elements = batch * shape.tokens * 4 * shape.channels + shape.heads * n * n + 3 * shape.channels
    return elements * element_bytes


def peak_bandwidth_gbs(name: str, memory_clock_khz: int = 0, bus_width_bits: int = 0) -> tuple[float, str]:
    """(Peak DRAM GB/s, where it came from): the table by device name, else clock × bus width (double data
    rate), else NaN."""
    for pattern, value in PEAK_BANDWIDTH_GBS:
        if pattern in name:
            return float(value), "table"
    if memory_clock_khz and bus_width_bits:
        return 2 * memory_clock_khz * 1e3 * bus_width_bits / 8 / 1e9, "cudaDeviceProp"
    return float("nan"), "unknown"


def per_call_us(elapsed_ms: Sequence[float], replays: int, calls: int) -> list[float]:
    """Microseconds per call for each timed trial of ``replays`` graph replays of ``calls`` calls each."""
    if replays < 1 or calls < 1:
        raise ValueError(f"need replays >= 1 and calls >= 1, got {replays} and {calls}")
    return [ms * 1e3 / (replays * calls) for ms in elapsed_ms]


def summarize_row(shape: Shape, batch: int, dtype: str, timings_us: dict[str, Sequence[float]], peak_gbs: float,
                  errors: dict[str, float] | None = None, failures: dict[str, str] | None = None) -> KernelRow:
    """One row of the report from the per-trial µs of each candidate that ran.

    Per candidate: the median µs over trials (and min/max), the bandwidth the row's :func:`bytes_moved` implies at
    that time (effective for candidates that move more) and its fraction of ``peak_gbs``; ``speedups`` holds each
    candidate's time over the kernel's.
    """
    moved = bytes_moved(shape, batch, ELEMENT_BYTES[dtype])
    timings = {}
    for name in sorted(timings_us, key=lambda n: CANDIDATES.index(n) if n in CANDIDATES else len(CANDIDATES)):
        trials = sorted(timings_us[name])
        if trials:
            median = percentile(trials, 50)
            gbs = moved / (median * 1e-6) / 1e9
            timings[name] = CandidateTiming(median, trials[0], trials[-1], gbs, gbs / peak_gbs)
    kernel = timings.get("kernel")
    speedups = {name: timings[name].us / kernel.us for name in CANDIDATES[1:] if name in timings} if kernel else {}
    return KernelRow(shape=shape.label, models=tuple(f"Swin-{model}" for model, _, _ in shape.stages),
                     stages=tuple(KernelStage(f"Swin-{model}", stage, blocks) for model, stage, blocks in shape.stages),
                     dtype=dtype, batch=batch, resolution=shape.resolution, tokens=shape.tokens,
                     channels=shape.channels, heads=shape.heads, window=shape.window, shift=shape.shift, bytes=moved,
                     peak_dram_gbs=peak_gbs, timings=timings, speedups=speedups,
                     max_abs_error_vs_eager=dict(errors) if errors else None,
                     failed=dict(failures) if failures else None)


@dataclasses.dataclass(frozen=True)
class KernelGoal:
    """A target every selected row must meet: rows of ``dtype`` at one of ``batches`` whose stages include one of
    ``stages`` ((model, stage) pairs; None: every row), ``metric`` compared with ``target``."""

    id: str
    goal: str
    dtype: str
    batches: tuple[int, ...]
    stages: tuple[tuple[str, int], ...] | None
    metric: str
    comparison: str  #: ">=" or "<="
    target: float

    def metric_of(self, row: KernelRow) -> float | None:
        """This goal's metric on ``row`` (None: not measured): ``<candidate>_us``, ``<candidate>_fraction_of_peak``
        or ``speedup_vs_<candidate>``."""
        if self.metric.startswith("speedup_vs_"):
            return row.speedups.get(self.metric.removeprefix("speedup_vs_"))
        for field in ("fraction_of_peak", "us"):
            if self.metric.endswith(f"_{field}"):
                timing = row.timings.get(self.metric.removesuffix(f"_{field}"))
                return None if timing is None else getattr(timing, field)
        raise ValueError(f"unknown kernel metric {self.metric!r}")

    def selects(self, row: KernelRow) -> bool:
        wanted = set(self.stages) if self.stages is not None else None
        return row.dtype == self.dtype and row.batch in self.batches and (
            wanted is None or bool(wanted & {(s.model, s.stage) for s in row.stages}))


_WINDOW_7_STAGES = tuple((f"Swin-{model}", stage) for model in ("T", "B") for stage in (1, 2, 3))
#: Issue 11's targets on an H100/H200 (FP16: the precision engines deploy).
KERNEL_GOALS = (
    KernelGoal("bandwidth_w7_b64", "FP16 batch 64, window 7 (Swin-T/B stages 1-3): >= 60% of DRAM peak", "fp16",
               (64,), _WINDOW_7_STAGES, "kernel_fraction_of_peak", ">=", 0.60),
    KernelGoal("vs_compile_w7_b64", "FP16 batch 64, window 7 (Swin-T/B stages 1-3): >= 2.5x torch.compile", "fp16",
               (64,), _WINDOW_7_STAGES, "speedup_vs_compile", ">=", 2.5),
    KernelGoal("bandwidth_w12", "FP16 batch 8 and 64, window 12 (Swin-B-384 stages 1-3): >= 40% of DRAM peak",
               "fp16", (8, 64), tuple(("Swin-B384", stage) for stage in (1, 2, 3)), "kernel_fraction_of_peak", ">=",
               0.40),
    KernelGoal("latency_b1", "FP16 batch 1, every stage: kernel <= 10 us (graph-replayed)", "fp16", (1,), None,
               "kernel_us", "<=", 10.0),
)


def evaluate_kernel_goals(rows: Sequence[KernelRow], goals: Sequence[KernelGoal] = KERNEL_GOALS) -> list[KernelVerdict]:
    """Per goal and selected row: the value and whether it meets the target (None, with the reason, where the row
    or its metric was not measured, e.g. torch.compile skipped); a goal whose stages have no row at all says so."""
    verdicts = []
    for goal in goals:
        base = dict(id=goal.id, goal=goal.goal, dtype=goal.dtype, comparison=goal.comparison, target=goal.target)
        selected = [row for row in rows if goal.selects(row)]
        if not selected:
            verdicts.append(KernelVerdict(**base, row=None, batch=None, value=None, met=None, reason=f"no "
                                          f"{goal.dtype} row at batch {'/'.join(map(str, goal.batches))} measured"))
        for row in selected:
            value = goal.metric_of(row)
            met = None if value is None else value >= goal.target if goal.comparison == ">=" else value <= goal.target
            verdicts.append(KernelVerdict(**base, row=row.shape, batch=row.batch, value=value, met=met,
                                          reason=f"{goal.metric} not measured" if value is None else None))
    return verdicts


def network_attention_us(rows: Iterable[KernelRow], candidates: Sequence[str] = CANDIDATES) -> list[NetworkAttention]:
    """Per model, dtype and batch: the window-attention time of the benchmarked stages, Σ blocks × µs per row, for
    each candidate timed on every one of those stages (a candidate missing on one is left out)."""
    stages: dict[tuple[str, str, int], list[KernelStage]] = {}
    us: dict[tuple[str, str, int], dict[str, float]] = {}
    missing: dict[tuple[str, str, int], set[str]] = {}
    for row in rows:
        for stage in row.stages:
            key = (stage.model, row.dtype, row.batch)
            stages.setdefault(key, []).append(stage)
            totals = us.setdefault(key, {})
            for name in candidates:
                if name in row.timings:
                    totals[name] = totals.get(name, 0.0) + stage.blocks * row.timings[name].us
                else:
                    missing.setdefault(key, set()).add(name)
    return [NetworkAttention(*key, tuple(sorted(s.stage for s in stages[key])), sum(s.blocks for s in stages[key]),
                             {name: v for name, v in us[key].items() if name not in missing.get(key, set())})
            for key in stages]


# ---------------------------------------------------------------------------------------------------------
# The candidates (GPU)


def eager_attention(qkv, rel_bias, mask, *, res, window, shift, heads, scale):
    """timm-style window attention on qkv; mask [nW, N, N] or None."""
    batch, _, three_c = qkv.shape
    c, m = three_c // 3, window
    x = qkv.view(batch, res, res, three_c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(batch, res // m, m, res // m, m, three_c).permute(0, 1, 3, 2, 4, 5).reshape(-1, m * m, 3, heads,
                                                                                          c // heads)
    q, k, v = x.permute(2, 0, 3, 1, 4)
    attn = (q * scale) @ k.transpose(-2, -1) + rel_bias
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.view(-1, nw, heads, m * m, m * m) + mask[None, :, None]).view(-1, heads, m * m, m * m)
    out = (attn.float().softmax(-1).to(v.dtype) @ v).transpose(1, 2).reshape(batch, res // m, res // m, m, m, c)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(batch, res, res, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(batch, res * res, c)


def sdpa_attention(qkv, bias_mask, *, res, window, shift, heads, scale):
    """Same layout work; attention by F.scaled_dot_product_attention with bias + mask [nW, nH, N, N]."""
    batch, _, three_c = qkv.shape
    c, m = three_c // 3, window
    x = qkv.view(batch, res, res, three_c)
    if shift:
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
    x = x.view(batch, res // m, m, res // m, m, three_c).permute(0, 1, 3, 2, 4, 5).reshape(batch, -1, m * m, 3,
                                                                                          heads, c // heads)
    q, k, v = x.permute(3, 0, 1, 4, 2, 5)  # [B, nW, heads, N, hd]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias_mask, scale=scale)
    out = out.transpose(2, 3).reshape(batch, res // m, res // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    out = out.reshape(batch, res, res, c)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out.reshape(batch, res * res, c)


@contextlib.contextmanager
def kernel_selected(kernel: str) -> Iterator[None]:
    """``SWIN_ATTN_KERNEL=kernel`` for the duration (the C ABI library reads it at each launch)."""
    saved = os.environ.get(KERNEL_ENV)
    os.environ[KERNEL_ENV] = kernel
    try:
        yield
    finally:
        if saved is None:
            del os.environ[KERNEL_ENV]
        else:
            os.environ[KERNEL_ENV] = saved


def make_candidates(lib, shape: Shape, batch: int, dtype: torch.dtype, names: Sequence[str],
                    generator: torch.Generator, device: str = "cuda",
                    baseline=None) -> dict[str, Callable[[], torch.Tensor]]:
    """Zero-argument callables returning [B, T, C] for the ``names`` wanted, on inputs made here.

    ``lib``: the C ABI binding (``pipeline.kernels.native.SwinAttention``) the ``kernel`` candidate calls; ``baseline``:
    the binding of another build the ``baseline`` candidate calls the same way. Each candidate
    looks up the current stream when called, so that it runs on the capture stream inside ``torch.cuda.graph``;
    ``compile`` is a fresh ``torch.compile`` after ``torch._dynamo.reset()``. ``device`` "cpu" serves the tests
    (eager, sdpa and op: the reference there).
    """
    n, c = shape.window**2, shape.channels
    qkv = torch.randn(batch, shape.tokens, 3 * c, device=device, dtype=dtype, generator=generator)
    rel_bias = torch.randn(shape.heads, n, n, device=device, dtype=dtype, generator=generator)
    qkv_bias = torch.randn(3 * c, device=device, dtype=dtype, generator=generator)
    mask = (torch.from_numpy(shift_mask(shape.resolution, shape.resolution, shape.window, shape.shift))
            .to(device, dtype) if shape.shift else None)
    bias_mask = (rel_bias[None] + (mask[:, None] if mask is not None else 0)).contiguous()
    attributes = shape.attributes()
    layout = dict(res=shape.resolution, window=shape.window, shift=shape.shift, heads=shape.heads,
                  scale=attributes["scale"])

    def c_abi(binding, kernel: str) -> Callable[[], torch.Tensor]:
        """The C ABI with SWIN_ATTN_KERNEL=kernel for the call (the library reads it at each launch)."""
        out = torch.empty(batch, shape.tokens, c, device=device, dtype=dtype)

        def call() -> torch.Tensor:
            with kernel_selected(kernel):
                binding.forward(qkv, rel_bias, qkv_bias, out, stream=torch.cuda.current_stream().cuda_stream,
                                **attributes)
            return out

        return call

    def triton_jit(config: KernelConfig) -> Callable[[], torch.Tensor]:
        return lambda: triton_window_attention(qkv, rel_bias, qkv_bias, config=config, **attributes)

    def op() -> torch.Tensor:
        return torch.ops.swin.window_attention(qkv, rel_bias, qkv_bias, shape.resolution, shape.resolution,
                                               shape.window, shape.shift, shape.heads, attributes["scale"])

    def eager() -> torch.Tensor:
        return eager_attention(qkv, rel_bias, mask, **layout)

    def sdpa() -> torch.Tensor:
        return sdpa_attention(qkv, bias_mask, **layout)

    candidates = {"op": op, "eager": eager, "sdpa": sdpa}
    candidates |= {name: c_abi(binding, kernel) for name, binding, kernel in
                   (("kernel", lib, "cuda"), ("triton", lib, "triton"), ("baseline", baseline, "cuda"))
                   if name in names}
    candidates |= {name: triton_jit(TRITON_JIT[name]) for name in names if name in TRITON_JIT}
    if "compile" in names:
        torch._dynamo.reset()  # a fresh compile per row: no recompile limit, no silent fall back to eager
        compiled = torch.compile(eager_attention, dynamic=False)
        candidates["compile"] = lambda: compiled(qkv, rel_bias, mask, **layout)
    return {name: candidates[name] for name in names}


def replays_per_trial(replay_ms: float, min_trial_ms: float, at_least: int) -> int:
    """Replays in one timed trial: ``at_least``, or more so that a trial lasts ``min_trial_ms`` (tiny rows would
    otherwise be timed over less than a millisecond and fall between nvidia-smi's clock samples)."""
    if replay_ms <= 0:
        return at_least
    return max(at_least, math.ceil(min_trial_ms / replay_ms))


def time_replays(graph: torch.cuda.CUDAGraph, replays: int, trials: int) -> list[float]:
    """Elapsed ms of ``replays`` back-to-back replays, for each of ``trials`` trials (CUDA events around each
    trial: the replays queue up behind each other, so the GPU never waits for the host)."""
    torch.cuda.synchronize()
    elapsed = []
    for _ in range(trials):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        elapsed.append(start.elapsed_time(end))
    return elapsed


# ---------------------------------------------------------------------------------------------------------


def _print_row(row: KernelRow) -> None:
    times = "  ".join(f"{name} {row.timings[name].us:8.1f}" for name in CANDIDATES if name in row.timings)
    kernel = row.timings.get("kernel")
    bandwidth = f" ({kernel.gbs:6.0f} GB/s, {100 * kernel.fraction_of_peak:4.1f}% of peak)" if kernel else ""
    failed = f"  failed: {', '.join(row.failed)}" if row.failed else ""
    print(f"{row.shape:<28} {row.dtype} b{row.batch:3d}: {times} us{bandwidth}{failed}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_STAGES), choices=list(DEFAULT_STAGES),
                        help="variants whose stage shapes to time (stages 1-4 at 224, 1-3 at 384)")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "fp32"], choices=list(DTYPES))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES),
                        help="default: all, baseline only with --baseline")
    parser.add_argument("--baseline", type=Path, help="libswin_window_attention_cuda.so of another revision "
                        "(python -m benchmarks.device_check --build-baseline REV makes one): the baseline candidate")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--calls", type=int, default=10, help="calls captured in one CUDA graph")
    parser.add_argument("--replays", type=int, default=20, help="graph replays per timed trial, at least")
    parser.add_argument("--min-trial-ms", type=float, default=25.0,
                        help="more replays where a trial would be shorter (clock samples need a few ms)")
    parser.add_argument("--trials", type=int, default=5, help="timed trials per candidate (the median is reported)")
    parser.add_argument("--out", type=Path, help="JSON path (default build/bench/kernel_bench_<device>_<UTC "
                        "time>.json); an existing file is never replaced: the results then go to <stem>_2.json")
    return parser


def chosen_candidates(args: argparse.Namespace) -> list[str]:
    """The candidates to time, ``kernel`` first (every row's reference point); a wrong combination is an error."""
    if args.baseline is not None and not args.baseline.is_file():
        raise PipelineError(f"--baseline {args.baseline} does not exist: build one with `python -m "
                            "benchmarks.device_check --build-baseline REV`")
    chosen = args.candidates or [n for n in CANDIDATES if n != "baseline" or args.baseline is not None]
    if "baseline" in chosen and args.baseline is None:
        raise PipelineError("the baseline candidate needs --baseline LIB")
    names = expand_candidates([n for n in chosen if not (args.no_compile and n == "compile")])
    return names if "kernel" in names else ["kernel", *names]


def time_candidates(candidates: dict[str, Callable[[], torch.Tensor]], args: argparse.Namespace) -> tuple[
        dict[str, list[float]], dict[str, float], dict[str, str], list[tuple[float, float]]]:
    """Each candidate captured and timed: µs per call of each trial, max error against eager, failures, and the
    (start, end) of each timed loop."""
    with torch.inference_mode():
        reference = candidates["eager"]().float() if "eager" in candidates else None
    timings, errors, failures, windows = {}, {}, {}, []
    for name, fn in candidates.items():
        try:
            graph, out = capture(fn, args.calls)
            graph.replay()
            if reference is not None:
                errors[name] = (out.float() - reference).abs().max().item()
            replays = replays_per_trial(time_replays(graph, 1, 1)[0], args.min_trial_ms, args.replays)
            start = time.time()
            timings[name] = per_call_us(time_replays(graph, replays, args.trials), replays, args.calls)
            windows.append((start, time.time()))
            del graph, out
        except Exception as error:  # one candidate failing (memory, capture) must not lose the run
            failures[name] = f"{type(error).__name__}: {error}"
            torch.cuda.synchronize()
    return timings, errors, failures, windows


@dataclasses.dataclass
class KernelRun:
    """A run in progress: what it times with, and the rows so far."""

    args: argparse.Namespace
    names: list[str]
    libraries: dict[str, Path]
    environment: dict[str, Any]
    sampler: GpuLoadSampler
    rows: list[KernelRow] = dataclasses.field(default_factory=list)
    timed_windows: list[tuple[float, float]] = dataclasses.field(default_factory=list)

    def record(self, complete: bool, resources: list[dict[str, Any]]) -> KernelBenchRun:
        args = self.args
        config = KernelBenchConfig(tuple(self.names), args.calls, args.replays, args.min_trial_ms, args.trials, True,
                                   True, str(args.baseline) if args.baseline else None)
        environment = {**self.environment, "gpu_load": self.sampler.summary(self.timed_windows).to_json()}
        return KernelBenchRun(environment=environment, config=config, complete=complete, results=tuple(self.rows),
                              network_attention_us=tuple(network_attention_us(self.rows, self.names)),
                              kernel_resources=tuple(resources), goals=tuple(evaluate_kernel_goals(self.rows)))


def time_rows(run: KernelRun, path: Path, resources: list[dict[str, Any]], peak: float) -> None:
    """Every row of the arguments, the JSON rewritten after each (a run killed by a time limit keeps them)."""
    args, generator = run.args, torch.Generator(device="cuda").manual_seed(0)
    lib = SwinAttention(run.libraries["kernel"])
    baseline = SwinAttention(run.libraries["baseline"]) if "baseline" in run.libraries else None
    shapes = stage_shapes({m: DEFAULT_STAGES[m] for m in args.models})
    for shape, batch, dtype_name in bench_rows(shapes, args.batches, args.dtypes):
        candidates = make_candidates(lib, shape, batch, DTYPES[dtype_name], run.names, generator, baseline=baseline)
        timings, errors, failures, windows = time_candidates(candidates, args)
        run.timed_windows += windows
        row = summarize_row(shape, batch, dtype_name, timings, peak, errors, failures)
        run.rows.append(dataclasses.replace(row, gpu_load=run.sampler.summary(windows)))
        update_run(path, run.record(False, resources))
        _print_row(run.rows[-1])
        del candidates
        torch.cuda.empty_cache()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        names = chosen_candidates(args)
    except PipelineError as error:
        print(f"kernel_bench: {error}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("kernel_bench: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    major, minor = torch.cuda.get_device_capability()
    libs = build_native(arch_build_dir(f"{major}{minor}"), cuda_arch=f"{major}{minor}")
    libraries = {"kernel": libs.cuda} | ({"baseline": args.baseline} if args.baseline is not None else {})
    # Registers and spills of the timed builds, read now so that a missing cuobjdump fails before the timing.
    resources = [{**dataclasses.asdict(kernel), "library": name} for name, path in libraries.items()
                 for kernel in kernel_resources(path)]
    enable_cuda(libs.cuda)  # torch.ops.swin.window_attention on CUDA: the same library
    peak, peak_source = peak_bandwidth_gbs(props.name, getattr(props, "memory_clock_rate", 0),
                                           getattr(props, "memory_bus_width", 0))
    # Read before anything runs, so its clocks are the idle GPU's; "gpu_load" holds the clocks under load.
    environment = {**collect_environment(), "peak_dram_gbs": round(peak, 1), "peak_source": peak_source}
    run = KernelRun(args, names, libraries, environment, GpuLoadSampler().start())
    path = start_run(run.record(False, resources), args.out.with_suffix("") if args.out else
                     RUNS_DIR / timestamped(f"kernel_bench_{device_slug(environment)}", utc_now()))
    try:
        time_rows(run, path, resources, peak)
    finally:
        run.sampler.stop()
    final = run.record(True, resources)
    update_run(path, final)
    print("\n".join(goal_lines(final.goals)))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
