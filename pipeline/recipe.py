"""What to build and where: the recipe, the files of one folder, and the job every stage's ``run`` receives."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from calib import METHODS
from pipeline.common.artifacts import file_sha256
from pipeline.common.attention import TRTATTN_SUFFIX, check_route
from pipeline.common.checkpoint_layout import check_checkpoint
from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import ImagePlan, plan_images
from pipeline.common.image_sizes import SizeRange, format_size
from pipeline.common.images import GENERATED_FOLDER_NAME
from pipeline.common.records import JsonRecord
from pipeline.common.variants import variant_config

if TYPE_CHECKING:
    import torch

    from pipeline.tensorrt.build import BuildOptions

log = logging.getLogger(__name__)

#: The stages of :func:`pipeline.make.make_engine`, in order (``pipeline.make.STAGES`` runs them).
STAGE_NAMES = ("export", "surgery", "check", "precision", "build", "verify")
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PLUGIN = Path("build/plugin/libswin_window_attention_plugin.so")
CALIB_METHODS = METHODS  #: calib/ owns the methods; the recipe refuses others before any stage


def stages_until(until: str) -> tuple[str, ...]:
    """The stages up to and including ``until``."""
    if until not in STAGE_NAMES:
        raise PipelineError(f"unknown stage {until!r}: expected one of {', '.join(STAGE_NAMES)}")
    return STAGE_NAMES[:STAGE_NAMES.index(until) + 1]


@dataclasses.dataclass(frozen=True)
class ModelRecord(JsonRecord):
    """Which weights an engine carries: recorded in report.json and verify.json."""

    variant: str
    features_only: bool
    img_size: tuple[int, int]
    checkpoint: str | None
    checkpoint_sha256: str | None
    weights: str
    img_range: SizeRange | None = None  #: the sizes a dynamic-size engine takes (``img_size`` is then its opt)

    def same_model(self, other: ModelRecord) -> bool:
        """Whether both describe the same network and weights (the checkpoint's path may differ, not its bytes)."""
        key = lambda r: (r.variant, r.features_only, tuple(r.img_size), r.img_range, r.checkpoint_sha256)  # noqa: E731
        return key(self) == key(other)

    def describe(self) -> str:
        """``Swin-T classifier 224x224, random weights (seed 0)``; a checkpoint by name and hash prefix."""
        kind = "backbone" if self.features_only else "classifier"
        weights = self.weights if self.checkpoint is None else \
            f"checkpoint {Path(self.checkpoint).name} ({(self.checkpoint_sha256 or '')[:12]})"
        size = format_size(self.img_size) if self.img_range is None else f"sizes {self.img_range}"
        return f"Swin-{self.variant} {kind} {size}, {weights}"


@dataclasses.dataclass(frozen=True)
class EngineRecipe:
    """What to build: the model, its precision, the engine's batch profile and target, calibration, verification.

    ``img_size`` None is the variant's own size; ``img_range`` instead makes H and W dynamic over a range (one engine
    for every size in it; ``image_size`` is then its opt); ``calib_exclude`` None is the variant's safe list, ``()``
    quantizes every layer; ``images`` is the folder verification compares on (default: the part of ``calib_dir``
    that calibration leaves out, else generated crops of the scikit-image photos; :meth:`image_plan`).
    """

    variant: str = "T"
    checkpoint: Path | None = None
    img_size: tuple[int, int] | None = None
    img_range: SizeRange | None = None
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
        if self.img_range is not None:
            return self.img_range.opt
        return self.img_size or (variant_config(self.variant).img_size,) * 2

    @property
    def model_tag(self) -> str:
        """Names this model's folder, engine and Triton model: ``t``, ``t_384x384`` (not the variant's size),
        ``t_features_800x1333`` (a backbone), ``t_features_320x320-1344x1344`` (a size range), so that different models
        never share a default folder."""
        tag = self.variant.lower() + ("_features" if self.features_only else "")
        if self.img_range is not None:
            return f"{tag}_{format_size(self.img_range.min)}-{format_size(self.img_range.max)}"
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

        stages = stages_until(until)
        variant_config(self.variant)
        check_route(self.attention, self.precision, embed_plugin=self.embed_plugin)
        if self.precision not in PRECISIONS:
            raise PipelineError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.img_size is not None and min(self.img_size) < 1:
            raise PipelineError(f"image size must be positive, got {self.img_size}")
        if self.img_range is not None:
            self._check_range(self.img_range)
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
                                       detailed_profile=self.detailed_profile, sizes=self.img_range)
        return None

    def require_one_size(self, command: str) -> None:
        """PipelineError for a size range where ``command`` measures one image size."""
        if self.img_range is not None:
            raise PipelineError(f"{command} measures one image size, not the range {self.img_range}: give one "
                                f"--img-size / IMG_SIZE, e.g. its opt {format_size(self.img_range.opt)}")

    def _check_range(self, sizes: SizeRange) -> None:
        """A size range is refused where this pipeline cannot build it yet, before any stage."""
        if self.img_size is not None:
            raise PipelineError(f"the recipe has both img_size {self.img_size} and img_range {sizes}; give one")
        sizes.check(smallest=variant_config(self.variant).patch_size * 8)
        if self.attention != "plugin":
            raise PipelineError(f"--img-size {sizes}: a size range needs --attention plugin (its version-2 nodes take "
                                "H and W at run time); the tensorrt route builds one size, so give one --img-size")

    def model_record(self) -> ModelRecord:
        checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        return ModelRecord(variant=self.variant.upper(), features_only=self.features_only, img_size=self.image_size,
                           checkpoint=None if checkpoint is None else str(checkpoint.resolve()),
                           checkpoint_sha256=None if checkpoint is None else file_sha256(checkpoint),
                           weights="checkpoint" if checkpoint is not None else "random (seed 0)",
                           img_range=self.img_range)


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
    """Where :func:`pipeline.make.make_engine` writes each artifact of one recipe (and the plugin it builds with)."""

    out: Path
    model_tag: str  #: EngineRecipe.model_tag
    precision: str
    plugin: Path | None = None  #: EngineRecipe.plugin: an input of the build, None on the tensorrt route

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


class EngineJob:
    """One recipe made into one folder: what every stage's ``run`` receives. The PyTorch model is built on first
    use, once (export and verification both need it)."""

    def __init__(self, recipe: EngineRecipe, out: str | Path, build_options: BuildOptions | None = None) -> None:
        self.recipe = recipe
        self.build_options = build_options  #: from ``recipe.validate``: what the build stage builds with
        self.files = EngineFiles(Path(out), recipe.model_tag, recipe.precision, recipe.plugin)
        self.model_record = recipe.model_record()
        self._model: torch.nn.Module | None = None

    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = build_model(self.recipe)
        return self._model
