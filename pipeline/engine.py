"""Every stage from the PyTorch model to a verified engine: what ``make engine`` and ``python -m pipeline engine`` run.

    from pipeline.engine import EngineRecipe, make_engine
    report = make_engine(EngineRecipe(variant="T", precision="fp16"), "build/swin_t")

:meth:`EngineRecipe.validate` checks everything that is cheap to check (variant, precision, batch profile,
backend and compute capability, plugin library, checkpoint and image folders) before any stage runs, so a typo
fails in seconds, not after export. The stages then run in order through :class:`pipeline.stages.StageRunner`,
which skips a stage whose inputs and parameters are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.artifacts import file_sha256, write_json
from pipeline.errors import PipelineError
from pipeline.stages import StageRunner
from pipeline.variants import variant_config

if TYPE_CHECKING:
    import torch

log = logging.getLogger("pipeline.engine")

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PLUGIN = Path("build/plugin/libswin_window_attention_plugin.so")
CALIB_METHODS = ("max", "percentile", "entropy")


@dataclasses.dataclass(frozen=True)
class EngineRecipe:
    """What to build: the model, its precision, the engine's batch profile and target, calibration, verification.

    ``img_size`` None is the variant's own size; ``calib_exclude`` None is the variant's safe list, ``()``
    quantizes every layer; ``images`` is the folder verification compares on (default: ``calib_dir``, else
    generated crops of the scikit-image photos).
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
    calib_dir: Path | None = None
    calib_samples: int = 256
    calib_method: str = "percentile"
    calib_exclude: tuple[str, ...] | None = None
    images: Path | None = None

    @property
    def image_size(self) -> tuple[int, int]:
        return self.img_size or (variant_config(self.variant).img_size,) * 2

    @property
    def verify_images(self) -> Path | None:
        return self.images or self.calib_dir

    def validate(self) -> None:
        """Raise PipelineError on anything wrong that can be found without running a stage (a few seconds)."""
        from calib.data import list_images
        from pipeline.build import check_build_options

        variant_config(self.variant)
        if self.precision not in PRECISIONS:
            raise PipelineError(f"unknown precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.img_size is not None and min(self.img_size) < 1:
            raise PipelineError(f"image size must be positive, got {self.img_size}")
        if self.calib_method not in CALIB_METHODS:
            raise PipelineError(f"unknown calibration method {self.calib_method!r}: expected one of "
                                f"{', '.join(CALIB_METHODS)}")
        if self.calib_samples < 1:
            raise PipelineError(f"calibration samples must be >= 1, got {self.calib_samples}")
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise PipelineError(f"checkpoint {self.checkpoint} does not exist or is not a file; pass the path of a "
                                ".pth or .safetensors file")
        for folder in dict.fromkeys(f for f in (self.calib_dir, self.images) if f is not None):
            list_images(folder)
        check_build_options(plugin_library=self.plugin_library, batch=self.batch, opt_level=self.opt_level,
                            backend=self.backend, sm=self.sm)

    def model_record(self) -> dict[str, Any]:
        """Which weights the engine carries: recorded in report.json and verify.json."""
        checkpoint = None if self.checkpoint is None else Path(self.checkpoint)
        return {"variant": self.variant.upper(), "features_only": self.features_only,
                "img_size": list(self.image_size),
                "checkpoint": None if checkpoint is None else str(checkpoint.resolve()),
                "checkpoint_sha256": None if checkpoint is None else file_sha256(checkpoint),
                "weights": "checkpoint" if checkpoint is not None else "random (seed 0)"}


def build_model(recipe: EngineRecipe) -> torch.nn.Module:
    """The recipe's PyTorch model; without a checkpoint, random weights from seed 0 (and a warning)."""
    import torch

    from pipeline.models import build_swin

    if recipe.checkpoint is None:
        log.warning("no checkpoint: Swin-%s gets random weights (seed 0); fine for testing the pipeline, "
                    "meaningless for accuracy", recipe.variant.upper())
        torch.manual_seed(0)
    return build_swin(recipe.variant, recipe.checkpoint, features_only=recipe.features_only)


def run_surgery(in_path: Path, out_path: Path, report_path: Path | None) -> dict[str, Any]:
    """:func:`pipeline.surgery.replace_window_attention`, its report written to ``report_path`` and summarized."""
    from pipeline.surgery import replace_window_attention

    report = replace_window_attention(in_path, out_path)
    if report_path is not None:
        write_json(report_path, report)
    log.info("surgery: %d blocks replaced (%d shifted), %d → %d nodes, self-check error %.1e",
             report["blocks_replaced"], report["blocks_shifted"], report["node_count_before"],
             report["node_count_after"], report["max_rel_error"])
    return report


#: What make_engine writes besides model.onnx: removed when the model changes, so no engine, graph or report of the
#: previous weights stays beside the new ones.
_MODEL_ARTIFACTS = ("model.swin.onnx", "model.swin.*.onnx", "surgery.json", "swin_*_*.engine", "swin_*_*.json",
                    "calibration_cache.json", "verify.json", "report.json")


def _remove_previous_model(runner: StageRunner) -> None:
    stale = sorted({path for pattern in _MODEL_ARTIFACTS for path in runner.out_dir.glob(pattern)})
    for path in stale:
        path.unlink()
    runner.forget()
    if stale:
        log.info("engine: the model changed; removed %d artifacts of the previous one from %s: %s", len(stale),
                 runner.out_dir, ", ".join(p.name for p in stale))


def _folder_listing(folder: Path | None) -> list[tuple[str, int, int]]:
    """Names, sizes and mtimes of an image folder: cheap change detection for stage skipping."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted((str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in Path(folder).rglob("*") if p.is_file())


def make_engine(recipe: EngineRecipe, out_dir: str | Path) -> dict[str, Any]:
    """Validate ``recipe``, then run export, surgery, precision, build and verify into ``out_dir``.

    Returns the report also written to ``out_dir/report.json``. A folder this call creates is removed again if
    the run fails before any stage completed, so a typo never leaves an empty folder behind.
    """
    recipe.validate()
    out = Path(out_dir)
    created = not out.exists()
    try:
        return _run_stages(recipe, out)
    except BaseException:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise


def _run_stages(recipe: EngineRecipe, out: Path) -> dict[str, Any]:
    # Imported here: torch, calibration and the build pull in libraries a validation failure should not wait for.
    from calib import quantize_int8
    from pipeline.build import build_engine
    from pipeline.export import export_onnx
    from pipeline.precision import convert_fp16
    from pipeline.verify import verify

    model_cache: list[torch.nn.Module] = []

    def model() -> torch.nn.Module:
        if not model_cache:
            model_cache.append(build_model(recipe))
        return model_cache[0]

    runner = StageRunner(out)
    model_record = recipe.model_record()
    onnx_path, swin_path = out / "model.onnx", out / "model.swin.onnx"
    size, max_batch = recipe.image_size, recipe.batch[2]
    # The checkpoint enters the fingerprints as the hash model_record already took, not as a file to hash again.
    model_params = {"variant": recipe.variant.upper(), "img_size": size, "max_batch": max_batch,
                    "features_only": recipe.features_only, "checkpoint_sha256": model_record["checkpoint_sha256"]}

    def export() -> dict[str, Any]:
        if runner.records:  # export runs again: the model changed, so nothing made from the previous one stays
            _remove_previous_model(runner)
        return {"onnx": str(export_onnx(model(), onnx_path, img_size=size, max_batch=max_batch))}

    runner.run("export", model_params, [], [onnx_path], export)

    def surgery() -> dict[str, Any]:
        report = run_surgery(onnx_path, swin_path, out / "surgery.json")
        return {k: report[k] for k in ("blocks_replaced", "blocks_shifted", "node_count_before", "node_count_after",
                                       "max_rel_error")}

    runner.run("surgery", {}, [onnx_path], [swin_path, out / "surgery.json"], surgery)

    typed_path = out / f"model.swin.{recipe.precision}.onnx"

    def precision() -> dict[str, Any]:
        if recipe.precision == "fp32":
            typed_path.unlink(missing_ok=True)
            typed_path.hardlink_to(swin_path)  # the surgered graph is already the FP32 one
            return {"precision": "fp32"}
        if recipe.precision == "fp16":
            return convert_fp16(swin_path, typed_path)
        qdq_path = out / "model.swin.qdq.onnx"
        calibration = quantize_int8(swin_path, qdq_path, calib_dir=recipe.calib_dir, samples=recipe.calib_samples,
                                    method=recipe.calib_method, exclude=recipe.calib_exclude,
                                    cache_path=out / "calibration_cache.json")
        return {"calibration": calibration, "fp16": convert_fp16(qdq_path, typed_path)}

    calib_params = ({"calib_dir": recipe.calib_dir, "samples": recipe.calib_samples, "method": recipe.calib_method,
                     "exclude": recipe.calib_exclude, "listing": _folder_listing(recipe.calib_dir)}
                    if recipe.precision == "int8" else {})
    runner.run("precision", {"precision": recipe.precision, **calib_params}, [swin_path], [typed_path], precision)

    engine_path = out / f"swin_{recipe.variant.lower()}_{recipe.precision}.engine"
    plugin = Path(recipe.plugin_library)
    build_params = {"batch": recipe.batch, "backend": recipe.backend, "sm": recipe.sm, "opt_level": recipe.opt_level,
                    "embed_plugin": recipe.embed_plugin, "detailed_profile": recipe.detailed_profile}
    runner.run("build", build_params, [typed_path, plugin], [engine_path, engine_path.with_suffix(".json")],
               lambda: build_engine(typed_path, engine_path, plugin_library=plugin, batch=recipe.batch,
                                    backend=recipe.backend, sm=recipe.sm, timing_cache=out.parent / "timing.cache",
                                    opt_level=recipe.opt_level, embed_plugin=recipe.embed_plugin,
                                    detailed_profile=recipe.detailed_profile))

    def verification() -> dict[str, Any]:
        result = verify(model(), engine_path, recipe.precision, image_dir=recipe.verify_images,
                        batch=min(8, max_batch), out_path=out / "verify.json", plugin_library=plugin,
                        onnx_path=typed_path, model_record=model_record)
        return {k: v for k, v in result.items() if k in ("passed", "runners", "executed", "images", "outputs",
                                                          "thresholds")}

    verify_params = {"precision": recipe.precision, "images": recipe.verify_images,
                     "listing": _folder_listing(recipe.verify_images),
                     "checkpoint_sha256": model_record["checkpoint_sha256"]}
    runner.run("verify", verify_params, [typed_path, engine_path], [out / "verify.json"], verification)

    report = {"variant": recipe.variant.upper(), "precision": recipe.precision, "engine": str(engine_path),
              "model": model_record, "stages": runner.summary}
    write_json(out / "report.json", report)
    skipped = [k for k, v in runner.summary.items() if v["skipped"]]
    log.info("engine: %s ready (%d stages, %d reused: %s); report in %s", engine_path, len(runner.summary),
             len(skipped), ", ".join(skipped) or "none", out / "report.json")
    return report


__all__ = ["DEFAULT_PLUGIN", "PRECISIONS", "EngineRecipe", "build_model", "make_engine", "run_surgery"]
