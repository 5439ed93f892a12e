"""Every stage from the PyTorch model to a verified engine: what ``make engine`` and ``python -m pipeline engine`` run.

    from pipeline.make import EngineRecipe, make_engine
    report = make_engine(EngineRecipe(variant="T", precision="fp16"), "build/swin_t")

:meth:`EngineRecipe.validate` checks everything cheap before any stage runs; :data:`STAGES` then runs, in order,
each stage's ``pipeline.stages.<name>.run(job)`` through :class:`pipeline.runner.StageRunner`, which reuses a stage
whose inputs and parameters are unchanged. ``until`` stops after a stage (``python -m pipeline onnx``: "check").
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.common.artifacts import check_writable, folder_locked, write_json
from pipeline.common.records import JsonRecord
from pipeline.recipe import (
    CALIB_METHODS,
    DEFAULT_PLUGIN,
    PRECISIONS,
    STAGE_NAMES,
    EngineFiles,
    EngineJob,
    EngineRecipe,
    ModelRecord,
    build_model,
    stages_until,
)
from pipeline.runner import RECORDS_FILE, StageRecord, StageRunner

log = logging.getLogger(__name__)


def recorded_model(folder: Path) -> ModelRecord | None:
    """The model whose graphs and engines ``folder`` holds, as make_engine's export stage recorded it; None when no
    export ran there (or one from before the record)."""
    records = folder / RECORDS_FILE
    if not records.is_file():
        return None
    model = json.loads(records.read_text()).get("export", {}).get("result", {}).get("model")
    return None if model is None else ModelRecord.from_json(model)


def export_model(recipe: EngineRecipe, path: Path, model: Any = None) -> Path:
    """The export stage alone (``python -m pipeline export``): the recipe's model (or ``model``) to ``path``."""
    from pipeline.stages.export import export_recipe

    recipe.validate(until="export")
    check_writable(path)
    return export_recipe(recipe, model or build_model(recipe), path)


#: What make_engine writes besides model.onnx: removed when the model changes, so no engine, graph or report of the
#: previous weights stays beside the new ones.
_MODEL_ARTIFACTS = ("model.swin.onnx", "model.swin.*.onnx", "surgery.json", "swin_*_*.engine", "swin_*_*.json",
                    "calibration_cache.json", "verify.json", "report.json")


def remove_previous_model(job: EngineJob, runner: StageRunner) -> None:
    """Before a model is exported into a folder holding another one's files: remove them, saying what."""
    out = job.files.out
    previous = recorded_model(out)
    stale = sorted({path for pattern in _MODEL_ARTIFACTS for path in out.glob(pattern)})
    for path in stale:
        path.unlink()
    runner.forget()
    if stale:
        held = ("another model" if previous is None else "the same model exported with other parameters"
                if previous.same_model(job.model_record) else previous.describe())
        log.warning("engine: %s held %s; replacing it with %s removed %d of its files: %s (use another "
                    "BUILD_DIR / --out-dir to keep both)", out, held, job.model_record.describe(), len(stale),
                    ", ".join(p.name for p in stale))


# ---------------------------------------------------------------------------------------------------------
# What, besides the hashes of the files a stage reads, decides its result (its fingerprint's parameters).


def _no_params(job: EngineJob) -> dict[str, Any]:
    return {}


def _size_range(job: EngineJob) -> dict[str, Any]:
    """A size range's part of a fingerprint (nothing for a fixed size, whose fingerprints stay as they were)."""
    return {} if job.recipe.img_range is None else {"img_range": str(job.recipe.img_range)}


def _model_params(job: EngineJob) -> dict[str, Any]:
    # The checkpoint enters the fingerprints as the hash model_record already took, not as a file to hash again.
    recipe = job.recipe
    return {"variant": recipe.variant.upper(), "img_size": recipe.image_size, "max_batch": recipe.max_batch,
            "features_only": recipe.features_only, "checkpoint_sha256": job.model_record.checkpoint_sha256,
            **_size_range(job)}


def _surgery_params(job: EngineJob) -> dict[str, Any]:
    return {"attention": job.recipe.attention}


def _check_params(job: EngineJob) -> dict[str, Any]:
    from pipeline.stages.check import CHECK_BATCHES

    return {"batches": CHECK_BATCHES}


def _precision_params(job: EngineJob) -> dict[str, Any]:
    recipe = job.recipe
    if recipe.precision != "int8":
        return {"precision": recipe.precision}
    images = recipe.image_plan().calibration
    assert images is not None  # INT8 always calibrates
    # The files calibration reads, not the whole folder: the split decides them (a held-out file is not among them).
    return {"precision": "int8", "calib_dir": recipe.calib_dir, "samples": recipe.calib_samples,
            "method": recipe.calib_method, "exclude": recipe.calib_exclude, "images": images.summary(),
            "listing": images.listing()}


