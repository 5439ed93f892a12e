"""How the pipeline decides that two computations agree: one error measure and one tolerance for FP32 stages.

Export (onnxruntime vs PyTorch), surgery (each rewritten block vs the original subgraph) and ``check`` (the surgered
graph vs the export) all compute the same function in float32, so they share :func:`relative_error` and
:data:`FP32_TOLERANCE`. The engine comparisons of ``verify`` (typed precisions, many images) use
:class:`ComparisonMetrics` and per-precision thresholds instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.records import JsonRecord

#: Two float32 computations of the same graph agree to this relative error (measured: ~1e-6 on the CPU).
FP32_TOLERANCE = 1e-4


def relative_error(expected: np.ndarray, actual: np.ndarray) -> float:
    """Max absolute error relative to the expected output's magnitude, floored at 1 (so near-zero outputs are
    judged absolutely)."""
    return float(np.abs(expected - actual).max() / max(1.0, float(np.abs(expected).max())))


@dataclass(frozen=True)
class Metrics(JsonRecord):
    """How far a candidate's outputs are from the reference's, over every sample compared."""

    max_abs: float
    mean_abs: float
    cosine_mean: float  #: per-sample cosine similarity of the flattened outputs
    cosine_min: float
    top1_agreement: float | None  #: classifiers only (2-D outputs)
    sqnr_db: float | None  #: None: identical outputs


class ComparisonMetrics:
    """Accumulates the comparison of one output batch by batch, so memory stays one batch whatever the image count.

    Max/mean abs error, per-sample cosine (mean, min), top-1 agreement (classifiers) and SQNR in dB.
    """

    def __init__(self) -> None:
        self.max_abs, self.abs_sum, self.elements = 0.0, 0.0, 0
        self.cosines: list[np.ndarray] = []
        self.top1_agreed, self.samples, self.is_classifier = 0, 0, True
        self.signal, self.noise = 0.0, 0.0

    def add(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        reference, candidate = reference.astype(np.float64), candidate.astype(np.float64)
        error = np.abs(reference - candidate)
        rows_ref, rows_cand = reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)
        self.cosines.append((rows_ref * rows_cand).sum(1) / np.maximum(
            np.linalg.norm(rows_ref, axis=1) * np.linalg.norm(rows_cand, axis=1), np.finfo(np.float64).tiny))
        self.max_abs = max(self.max_abs, float(error.max()))
        self.abs_sum += float(error.sum())
        self.elements += error.size
        self.is_classifier &= reference.ndim == 2
        self.top1_agreed += int((rows_ref.argmax(1) == rows_cand.argmax(1)).sum())
        self.samples += len(reference)
        self.signal += float((reference ** 2).sum())
        self.noise += float((error ** 2).sum())

    def result(self) -> Metrics:
        cosine = np.concatenate(self.cosines)
        return Metrics(max_abs=self.max_abs, mean_abs=self.abs_sum / self.elements, cosine_mean=float(cosine.mean()),
                       cosine_min=float(cosine.min()),
                       top1_agreement=self.top1_agreed / self.samples if self.is_classifier else None,
                       sqnr_db=float(10 * np.log10(self.signal / self.noise)) if self.noise > 0 else None)


def comparison_metrics(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """:class:`ComparisonMetrics` of two whole arrays."""
    metrics = ComparisonMetrics()
    metrics.add(reference, candidate)
    return metrics.result()
