"""Timers: per-iteration latencies of a callable that runs one inference.

- :class:`WallClockTimer` (``time.perf_counter``) for work that is finished when the call returns: CPU routes,
  and onnxruntime's ``session.run``, which copies the outputs back to the host. CPU inference is slow, so it
  honours a time budget once ``min_iterations`` are done.
- :class:`CudaEventTimer` for work enqueued on a CUDA stream: a pair of CUDA events around every iteration,
  no host synchronization inside the loop, one at the end (what trtexec's GPU compute time measures).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any, Protocol

from pipeline.common.records import JsonRecord


@dataclasses.dataclass(frozen=True)
class Budget(JsonRecord):
    """How long to measure one route at one batch.

    The timed loop runs ``iterations`` times; a wall-clock timer stops earlier once ``seconds`` have passed and at
    least ``min_iterations`` are done (``seconds=None``: no time limit). Warm-up iterations are not timed.
    """

    warmup: int = 20
    iterations: int = 200
    min_iterations: int = 200
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.warmup < 0 or not 1 <= self.min_iterations <= self.iterations:
            raise ValueError(f"need warmup >= 0 and 1 <= min_iterations <= iterations, got {self}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"a time budget must be positive, got {self.seconds}")


@dataclasses.dataclass(frozen=True)
class Measurement:
    latencies_ms: list[float]
    timer: str  #: "wall-clock" or "cuda-events"
    stopped_by: str  #: "iterations" or "time-budget"
    elapsed_s: float  #: wall time of the timed loop


class Timer(Protocol):
    name: str

    def measure(self, step: Callable[[], Any], budget: Budget) -> Measurement: ...


class WallClockTimer:
    name = "wall-clock"

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock  # injectable so the budget logic is testable without sleeping

    def measure(self, step: Callable[[], Any], budget: Budget) -> Measurement:
        for _ in range(budget.warmup):
            step()
        latencies: list[float] = []
        loop_start = self.clock()
        stopped_by = "iterations"
        while len(latencies) < budget.iterations:
            start = self.clock()
            step()
            end = self.clock()
            latencies.append((end - start) * 1e3)
            if (budget.seconds is not None and len(latencies) >= budget.min_iterations
                    and len(latencies) < budget.iterations and end - loop_start >= budget.seconds):
                stopped_by = "time-budget"
                break
        return Measurement(latencies, self.name, stopped_by, self.clock() - loop_start)


class CudaEventTimer:
    """CUDA events around each iteration on ``stream`` (a ``torch.cuda.Stream``; default: the current one).

    ``step`` must enqueue its work on that stream. All ``iterations`` run (the time budget is a CPU-side notion:
    checking it would need a host sync inside the loop).
    """

    name = "cuda-events"

    def __init__(self, stream: Any = None) -> None:
        import torch

        self.torch = torch
        self.stream = stream if stream is not None else torch.cuda.current_stream()

    def measure(self, step: Callable[[], Any], budget: Budget) -> Measurement:
        cuda = self.torch.cuda
        with cuda.stream(self.stream):
            for _ in range(budget.warmup):
                step()
            self.stream.synchronize()
            starts = [cuda.Event(enable_timing=True) for _ in range(budget.iterations)]
            ends = [cuda.Event(enable_timing=True) for _ in range(budget.iterations)]
            loop_start = time.perf_counter()
            for start, end in zip(starts, ends, strict=True):
                start.record(self.stream)
                step()
                end.record(self.stream)
            self.stream.synchronize()
            elapsed = time.perf_counter() - loop_start
        latencies = [start.elapsed_time(end) for start, end in zip(starts, ends, strict=True)]
        return Measurement(latencies, self.name, "iterations", elapsed)


def capture(fn: Callable[[], Any], calls: int = 1, warmup: int = 3) -> tuple[Any, Any]:
    """Warm ``fn`` up on a side stream (compiles, cuBLAS handles, autotuning), then capture ``calls`` calls of it
    into one CUDA graph. Returns the ``torch.cuda.CUDAGraph`` and the last call's output (keep it alive with the
    graph: the replays write there)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    # Warm-up and capture in the same grad mode: torch.compile guards on it, and must not recompile in the capture.
    with torch.inference_mode():
        with torch.cuda.stream(stream):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(calls):
                out = fn()
    return graph, out
