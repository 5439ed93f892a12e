"""Compare two ONNX models (e.g. the export and its surgered version) in onnxruntime on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.reference import ort_session


def _input_shape(session: Any, batch: int) -> tuple[str, list[int]]:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise PipelineError(f"expected a model with one image input, found {[i.name for i in inputs]}")
    dims = inputs[0].shape
    if any(not isinstance(d, int) for d in dims[1:]):
        raise PipelineError(f"input {inputs[0].name} needs static C/H/W dimensions, got {dims}")
    if isinstance(dims[0], int) and dims[0] != batch:
        raise PipelineError(f"input {inputs[0].name} has a fixed batch of {dims[0]}; cannot run batch {batch}")
    return inputs[0].name, [batch, *dims[1:]]


def compare_onnx(reference: str | Path, candidate: str | Path, batches: tuple[int, ...] = (1, 3),
                 tolerance: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Run both models on the same random images; report the max abs error per output and batch.

    ``passed`` is true when every error is at most ``tolerance`` relative to the output's magnitude
    (floored at 1).
    """
    ref_session, cand_session = ort_session(reference), ort_session(candidate)
    rng = np.random.default_rng(seed)
    results = []
    for batch in batches:
        name, shape = _input_shape(ref_session, batch)
        images = rng.standard_normal(shape).astype(np.float32)
        expected = ref_session.run(None, {name: images})
        actual = cand_session.run(None, {cand_session.get_inputs()[0].name: images})
        for output, e, a in zip(ref_session.get_outputs(), expected, actual, strict=True):
            max_abs = float(np.abs(e - a).max())
            results.append({"batch": batch, "output": output.name, "max_abs_error": max_abs,
                            "max_abs_reference": float(np.abs(e).max()),
                            "passed": max_abs <= tolerance * max(1.0, float(np.abs(e).max()))})
    return {"reference": str(reference), "candidate": str(candidate), "tolerance": tolerance,
            "passed": all(r["passed"] for r in results), "results": results}
