"""The INT8 precision stage: surgered FP32 ONNX → the same graph with calibrated Q/DQ, plus a reusable cache.

    from pipeline.stages.int8 import quantize_int8
    report = quantize_int8("build/swin_t/model.swin.onnx", "build/swin_t/model.swin.qdq.onnx", calib_dir="photos/")

calib/ is the library beneath (ranges and Q/DQ insertion, importing nothing from pipeline/); this module is what
the pipeline adds: the calibration images, the cache keyed by the model's and the samples' SHA-256, onnxruntime
sessions in which ``SwinWindowAttention`` runs through the reference op, the atomic write, the log lines and the
typed report. calib's errors (an exclusion that matches nothing, a graph it cannot read) become PipelineErrors.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from calib import (
    METHODS,
    CalibrationError,
    QuantizableLayer,
    amax_from_statistics,
    collect_statistics,
    default_exclusions,
    find_quantizable_layers,
    insert_qdq,
    select_excluded,
)
from pipeline.common.artifacts import check_writable, file_sha256, write_json
from pipeline.common.attention import ONNX_ATTENTION_OP
from pipeline.common.errors import PipelineError
from pipeline.common.images import GENERATED_FOLDER_NAME, ImageSet, generate_image_folder, load_image_set
from pipeline.common.onnx_io import InterruptibleSession, graph_input, ort_session, read_onnx, write_onnx
from pipeline.common.progress import advance
from pipeline.common.records import JsonRecord
from pipeline.kernels.reference import PLUGIN_OP

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob

log = logging.getLogger(__name__)

#: Bumped whenever what a cache entry means changes (binning, method definitions).
CACHE_FORMAT = 1
DEFAULT_METHOD = "percentile"
#: What a qkv projection feeds and a proj projection reads: the plugin node, or (``--attention tensorrt``) the ONNX
#: Attention node with the head split / merge between them (pipeline.stages.surgery).
ATTENTION_OPS = frozenset({PLUGIN_OP, ONNX_ATTENTION_OP})
#: Pixels per calibration run: 8 images of 224×224. Each run returns every quantized layer's input at once, so
#: larger images go fewer to a run. Measured, a Swin-T backbone at 800×1333: peak 4.3 GB at 1 image a run, 7.1 GB
#: at 2, and more than the machine's 23 GB at the former fixed 8.
CALIBRATION_PIXELS_PER_RUN = 8 * 224 * 224


@dataclass(frozen=True)
class CalibrationImages(JsonRecord):
    """The samples calibration read (:meth:`pipeline.common.images.ImageSet.report`) and whether they were generated."""

    folder: str
    files_found: int
    files_used: int
    files_skipped: int
    skipped: tuple[str, ...]
    samples: int
    augmented_samples: int
    generated: bool

    @classmethod
    def of(cls, images: ImageSet, generated: bool) -> CalibrationImages:
        report = images.report()
        return cls(**{**report, "skipped": tuple(report["skipped"])}, generated=generated)


@dataclass(frozen=True)
class Int8Timing(JsonRecord):
    """Seconds per step of :func:`run`."""

    load_images: float
    calibrate: float
    quantize_and_write: float
    total: float


@dataclass(frozen=True)
class Int8Report(JsonRecord):
    """What :func:`run` did; the precision stage records its ``to_json()`` as ``calibration``."""

    input: Path
    output: Path
    method: str
    percentile: float | None  #: None unless ``method`` is percentile
    samples: int
    calibration: CalibrationImages
    cache: Path
    cache_hit: bool
    exclude: tuple[str, ...]
    quantized_layers: tuple[QuantizableLayer, ...]
    excluded_layers: tuple[QuantizableLayer, ...]
    timing_s: Int8Timing


@dataclass(frozen=True)
class CacheKey(JsonRecord):
    """What a cache entry was calibrated from: it is reused only when every field matches."""

    format: int
    model_sha256: str
    #: of the samples' crops: covers the folder's contents, the seed, the count and the image size at once
    data_sha256: str
    samples: int
    method: str
    percentile: float | None

    @classmethod
    def of(cls, model_sha256: str, pixels: np.ndarray, method: str, percentile: float) -> CacheKey:
        return cls(CACHE_FORMAT, model_sha256, hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(),
                   len(pixels), method, percentile if method == "percentile" else None)


def _read_cache(path: Path, key: CacheKey, tensors: Sequence[str]) -> dict[str, float] | None:
    """The cached amax per tensor if ``path`` holds an entry for ``key`` covering ``tensors``, else None."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or any(cached.get(k) != v for k, v in key.to_json().items()):
        return None
    entries = cached.get("tensors", {})
    if not set(tensors) <= set(entries):
        return None
    return {name: float(entries[name]["amax"]) for name in tensors}


