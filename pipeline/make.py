"""Every stage from the PyTorch model to a verified engine: what ``make engine`` and ``python -m pipeline engine`` run.

    from pipeline.make import EngineRecipe, make_engine
    report = make_engine(EngineRecipe(variant="T", precision="fp16"), "build/swin_t")

:meth:`EngineRecipe.validate` checks everything that is cheap to check (variant, precision, batch profile,
backend and compute capability, plugin library, checkpoint and image folders) before any stage runs, so a typo
fails in seconds, not after export. The stages (:data:`STAGES`, in order) then run through
:class:`pipeline.runner.StageRunner`, which skips a stage whose inputs and parameters are unchanged.
``until`` stops after a stage: ``python -m pipeline onnx`` is ``make_engine(recipe, out_dir, until="check")``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.common.artifacts import check_writable, file_sha256, folder_locked, write_json
from pipeline.common.attention import TRTATTN_SUFFIX, check_route
from pipeline.common.checkpoint_layout import check_checkpoint
from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import ImagePlan, plan_images
from pipeline.common.images import GENERATED_FOLDER_NAME
from pipeline.common.records import JsonRecord
from pipeline.common.variants import variant_config
from pipeline.runner import StageRecord, StageRunner

if TYPE_CHECKING:
    import torch

    from pipeline.tensorrt.build import BuildOptions

log = logging.getLogger("pipeline.make")

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PLUGIN = Path("build/plugin/libswin_window_attention_plugin.so")
CALIB_METHODS = ("max", "percentile", "entropy")
#: Batches the ``check`` stage compares the surgered graph at: 1 and a batch > 1 exercise the dynamic batch.
CHECK_BATCHES = (1, 3)


@dataclasses.dataclass(frozen=True)
class ModelRecord(JsonRecord):
    """Which weights an engine carries: recorded in report.json and verify.json."""

    variant: str
    features_only: bool
    img_size: tuple[int, int]
    checkpoint: str | None
    checkpoint_sha256: str | None
    weights: str

    def same_model(self, other: ModelRecord) -> bool:
        """Whether both describe the same network and weights (the checkpoint's path may differ, not its bytes)."""
        key = lambda r: (r.variant, r.features_only, tuple(r.img_size), r.checkpoint_sha256)  # noqa: E731
        return key(self) == key(other)

    def describe(self) -> str:
        """``Swin-T classifier 224x224, random weights (seed 0)``; a checkpoint by name and hash prefix."""
        kind = "backbone" if self.features_only else "classifier"
        weights = self.weights if self.checkpoint is None else \
            f"checkpoint {Path(self.checkpoint).name} ({(self.checkpoint_sha256 or '')[:12]})"
        return f"Swin-{self.variant} {kind} {self.img_size[0]}x{self.img_size[1]}, {weights}"


def recorded_model(folder: Path) -> ModelRecord | None:
    """The model whose graphs and engines ``folder`` holds, as make_engine's export stage recorded it; None when no
    export ran there (or one from before the record)."""
    from pipeline.runner import RECORDS_FILE

    records = folder / RECORDS_FILE
    if not records.is_file():
        return None
    model = json.loads(records.read_text()).get("export", {}).get("result", {}).get("model")
    return None if model is None else ModelRecord.from_json(model)


@dataclasses.dataclass(frozen=True)
class EngineRecipe:
    """What to build: the model, its precision, the engine's batch profile and target, calibration, verification.

    ``img_size`` None is the variant's own size; ``calib_exclude`` None is the variant's safe list, ``()``
    quantizes every layer; ``images`` is the folder verification compares on (default: the part of ``calib_dir``
    that calibration leaves out, else generated crops of the scikit-image photos; :meth:`image_plan`).
    """

    variant: str = "T"
    checkpoint: Path | None = None
    img_size: tuple[int, int] | None = None
    features_only: bool = False
    precision: str = "fp16"
    batch: tuple[int, int, int] = (1, 8, 32)
    backend: str = "auto"
    sm: int = 86
    opt_level: int = 3
    embed_plugin: bool = False
    detailed_profile: bool = False
    plugin_library: Path = DEFAULT_PLUGIN
    attention: str = "plugin"
    calib_dir: Path | None = None
    calib_samples: int = 256
    calib_method: str = "percentile"
    calib_exclude: tuple[str, ...] | None = None
    images: Path | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return self.img_size or (variant_config(self.variant).img_size,) * 2

    @property
    def model_tag(self) -> str:
        """Names this model's folder, engine and Triton model: ``t``, ``t_384x384`` (not the variant's size),
        ``t_features_800x1333`` (a backbone), so that different models never share a default folder."""
        tag = self.variant.lower() + ("_features" if self.features_only else "")
        if self.features_only or self.image_size != (variant_config(self.variant).img_size,) * 2:
            tag += f"_{self.image_size[0]}x{self.image_size[1]}"
        return tag

    @property
    def default_out_dir(self) -> Path:
        """``make engine``'s folder when BUILD_DIR is not given: one per model and attention route."""
        return Path("build") / f"swin_{self.model_tag}{TRTATTN_SUFFIX if self.attention == 'tensorrt' else ''}"

    @property
    def max_batch(self) -> int:
        return self.batch[2]

    def image_plan(self, out_dir: Path | None = None) -> ImagePlan:
        """The images calibration and verification use, never the same ones
        (:func:`pipeline.common.image_plan.plan_images`); ``out_dir``: where calibration generates its crops when there
        is no ``calib_dir``."""
        generated = None if out_dir is None else Path(out_dir) / GENERATED_FOLDER_NAME
        return plan_images(self.precision, self.calib_dir, self.images, generated_calib_dir=generated)

    @property
    def plugin(self) -> Path | None:
        """The plugin library the engine needs: None on the ``tensorrt`` attention route."""
        return self.plugin_library if self.attention == "plugin" else None

    def validate(self, until: str = "verify") -> BuildOptions | None:
        """Raise PipelineError on anything wrong, for the stages up to ``until``, that can be found without running
        a stage (a few seconds); return the build's checked options when ``until`` includes the build."""
        from pipeline.tensorrt.build import check_build_options, profile_shapes

        stages = _stages_until(until)
        variant_config(self.variant)
        check_route(self.attention, self.precision, embed_plugin=self.embed_plugin)
        if self.precision not in PRECISIONS:
            raise PipelineError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.img_size is not None and min(self.img_size) < 1:
            raise PipelineError(f"image size must be positive, got {self.img_size}")
        if self.calib_method not in CALIB_METHODS:
            raise PipelineError(f"unknown calibration method {self.calib_method!r}: expected one of "
                                f"{', '.join(CALIB_METHODS)}")
        if self.calib_samples < 1:
            raise PipelineError(f"calibration samples must be >= 1, got {self.calib_samples}")
        if self.checkpoint is not None:
            check_checkpoint(self.checkpoint, self.variant)
        if "build" not in stages:  # else check_build_options below checks it, with the rest of the build's options
            profile_shapes(tuple(self.batch), [None], "images")
        if "verify" in stages or (self.precision == "int8" and "precision" in stages):
            self.image_plan()  # lists the folders, and refuses IMAGES that are all calibration images
        if "build" in stages:
            return check_build_options(plugin_library=self.plugin, batch=self.batch, opt_level=self.opt_level,
                                       backend=self.backend, sm=self.sm, embed_plugin=self.embed_plugin,
                                       detailed_profile=self.detailed_profile)
        return None

    def model_record(self) -> ModelRecord:
        checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        return ModelRecord(variant=self.variant.upper(), features_only=self.features_only, img_size=self.image_size,
                           checkpoint=None if checkpoint is None else str(checkpoint.resolve()),
                           checkpoint_sha256=None if checkpoint is None else file_sha256(checkpoint),
                           weights="checkpoint" if checkpoint is not None else "random (seed 0)")


def build_model(recipe: EngineRecipe, *, fused_attention: bool = False) -> torch.nn.Module:
    """The recipe's PyTorch model; without a checkpoint, random weights from seed 0 (and a warning).
    ``fused_attention``: the same model and weights, its blocks calling ``torch.ops.swin.window_attention``."""
    import torch

    from pipeline.models import build_swin

    if recipe.checkpoint is None:
        log.warning("no checkpoint: Swin-%s gets random weights (seed 0); fine for testing the pipeline, "
                    "meaningless for accuracy", recipe.variant.upper())
        torch.manual_seed(0)
    return build_swin(recipe.variant, recipe.checkpoint, features_only=recipe.features_only,
                      fused_attention=fused_attention)


@dataclasses.dataclass(frozen=True)
class EngineFiles:
    """Where :func:`make_engine` writes each artifact of one recipe."""

    out: Path
    model_tag: str  #: EngineRecipe.model_tag
    precision: str

    onnx = property(lambda self: self.out / "model.onnx")
    swin = property(lambda self: self.out / "model.swin.onnx")
    surgery_report = property(lambda self: self.out / "surgery.json")
    qdq = property(lambda self: self.out / "model.swin.qdq.onnx")
    calibration_cache = property(lambda self: self.out / "calibration_cache.json")
    typed = property(lambda self: self.out / f"model.swin.{self.precision}.onnx")
    engine = property(lambda self: self.out / f"swin_{self.model_tag}_{self.precision}.engine")
    engine_metadata = property(lambda self: self.engine.with_suffix(".json"))
    verify_report = property(lambda self: self.out / "verify.json")
    report = property(lambda self: self.out / "report.json")
    #: TensorRT's (TensorRT-RTX writes none); inside the folder, so a folder is everything a run wrote.
    timing_cache = property(lambda self: self.out / "timing.cache")


#: What make_engine writes besides model.onnx: removed when the model changes, so no engine, graph or report of the
#: previous weights stays beside the new ones.
_MODEL_ARTIFACTS = ("model.swin.onnx", "model.swin.*.onnx", "surgery.json", "swin_*_*.engine", "swin_*_*.json",
                    "calibration_cache.json", "verify.json", "report.json")


class EngineRun:
    """One :func:`make_engine` call: the recipe, its files, the stage runner and the model (built on first use)."""

    def __init__(self, recipe: EngineRecipe, out: Path, build_options: BuildOptions | None = None) -> None:
        self.recipe = recipe
        self.build_options = build_options  #: from recipe.validate, which the build stage needs
        self.files = EngineFiles(out, recipe.model_tag, recipe.precision)
        self.runner = StageRunner(out)
        self.model_record = recipe.model_record()
        self._model: torch.nn.Module | None = None

    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = build_model(self.recipe)
        return self._model

    def remove_previous_model(self) -> None:
        """Before a model is exported into a folder holding another one's files: remove them, saying what."""
        previous = recorded_model(self.files.out)
        stale = sorted({path for pattern in _MODEL_ARTIFACTS for path in self.files.out.glob(pattern)})
        for path in stale:
            path.unlink()
        self.runner.forget()
        if stale:
            held = ("another model" if previous is None else "the same model exported with other parameters"
                    if previous.same_model(self.model_record) else previous.describe())
            log.warning("engine: %s held %s; replacing it with %s removed %d of its files: %s (use another "
                        "BUILD_DIR / --out-dir to keep both)", self.files.out, held, self.model_record.describe(),
                        len(stale), ", ".join(p.name for p in stale))


# ---------------------------------------------------------------------------------------------------------
# The stages. Each is run(EngineRun) -> the stage's key numbers, which stages.json keeps for the runs that reuse it.


def export_model(recipe: EngineRecipe, path: Path, model: torch.nn.Module | None = None) -> Path:
    """The export stage alone (``python -m pipeline export``): the recipe's model (or ``model``) to ``path``."""
    from pipeline.stages.export import export_onnx

    recipe.validate(until="export")
    check_writable(path)
    return export_onnx(model or build_model(recipe), path, img_size=recipe.image_size, max_batch=recipe.max_batch)


def _export(run: EngineRun) -> dict[str, Any]:
    if run.runner.records:  # export runs again: the model changed, so nothing made from the previous one stays
        run.remove_previous_model()
    # The model is recorded with its export: the benchmark and the next run read which model the folder holds.
    return {"onnx": str(export_model(run.recipe, run.files.onnx, run.model())), "model": run.model_record.to_json()}


def _surgery(run: EngineRun) -> dict[str, Any]:
    from pipeline.stages.surgery import replace_window_attention

    report = replace_window_attention(run.files.onnx, run.files.swin, report_path=run.files.surgery_report,
                                      attention=run.recipe.attention)
    return report.summary()


def _check(run: EngineRun) -> dict[str, Any]:
    from pipeline.stages.check import compare_onnx

    batches = tuple(sorted({min(b, run.recipe.max_batch) for b in CHECK_BATCHES}))
    return compare_onnx(run.files.onnx, run.files.swin, batches).raise_if_failed().summary()


def _precision(run: EngineRun) -> dict[str, Any]:
    from pipeline.stages.precision import convert_fp16

    recipe, files = run.recipe, run.files
    if recipe.precision == "fp32":
        files.typed.unlink(missing_ok=True)
        files.typed.hardlink_to(files.swin)  # the surgered graph is already the FP32 one
        return {"precision": "fp32"}
    if recipe.precision == "fp16":
        return convert_fp16(files.swin, files.typed).to_json()
    from pipeline.stages import int8

    images = recipe.image_plan().calibration
    assert images is not None  # INT8 always calibrates
    calibration = int8.run(files.swin, files.qdq, calib_dir=images.folder, calib_files=images.files,
                           samples=recipe.calib_samples, method=recipe.calib_method, exclude=recipe.calib_exclude,
                           cache_path=files.calibration_cache)
    return {"calibration": calibration.to_json(), "images": images.summary(),
            "fp16": convert_fp16(files.qdq, files.typed).to_json()}


def _build(run: EngineRun) -> dict[str, Any]:
    from pipeline.tensorrt.build import build_checked

    assert run.build_options is not None  # make_engine validated the recipe up to the build
    return build_checked(run.files.typed, run.files.engine, run.build_options,
                         timing_cache=run.files.timing_cache).to_json()


def _verify(run: EngineRun) -> dict[str, Any]:
    from pipeline.stages.verify import verify

    recipe = run.recipe
    return verify(run.model(), run.files.engine, recipe.precision,
                  image_dir=recipe.image_plan(run.files.out).verification,
                  batch=min(8, recipe.max_batch), out_path=run.files.verify_report,
                  plugin_library=recipe.plugin, onnx_path=run.files.typed,
                  model_record=run.model_record.to_json()).summary()


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of :func:`make_engine`: what it reads, writes and depends on, and what runs it.

    ``params`` and the hashes of ``inputs`` make the stage's fingerprint; a stage whose fingerprint is unchanged
    and whose ``outputs`` exist is reused.
    """

    name: str
    run: Callable[[EngineRun], dict[str, Any]]
    inputs: Callable[[EngineRun], list[Path]]
    outputs: Callable[[EngineRun], list[Path]]
    params: Callable[[EngineRun], dict[str, Any]] = lambda run: {}


def _model_params(run: EngineRun) -> dict[str, Any]:
    # The checkpoint enters the fingerprints as the hash model_record already took, not as a file to hash again.
    recipe = run.recipe
    return {"variant": recipe.variant.upper(), "img_size": recipe.image_size, "max_batch": recipe.max_batch,
            "features_only": recipe.features_only, "checkpoint_sha256": run.model_record.checkpoint_sha256}


def _precision_params(run: EngineRun) -> dict[str, Any]:
    recipe = run.recipe
    if recipe.precision != "int8":
        return {"precision": recipe.precision}
    images = recipe.image_plan().calibration
    assert images is not None  # INT8 always calibrates
    # The files calibration reads, not the whole folder: the split decides them (a held-out file is not among them).
    return {"precision": "int8", "calib_dir": recipe.calib_dir, "samples": recipe.calib_samples,
            "method": recipe.calib_method, "exclude": recipe.calib_exclude, "images": images.summary(),
            "listing": images.listing()}


def _build_params(run: EngineRun) -> dict[str, Any]:
    recipe = run.recipe
    return {"batch": recipe.batch, "backend": recipe.backend, "sm": recipe.sm, "opt_level": recipe.opt_level,
            "embed_plugin": recipe.embed_plugin, "detailed_profile": recipe.detailed_profile}


def _build_inputs(run: EngineRun) -> list[Path]:
    plugin = run.recipe.plugin
    return [run.files.typed] if plugin is None else [run.files.typed, Path(plugin)]


def _verify_params(run: EngineRun) -> dict[str, Any]:
    recipe = run.recipe
    images = recipe.image_plan(run.files.out).verification
    return {"precision": recipe.precision, "images": images.summary(), "listing": images.listing(),
            "checkpoint_sha256": run.model_record.checkpoint_sha256}


#: The pipeline, in order.
STAGES: tuple[Stage, ...] = (
    Stage("export", _export, inputs=lambda run: [], outputs=lambda run: [run.files.onnx], params=_model_params),
    Stage("surgery", _surgery, inputs=lambda run: [run.files.onnx],
          outputs=lambda run: [run.files.swin, run.files.surgery_report],
          params=lambda run: {"attention": run.recipe.attention}),
    Stage("check", _check, inputs=lambda run: [run.files.onnx, run.files.swin], outputs=lambda run: [],
          params=lambda run: {"batches": CHECK_BATCHES}),
    Stage("precision", _precision, inputs=lambda run: [run.files.swin], outputs=lambda run: [run.files.typed],
          params=_precision_params),
    Stage("build", _build, inputs=_build_inputs,
          outputs=lambda run: [run.files.engine, run.files.engine_metadata], params=_build_params),
    Stage("verify", _verify, inputs=lambda run: [run.files.typed, run.files.engine],
          outputs=lambda run: [run.files.verify_report], params=_verify_params),
)
STAGE_NAMES = tuple(stage.name for stage in STAGES)


def _stages_until(until: str) -> tuple[str, ...]:
    if until not in STAGE_NAMES:
        raise PipelineError(f"unknown stage {until!r}: expected one of {', '.join(STAGE_NAMES)}")
    return STAGE_NAMES[:STAGE_NAMES.index(until) + 1]


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
            return _run_stages(EngineRun(recipe, out, build_options), _stages_until(until))
        except BaseException:
            if created and not any(out.iterdir()):
                out.rmdir()
            raise


def _run_stages(run: EngineRun, names: tuple[str, ...]) -> EngineReport:
    for stage in STAGES[:len(names)]:
        run.runner.run(stage.name, stage.params(run), stage.inputs(run), stage.outputs(run),
                       lambda stage=stage: stage.run(run))
    built = "build" in names
    report = EngineReport(variant=run.recipe.variant.upper(), precision=run.recipe.precision,
                          engine=run.files.engine if built else None, model=run.model_record,
                          stages=dict(run.runner.summary))
    write_json(run.files.report, report.to_json())
    reused = [name for name, record in report.stages.items() if record.reused]
    log.info("engine: %s ready (%d stages, %d reused: %s); report in %s", report.engine or run.files.swin,
             len(report.stages), len(reused), ", ".join(reused) or "none", run.files.report)
    return report


__all__ = ["DEFAULT_PLUGIN", "PRECISIONS", "STAGES", "EngineRecipe", "EngineReport", "ModelRecord", "build_model",
           "export_model", "make_engine", "recorded_model"]
