"""Activation ranges: run the FP32 graph on calibration images and turn what it sees into clip values (amax).

Two memory-bounded passes (:func:`collect_absmax`, then :func:`collect_histograms`: a :data:`HISTOGRAM_BINS`-bin
histogram of ``|x|`` over ``[0, absmax]``; why two: docs/design.md §4) feed the methods ``max`` (the absmax),
``percentile`` and ``entropy`` (:func:`amax_from_statistics`; the INT8 scale is ``amax / 127``). How the graph runs
is the caller's: ``new_session(model)`` gives onnxruntime's ``run(output_names, feed)`` (pipeline/stages/int8.py's
runs the plugin's op through its reference), and ``progress(done, total, unit)``, if given, hears after each run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import onnx

from calib.errors import CalibrationError

METHODS = ("max", "percentile", "entropy")
#: Histogram resolution: fine enough for a 99.99th percentile, and a multiple of ENTROPY_BINS.
HISTOGRAM_BINS = 16384
#: TensorRT's entropy calibration: a 2048-bin histogram of |x|, INT8 has 128 non-negative levels.
ENTROPY_BINS = 2048
ENTROPY_LEVELS = 128


class Samples(Protocol):
    """Calibration samples, the model's input a slice at a time: an array, or (pipeline.common.images.ImageSet) an
    object that keeps uint8 crops and normalizes each batch when it is asked for."""

    def __len__(self) -> int: ...

    def __getitem__(self, samples: slice) -> np.ndarray: ...


class Session(Protocol):
    """What calibration needs of an onnxruntime InferenceSession."""

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> Sequence[np.ndarray]: ...


#: A session for a model (the calibration graph: the caller's model with every observed tensor as an output).
SessionFactory = Callable[[onnx.ModelProto], Session]
#: ``progress(done, total, unit)``, e.g. ``(16, 256, "images (calibration: absmax)")``.
Progress = Callable[[int, int, str], None]


@dataclass
class ActivationStatistics:
    """Per observed tensor: absmax and a ``HISTOGRAM_BINS`` histogram of ``|x|`` over ``[0, absmax]``."""

    absmax: dict[str, float]
    histograms: dict[str, np.ndarray]


def _observing_model(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``tensors`` (graph inputs excepted: they are fed, not computed)."""
    observed = onnx.ModelProto.FromString(model.SerializeToString())
    present = {o.name for o in observed.graph.output} | {i.name for i in observed.graph.input}
    for name in tensors:
        if name not in present:
            observed.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return observed


def _batches(model: onnx.ModelProto, images: Samples, tensors: Sequence[str], batch: int, desc: str,
             new_session: SessionFactory, progress: Progress | None) -> Iterator[dict[str, np.ndarray]]:
    """Yield ``{tensor: value}`` for each batch of ``images`` run through ``model``."""
    if batch < 1:
        raise CalibrationError(f"calibration batch size must be >= 1, got {batch}")
    input_name = model.graph.input[0].name
    session = new_session(_observing_model(model, tensors))
    computed = [t for t in tensors if t != input_name]
    for start in range(0, len(images), batch):
        feed = images[start:start + batch]
        values = dict(zip(computed, session.run(computed, {input_name: feed}), strict=True))
        if input_name in tensors:
            values[input_name] = feed
        yield values
        if progress is not None:
            progress(start + len(feed), len(images), f"images ({desc})")


def collect_absmax(model: onnx.ModelProto, images: Samples, tensors: Sequence[str], batch: int = 8, *,
                   new_session: SessionFactory, progress: Progress | None = None) -> dict[str, float]:
    """Pass 1: max |x| of each tensor over all ``images``, ``batch`` of them a run."""
    absmax = dict.fromkeys(tensors, 0.0)
    for values in _batches(model, images, tensors, batch, "calibration: absmax", new_session, progress):
        for name, value in values.items():
            absmax[name] = max(absmax[name], float(np.abs(value).max()))
    return absmax


def collect_histograms(model: onnx.ModelProto, images: Samples, absmax: dict[str, float], batch: int = 8, *,
                       new_session: SessionFactory, progress: Progress | None = None) -> dict[str, np.ndarray]:
    """Pass 2: the ``HISTOGRAM_BINS``-bin histogram of ``|x|`` over ``[0, absmax]`` of each tensor."""
    histograms = {name: np.zeros(HISTOGRAM_BINS, np.int64) for name in absmax}
    for values in _batches(model, images, list(absmax), batch, "calibration: histograms", new_session, progress):
        for name, value in values.items():
            histograms[name] += histogram(value, absmax[name])
    return histograms


