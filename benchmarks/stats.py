"""Latency statistics: pure functions over per-iteration timings, the same numbers trtexec prints."""

from __future__ import annotations

import math
from collections.abc import Sequence

from benchmarks.records import LatencySummary


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values`` by linear interpolation between closest
    ranks (NumPy's default), so tests can check it against known values."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    position = (len(sorted_values) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def summarize(latencies_ms: Sequence[float], batch: int) -> LatencySummary:
    """Summary of per-iteration latencies (ms) at ``batch`` images per iteration: the median and the 90/95/99th
    percentiles, as trtexec reports them.

    Throughput is ``batch / mean latency``: the rate a back-to-back loop sustains, which is what users compare
    with trtexec's and the paper's img/s.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    values = sorted(float(v) for v in latencies_ms)
    if not values:
        raise ValueError("no timings to summarize")
    if values[0] < 0 or not math.isfinite(values[-1]):
        raise ValueError(f"latencies must be finite and non-negative, got range {values[0]}..{values[-1]}")
    mean = sum(values) / len(values)
    variance = sum((v - mean) ** 2 for v in values) / len(values)
    return LatencySummary(iterations=len(values), mean_ms=mean, std_ms=math.sqrt(variance), min_ms=values[0],
                          max_ms=values[-1], p50_ms=percentile(values, 50), p90_ms=percentile(values, 90),
                          p95_ms=percentile(values, 95), p99_ms=percentile(values, 99),
                          throughput_img_s=batch * 1e3 / mean if mean > 0 else math.inf)


def speedup(baseline_ms: float, candidate_ms: float) -> float:
    """How many times faster ``candidate`` is than ``baseline`` (>1: faster)."""
    if candidate_ms <= 0:
        raise ValueError(f"candidate latency must be positive, got {candidate_ms}")
    return baseline_ms / candidate_ms