def _build_params(job: EngineJob) -> dict[str, Any]:
    recipe = job.recipe
    return {"batch": recipe.batch, "backend": recipe.backend, "sm": recipe.sm, "opt_level": recipe.opt_level,
            "embed_plugin": recipe.embed_plugin, "detailed_profile": recipe.detailed_profile, **_size_range(job)}


def _verify_params(job: EngineJob) -> dict[str, Any]:
    recipe = job.recipe
    images = recipe.image_plan(job.files.out).verification
    return {"precision": recipe.precision, "images": images.summary(), "listing": images.listing(),
            "checkpoint_sha256": job.model_record.checkpoint_sha256, **_size_range(job)}


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of :func:`make_engine`: ``pipeline.stages.<name>.run(job)``, the files it reads and writes
    (:class:`EngineFiles` fields) and its parameters. A stage whose parameters and read files are unchanged and whose
    written files exist is reused."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    params: Callable[[EngineJob], dict[str, Any]] = _no_params

    def run(self, job: EngineJob) -> JsonRecord:
        # Imported when the stage runs: validation (and a typo's message) does not wait for torch or TensorRT.
        return importlib.import_module(f"pipeline.stages.{self.name}").run(job)

    def paths(self, job: EngineJob, fields: tuple[str, ...]) -> list[Path]:
        return [path for path in (getattr(job.files, field) for field in fields) if path is not None]


#: The pipeline, in order.
STAGES: tuple[Stage, ...] = (
    Stage("export", reads=(), writes=("onnx",), params=_model_params),
    Stage("surgery", reads=("onnx",), writes=("swin", "surgery_report"), params=_surgery_params),
    Stage("check", reads=("onnx", "swin"), writes=(), params=_check_params),
    Stage("precision", reads=("swin",), writes=("typed",), params=_precision_params),
    Stage("build", reads=("typed", "plugin"), writes=("engine", "engine_metadata"), params=_build_params),
    Stage("verify", reads=("typed", "engine"), writes=("verify_report",), params=_verify_params),
)
assert tuple(stage.name for stage in STAGES) == STAGE_NAMES


@dataclasses.dataclass(frozen=True)
class EngineReport(JsonRecord):
    """What :func:`make_engine` did: written to ``report.json``."""

    variant: str
    precision: str
    engine: Path | None  #: None when the run stopped before the build
    model: ModelRecord
    stages: dict[str, StageRecord]


def make_engine(recipe: EngineRecipe, out_dir: str | Path, *, until: str = "verify") -> EngineReport:
    """Validate ``recipe``, then run :data:`STAGES` up to and including ``until`` into ``out_dir``.

    Returns the report also written to ``out_dir/report.json``. A folder this call creates is removed again if
    the run fails before any stage completed, so a typo never leaves an empty folder behind. One run at a time
    per folder: a second one into the same folder fails at once instead of overwriting the first one's files.
    """
    build_options = recipe.validate(until)
    out = Path(out_dir)
    check_writable(out, folder=True)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    # Only the lock's holder may remove the folder: another run may be about to fill it.
    with folder_locked(out, "python -m pipeline engine (make engine)"):
        try:
            return _run_stages(EngineJob(recipe, out, build_options), stages_until(until))
        except BaseException:
            if created and not any(out.iterdir()):
                out.rmdir()
            raise


def _run_stages(job: EngineJob, names: tuple[str, ...]) -> EngineReport:
    runner = StageRunner(job.files.out)
    for stage in STAGES[:len(names)]:
        runner.run(stage.name, stage.params(job), stage.paths(job, stage.reads), stage.paths(job, stage.writes),
                   lambda stage=stage: _run_stage(stage, job, runner))
    report = EngineReport(variant=job.recipe.variant.upper(), precision=job.recipe.precision,
                          engine=job.files.engine if "build" in names else None, model=job.model_record,
                          stages=dict(runner.summary))
    write_json(job.files.report, report.to_json())
    reused = [name for name, record in report.stages.items() if record.reused]
    log.info("engine: %s ready (%d stages, %d reused: %s); report in %s", report.engine or job.files.swin,
             len(report.stages), len(reused), ", ".join(reused) or "none", job.files.report)
    return report


def _run_stage(stage: Stage, job: EngineJob, runner: StageRunner) -> JsonRecord:
    if stage.name == "export" and runner.records:  # the model changed: nothing made from the previous one stays
        remove_previous_model(job, runner)
    return stage.run(job)


__all__ = ["CALIB_METHODS", "DEFAULT_PLUGIN", "PRECISIONS", "STAGES", "EngineFiles", "EngineRecipe", "EngineReport",
           "ModelRecord", "build_model", "export_model", "make_engine", "recorded_model"]