def collect_statistics(model: onnx.ModelProto, images: Samples, tensors: Sequence[str], batch: int = 8,
                       histograms: bool = True, *, new_session: SessionFactory,
                       progress: Progress | None = None) -> ActivationStatistics:
    """Both passes (the second only if ``histograms``): all that any method in :data:`METHODS` needs."""
    absmax = collect_absmax(model, images, tensors, batch, new_session=new_session, progress=progress)
    return ActivationStatistics(absmax, collect_histograms(model, images, absmax, batch, new_session=new_session,
                                                           progress=progress) if histograms else {})


def histogram(values: np.ndarray, absmax: float, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """Counts of ``|values|`` in ``bins`` equal bins over ``[0, absmax]`` (values at absmax go to the last bin)."""
    if absmax <= 0:
        return np.bincount([0], weights=[values.size], minlength=bins).astype(np.int64)
    index = np.minimum((np.abs(values.ravel()) * (bins / absmax)).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins)


def percentile_amax(counts: np.ndarray, absmax: float, percentile: float) -> float:
    """Upper edge of the first bin where the cumulative share of ``counts`` reaches ``percentile`` %."""
    if not 0 < percentile <= 100:
        raise CalibrationError(f"percentile must be in (0, 100], got {percentile}")
    cumulative = np.cumsum(counts) / counts.sum()
    index = int(np.searchsorted(cumulative, percentile / 100))
    return min(absmax, (index + 1) * absmax / len(counts))


def entropy_amax(counts: np.ndarray, absmax: float) -> float:
    """TensorRT-style KL-divergence threshold over ``counts`` (any multiple of ``ENTROPY_BINS`` bins).

    EntropyCalibrator2's search: over a 2048-bin histogram, every clip bin ``i`` from 128 to 2048 is tried and the
    one minimizing KL(P || Q) kept, P being the histogram clipped at ``i`` (the outliers added to its last bin) and Q
    its first ``i`` bins (outliers left out) quantized to 128 levels and expanded back over P's non-empty bins.
    """
    if len(counts) % ENTROPY_BINS:
        raise ValueError(f"need a multiple of {ENTROPY_BINS} bins, got {len(counts)}")
    coarse = counts.reshape(ENTROPY_BINS, -1).sum(axis=1).astype(np.float64)
    divergences = [clip_divergence(coarse, i) for i in range(ENTROPY_LEVELS, ENTROPY_BINS + 1)]
    best = ENTROPY_LEVELS + int(np.argmin(divergences))
    return best * absmax / ENTROPY_BINS


def clip_divergence(counts: np.ndarray, clip_bin: int, levels: int = ENTROPY_LEVELS) -> float:
    """KL(P || Q) for clipping ``counts`` at bin ``clip_bin`` and quantizing to ``levels`` levels.

    P: the first ``clip_bin`` bins, with everything beyond added to the last one (what saturation does).
    Q: the first ``clip_bin`` bins *without* the outliers, merged into ``levels`` groups of ``clip_bin // levels``
    bins (the last group also takes the remainder), each group's total spread evenly over the bins where P is
    non-empty. Leaving the outliers out of Q is what makes clipping cost something: with them in, clipping at
    ``levels`` bins would quantize losslessly and always win. Infinite when P has mass where Q has none.
    """
    p = counts[:clip_bin].astype(np.float64)
    p[-1] += counts[clip_bin:].sum()
    group = np.minimum(np.arange(clip_bin) // (clip_bin // levels), levels - 1)
    nonempty = p > 0
    group_total = np.bincount(group, weights=counts[:clip_bin], minlength=levels)
    group_nonempty = np.bincount(group, weights=nonempty, minlength=levels)
    q = np.where(nonempty, group_total[group] / np.maximum(group_nonempty[group], 1), 0.0)
    if not (q[nonempty] > 0).all():
        return float("inf")
    p_prob, q_prob = p[nonempty] / p.sum(), q[nonempty] / q.sum()
    return float(np.sum(p_prob * np.log(p_prob / q_prob)))


def amax_from_statistics(stats: ActivationStatistics, method: str, percentile: float = 99.99) -> dict[str, float]:
    """The clip value of every tensor for ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "max":
        return dict(stats.absmax)
    if not stats.histograms:
        raise ValueError(f"method {method!r} needs histograms; collect with histograms=True")
    if method == "percentile":
        return {name: percentile_amax(stats.histograms[name], amax, percentile) for name, amax in stats.absmax.items()}
    return {name: entropy_amax(stats.histograms[name], amax) for name, amax in stats.absmax.items()}
