"""How the pipeline decides that two computations agree: every tolerance lives here.

Export (onnxruntime vs PyTorch), surgery (each rewritten block vs the original subgraph) and ``check`` (the surgered
graph vs the export) all compute the same function in float32, so they share :func:`relative_error` and
:data:`FP32_TOLERANCE`. The engine comparisons of ``verify`` (typed precisions, many images) use
:class:`ComparisonMetrics` and the per-precision :data:`TOLERANCES` instead (docs/design.md §5d).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.common.records import JsonRecord

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
    max_rel: float  #: the largest over the batches compared of the batch's :func:`relative_error`
    mean_abs: float
    cosine_mean: float  #: per-sample cosine similarity of the flattened outputs
    cosine_min: float
    top1_agreement: float | None  #: classifiers only (2-D outputs)
    sqnr_db: float | None  #: None: identical outputs


class ComparisonMetrics:
    """Accumulates the comparison of one output batch by batch, so memory stays one batch whatever the image count.

    Max abs error, max relative error (per batch, as :func:`relative_error`), mean abs error, per-sample cosine
    (mean, min), top-1 agreement (classifiers) and SQNR in dB.
    """

    def __init__(self) -> None:
        self.max_abs, self.max_rel, self.abs_sum, self.elements = 0.0, 0.0, 0.0, 0
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
        self.max_rel = max(self.max_rel, relative_error(reference, candidate))
        self.abs_sum += float(error.sum())
        self.elements += error.size
        self.is_classifier &= reference.ndim == 2
        self.top1_agreed += int((rows_ref.argmax(1) == rows_cand.argmax(1)).sum())
        self.samples += len(reference)
        self.signal += float((reference ** 2).sum())
        self.noise += float((error ** 2).sum())

    def absorb(self, other: ComparisonMetrics) -> None:
        """Add what ``other`` accumulated (another image size's batches) to this."""
        self.max_abs, self.max_rel = max(self.max_abs, other.max_abs), max(self.max_rel, other.max_rel)
        self.abs_sum, self.elements = self.abs_sum + other.abs_sum, self.elements + other.elements
        self.cosines += other.cosines
        self.top1_agreed, self.samples = self.top1_agreed + other.top1_agreed, self.samples + other.samples
        self.is_classifier &= other.is_classifier
        self.signal, self.noise = self.signal + other.signal, self.noise + other.noise

    def result(self) -> Metrics:
        cosine = np.concatenate(self.cosines)
        return Metrics(max_abs=self.max_abs, max_rel=self.max_rel, mean_abs=self.abs_sum / self.elements,
                       cosine_mean=float(cosine.mean()),
                       cosine_min=float(cosine.min()),
                       top1_agreement=self.top1_agreed / self.samples if self.is_classifier else None,
                       sqnr_db=float(10 * np.log10(self.signal / self.noise)) if self.noise > 0 else None)


def comparison_metrics(reference: np.ndarray, candidate: np.ndarray) -> Metrics:
    """:class:`ComparisonMetrics` of two whole arrays."""
    metrics = ComparisonMetrics()
    metrics.add(reference, candidate)
    return metrics.result()


@dataclass(frozen=True)
class Tolerances(JsonRecord):
    """What one precision's engine must meet against PyTorch, per output; None: not checked.

    Polygraphy's ``compare_accuracy`` checks every element of each batch within an absolute tolerance: ``max_abs``,
    or ``max_rel`` times the batch's reference magnitude (:func:`relative_error`'s scale) where errors grow with
    the outputs (INT8). The rest are checked on the metrics accumulated over every image.
    """

    max_abs: float | None = None
    max_rel: float | None = None
    cosine_min: float | None = None  #: every image's cosine similarity
    sqnr_db_min: float | None = None
    top1_agreement_min: float | None = None  #: classifiers (2-D outputs) only: feature maps have no top-1

    def polygraphy_atol(self, reference: np.ndarray) -> float:
        """The absolute tolerance Polygraphy checks ``reference``'s batch with."""
        if self.max_abs is not None:
            return self.max_abs
        assert self.max_rel is not None, "every precision's tolerances give Polygraphy one"
        return self.max_rel * max(1.0, float(np.abs(reference).max()))

    def failures(self, metrics: Metrics) -> list[str]:
        """One phrase per tolerance ``metrics`` misses, e.g. ``SQNR 12.1 dB (limit >= 25 dB)``."""
        checks = (("max abs error", metrics.max_abs, self.max_abs, False, ""),
                  ("max relative error", metrics.max_rel, self.max_rel, False, ""),
                  ("cosine min", metrics.cosine_min, self.cosine_min, True, ""),
                  ("SQNR", metrics.sqnr_db, self.sqnr_db_min, True, " dB"),
                  ("top-1 agreement", metrics.top1_agreement, self.top1_agreement_min, True, ""))
        # A None measurement passes: no top-1 for feature maps, no SQNR for identical outputs (no noise).
        return [f"{name} {value:.4g}{unit} (limit {'>=' if at_least else '<='} {limit:g}{unit})"
                for name, value, limit, at_least, unit in checks
                if limit is not None and value is not None and (value < limit if at_least else value > limit)]


#: Per-precision pass criteria of ``verify``: the one place they are set (docs/design.md §5d says why these values).
TOLERANCES: dict[str, Tolerances] = {
    "fp32": Tolerances(max_abs=1e-3),
    "fp16": Tolerances(max_abs=2e-2, top1_agreement_min=0.99),
    # Measured on held-out images (benchmarks/results/int8_thresholds_swin_t.json): SQNR 30.2-37.2 dB, cosine min
    # >= 0.9994, max_rel <= 0.042, top-1 agreement 0.984; a calibration clipped at a quarter of its ranges:
    # 3-9 dB, cosine 0.50-0.89, max_rel >= 0.49, top-1 0.09.
    "int8": Tolerances(max_rel=0.15, cosine_min=0.99, sqnr_db_min=25.0, top1_agreement_min=0.9),
}
