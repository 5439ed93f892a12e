"""Latency statistics: pure functions over per-iteration timings, the same numbers trtexec prints."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: Percentiles every summary carries (trtexec reports 90/95/99 and the median).
PERCENTILES = (50, 90, 95, 99)


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


def summarize(latencies_ms: Sequence[float], batch: int) -> dict[str, Any]:
    """Summary of per-iteration latencies (ms) at ``batch`` images per iteration.

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
    summary: dict[str, Any] = {
        "iterations": len(values),
        "mean_ms": mean,
        "std_ms": math.sqrt(variance),
        "min_ms": values[0],
        "max_ms": values[-1],
    }
    summary |= {f"p{q}_ms": percentile(values, q) for q in PERCENTILES}
    summary["throughput_img_s"] = batch * 1e3 / mean if mean > 0 else math.inf
    return summary


def speedup(baseline_ms: float, candidate_ms: float) -> float:
    """How many times faster ``candidate`` is than ``baseline`` (>1: faster)."""
    if candidate_ms <= 0:
        raise ValueError(f"candidate latency must be positive, got {candidate_ms}")
    return baseline_ms / candidate_ms