def _write_cache(path: Path, key: CacheKey, calib_dir: Path, amax: dict[str, float]) -> None:
    write_json(path, {**key.to_json(), "calib_dir": str(calib_dir), "tensors": {
        name: {"amax": value, "scale": value / 127} for name, value in amax.items()}})


def graph_image_size(model: onnx.ModelProto, source: Path) -> tuple[int, int]:
    """(H, W) of the graph's ``[B, 3, H, W]`` image input; a PipelineError if they are not fixed numbers."""
    name, dims = graph_input(model, None, source)
    if len(dims) != 4:
        raise PipelineError(f"input {name!r} of {source} has shape {dims}, not [B, 3, H, W]; pass img_size")
    return (dims[2], dims[3])


def calibration_batch(img_size: int | tuple[int, int]) -> int:
    """Images per calibration run at ``img_size``: as many as :data:`CALIBRATION_PIXELS_PER_RUN` allows, at least 1."""
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return max(1, CALIBRATION_PIXELS_PER_RUN // (height * width))


def calibration_session(model: onnx.ModelProto) -> InterruptibleSession:
    """The session calibration runs ``model`` in (calib's ``new_session``): the reference op for the plugin's
    nodes, and onnxruntime's CPU arena kept, which pays for many runs at one shape."""
    return ort_session(model, memory_arena=True)


def calibration_images(calib_dir: str | Path | None, samples: int, seed: int, size: int | tuple[int, int],
                       out_dir: Path, files: Sequence[Path] | None = None) -> tuple[ImageSet, Path]:
    """``samples`` calibration samples from ``files`` (default: every image) under ``calib_dir``, or from crops of
    the scikit-image photos generated into ``out_dir``; and the folder. Logs how many are photos and how many
    augmented crops of them (the folder holds fewer photos than ``samples``)."""
    if calib_dir is None:
        calib_dir = out_dir / GENERATED_FOLDER_NAME
        log.warning("no calibration folder given: calibrating on %d generated crops of scikit-image photos in %s; "
                    "pass a folder of images from the deployment domain for real accuracy", samples, calib_dir)
        generate_image_folder(calib_dir, samples, seed)
    calibration = load_image_set(calib_dir, samples, seed, size, files=files)
    photos = len(calibration.files_used)
    if calibration.augmented_samples:  # repeated photos weigh more in the ranges than the others: say so
        log.warning("calibration: %d photos + %d augmented crops = %d samples from %s; put %d or more photos there "
                    "to calibrate on distinct ones", photos, calibration.augmented_samples, len(calibration), calib_dir,
                    samples)
    else:
        log.info("calibration: %d photos = %d samples from %s", photos, len(calibration), calib_dir)
    return calibration, Path(calib_dir)


def _layers(model: onnx.ModelProto, source: Path,
            exclude: Sequence[str] | None) -> tuple[list[QuantizableLayer], set[str], tuple[str, ...]]:
    """Every quantizable layer, the names of the excluded ones, and the selectors (``None``: the default)."""
    layers = find_quantizable_layers(model, ATTENTION_OPS)
    if not layers:
        raise PipelineError(f"{source} has no MatMul/Gemm/Conv layer with constant weights to quantize")
    if exclude is None:
        exclude = default_exclusions(model)
        if exclude:
            log.info("int8: Swin-L detected (embed dim 192): keeping %s in higher precision (docs/design.md §4); "
                     "pass exclude=() to quantize them too", ", ".join(exclude))
    return layers, select_excluded(layers, exclude), tuple(exclude)


def _ranges(model: onnx.ModelProto, calibration: ImageSet, folder: Path, tensors: Sequence[str], key: CacheKey,
            cache_path: Path, batch: int, percentile: float) -> tuple[dict[str, float], bool]:
    """The clip value of each of ``tensors``, and whether it came from the cache: from ``cache_path`` if its entry
    matches ``key``, else calibrated on ``calibration`` (two runs of the model, one for ``max``) and cached."""
    amax = _read_cache(cache_path, key, tensors)
    if amax is not None:
        return amax, True
    stats = collect_statistics(model, calibration, tensors, batch, histograms=key.method != "max",
                               new_session=calibration_session, progress=advance)
    amax = amax_from_statistics(stats, key.method, percentile)
    _write_cache(cache_path, key, folder, amax)
    return amax, False


@contextlib.contextmanager
def _calibration_errors() -> Iterator[None]:
    """calib's errors name the input and what to do; as PipelineErrors the CLI shows them as one line (exit 2)."""
    try:
        yield
    except CalibrationError as error:
        raise PipelineError(str(error)) from error


@_calibration_errors()
def quantize_int8(onnx_path: str | Path, out_path: str | Path, *, calib_dir: str | Path | None = None,
        calib_files: Sequence[Path] | None = None, samples: int = 256, method: str = DEFAULT_METHOD,
        percentile: float = 99.99, exclude: Sequence[str] | None = None, cache_path: str | Path | None = None,
        batch: int | None = None, seed: int = 0, img_size: int | tuple[int, int] | None = None) -> Int8Report:
    """Calibrate the surgered FP32 graph at ``onnx_path`` and write it with INT8 Q/DQ to ``out_path`` (atomically).

    The CLI's options mirror the arguments (calib/README.md has the details):
    - ``calib_dir``: calibration photos, searched recursively; None: generated crops of scikit-image photos in
      ``<out dir>/generated-calibration-images`` and a warning. ``calib_files``: only these files under it.
    - ``samples``: calibration images (more than the folder holds: extra random crops/flips); ``seed``: their
      sampling and augmentation; ``img_size``: int or (H, W), default the graph input's.
    - ``method``: ``percentile`` (clipping at the ``percentile`` of |x|), ``max`` or ``entropy``.
    - ``exclude``: layers kept in the graph's precision: roles, globs over layer names or ONNX node names. None:
      ``fc2`` and ``patch_merging`` for Swin-L, nothing for the others; ``()`` quantizes every layer.
    - ``cache_path``: default ``<out_path without .onnx>.calib.json``; reused when the model file, the samples,
      the method and the percentile are unchanged.
    - ``batch``: images per onnxruntime run (default :func:`calibration_batch`; memory, never the ranges).
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise PipelineError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    for path in (out_path, cache_path):
        if path is not None:
            check_writable(path)
    model = read_onnx(onnx_path)
    layers, excluded, exclude = _layers(model, onnx_path, exclude)
    quantized = [layer for layer in layers if layer.name not in excluded]
    size = graph_image_size(model, onnx_path) if img_size is None else img_size
    calibration, folder = calibration_images(calib_dir, samples, seed, size, out_path.parent, files=calib_files)
    loaded = time.perf_counter()

    tensors = list(dict.fromkeys(layer.activation for layer in quantized))
    cache_path = Path(cache_path) if cache_path is not None else out_path.with_suffix(".calib.json")
    key = CacheKey.of(file_sha256(onnx_path), calibration.pixels, method, percentile)
    amax, cache_hit = _ranges(model, calibration, folder, tensors, key, cache_path,
                              calibration_batch(size) if batch is None else batch, percentile)
    calibrated = time.perf_counter()
    insert_qdq(model, quantized, amax)
    write_onnx(model, out_path)
    finished = time.perf_counter()

    report = Int8Report(
        input=onnx_path, output=out_path, method=method, percentile=key.percentile, samples=samples,
        calibration=CalibrationImages.of(calibration, generated=calib_dir is None), cache=cache_path,
        cache_hit=cache_hit, exclude=exclude, quantized_layers=tuple(quantized),
        excluded_layers=tuple(layer for layer in layers if layer.name in excluded),
        timing_s=Int8Timing(load_images=round(loaded - started, 2), calibrate=round(calibrated - loaded, 2),
                            quantize_and_write=round(finished - calibrated, 2), total=round(finished - started, 2)))
    log.info("int8: %s calibration on %d %s samples, %d layers quantized, %d excluded, cache %s, %.1f s → %s",
             method, samples, "generated" if report.calibration.generated else "photo", len(quantized),
             len(excluded), "hit" if cache_hit else "miss", finished - started, out_path)
    return report


def run(job: EngineJob) -> Int8Report:
    """make_engine's calibration (INT8 precision only): the surgered graph to ``model.swin.qdq.onnx``, on the images
    the job's plan gives calibration."""
    recipe, files = job.recipe, job.files
    images = recipe.image_plan().calibration
    assert images is not None  # INT8 always calibrates
    return quantize_int8(files.swin, files.qdq, calib_dir=images.folder, calib_files=images.files,
                         samples=recipe.calib_samples, method=recipe.calib_method, exclude=recipe.calib_exclude,
                         cache_path=files.calibration_cache,
                         img_size=None if recipe.img_range is None else recipe.img_range.opt)
