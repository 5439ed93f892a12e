"""Compare two ONNX models (e.g. the export and its surgered version) in onnxruntime on the same inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.common.compare import FP32_TOLERANCE, relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.onnx_io import graph_input, ort_session, read_onnx
from pipeline.common.progress import advance
from pipeline.common.records import JsonRecord

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob

log = logging.getLogger(__name__)

#: Batches make_engine's check stage compares at: 1 and a batch > 1 exercise the dynamic batch.
CHECK_BATCHES = (1, 3)


@dataclass(frozen=True)
class OutputComparison(JsonRecord):
    batch: int
    output: str
    max_abs_error: float
    max_abs_reference: float
    relative_error: float  #: :func:`pipeline.common.compare.relative_error`
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

    def key_numbers(self) -> dict[str, Any]:
        return {"batches": sorted({r.batch for r in self.results}), "max_rel_error": self.worst}

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "passed": self.passed}


def _input(path: str | Path, dynamic_size: bool) -> tuple[str, list[int | None]]:
    return graph_input(read_onnx(path), None, Path(path), dynamic_size=dynamic_size)  # the proto goes on return


def _run(path: str | Path, name: str, images: list[np.ndarray], runs_before: int = 0
         ) -> tuple[list[str], list[list[np.ndarray]]]:
    """The model's output names and its outputs for each input; its session is gone when this returns.
    ``runs_before``: the model runs done before this call, for the progress line (two models, as many runs each)."""
    session = ort_session(path)
    outputs = []
    for image in images:
        outputs.append(session.run(None, {name: image}))
        advance(runs_before + len(outputs), 2 * len(images), "model runs")
    return [o.name for o in session.get_outputs()], outputs


def compare_onnx(reference: str | Path, candidate: str | Path, batches: tuple[int, ...] = (1, 3),
                 tolerance: float = FP32_TOLERANCE, seed: int = 0, size: tuple[int, int] | None = None) -> CheckReport:
    """Run both models on the same random images and compare every output at every batch.

    One model at a time: its outputs are small, its weights (0.8 GB for Swin-L, with onnxruntime's copy twice that)
    are not, so the two sessions never coexist. ``size``: the (H, W) to run graphs with a dynamic size at.
    """
    name, dims = _input(reference, size is not None)
    if size is not None:
        dims = [dims[0], dims[1], *size]
    if dims[0] is not None and set(batches) != {dims[0]}:
        raise PipelineError(f"input {name!r} of {reference} has a fixed batch of {dims[0]}; cannot run batches "
                            f"{list(batches)}")
    rng = np.random.default_rng(seed)
    images = [rng.standard_normal([batch, *dims[1:]]).astype(np.float32) for batch in batches]
    outputs, expected = _run(reference, name, images)
    _, actual = _run(candidate, _input(candidate, size is not None)[0], images, runs_before=len(images))
    results = []
    for batch, batch_expected, batch_actual in zip(batches, expected, actual, strict=True):
        for output, e, a in zip(outputs, batch_expected, batch_actual, strict=True):
            error = relative_error(e, a)
            results.append(OutputComparison(batch, output, float(np.abs(e - a).max()), float(np.abs(e).max()),
                                            error, error <= tolerance))
    report = CheckReport(str(reference), str(candidate), tolerance, tuple(results))
    if report.passed:
        log.info("check: %s matches %s to %.1e (relative) on batches %s", candidate, reference, report.worst,
                 list(batches))
    return report


def run(job: EngineJob) -> CheckReport:
    """make_engine's check stage: the surgered graph against the export, at :data:`CHECK_BATCHES` (at most the
    profile's largest batch), a size range's graphs at its smallest size; a PipelineError when they differ."""
    batches = tuple(sorted({min(b, job.recipe.max_batch) for b in CHECK_BATCHES}))
    sizes = job.recipe.img_range
    return compare_onnx(job.files.onnx, job.files.swin, batches,
                        size=None if sizes is None else sizes.min).raise_if_failed()
