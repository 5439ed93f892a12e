"""Compare two ONNX models (e.g. the export and its surgered version) in onnxruntime on the same inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.compare import FP32_TOLERANCE, relative_error
from pipeline.errors import PipelineError
from pipeline.onnx_io import graph_input, ort_session, read_onnx
from pipeline.records import JsonRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputComparison(JsonRecord):
    batch: int
    output: str
    max_abs_error: float
    max_abs_reference: float
    relative_error: float  #: :func:`pipeline.compare.relative_error`
    passed: bool


@dataclass(frozen=True)
class CheckReport(JsonRecord):
    """Both models' outputs compared at each batch: what ``python -m pipeline check`` prints."""

    reference: str
    candidate: str
    tolerance: float
    results: tuple[OutputComparison, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def worst(self) -> float:
        return max(r.relative_error for r in self.results)

    def raise_if_failed(self) -> CheckReport:
        if not self.passed:
            failed = [f"{r.output} at batch {r.batch}: {r.relative_error:.2e}" for r in self.results if not r.passed]
            raise PipelineError(f"{self.candidate} differs from {self.reference} by more than {self.tolerance:.0e} "
                                f"(relative) on {'; '.join(failed)}; the surgered graph computes something else")
        return self

    def summary(self) -> dict[str, Any]:
        return {"batches": sorted({r.batch for r in self.results}), "max_rel_error": self.worst}

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "passed": self.passed}


def compare_onnx(reference: str | Path, candidate: str | Path, batches: tuple[int, ...] = (1, 3),
                 tolerance: float = FP32_TOLERANCE, seed: int = 0) -> CheckReport:
    """Run both models on the same random images and compare every output at every batch."""
    model, candidate_model = read_onnx(reference), read_onnx(candidate)
    name, dims = graph_input(model, None, Path(reference))
    if dims[0] is not None and set(batches) != {dims[0]}:
        raise PipelineError(f"input {name!r} of {reference} has a fixed batch of {dims[0]}; cannot run batches "
                            f"{list(batches)}")
    ref_session, cand_session = ort_session(model), ort_session(candidate_model)
    candidate_input = graph_input(candidate_model, None, Path(candidate))[0]
    rng = np.random.default_rng(seed)
    results = []
    for batch in batches:
        images = rng.standard_normal([batch, *dims[1:]]).astype(np.float32)
        expected = ref_session.run(None, {name: images})
        actual = cand_session.run(None, {candidate_input: images})
        for output, e, a in zip(ref_session.get_outputs(), expected, actual, strict=True):
            error = relative_error(e, a)
            results.append(OutputComparison(batch, output.name, float(np.abs(e - a).max()), float(np.abs(e).max()),
                                            error, error <= tolerance))
    report = CheckReport(str(reference), str(candidate), tolerance, tuple(results))
    if report.passed:
        log.info("check: %s matches %s to %.1e (relative) on batches %s", candidate, reference, report.worst,
                 list(batches))
    return report
