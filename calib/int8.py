"""The INT8 precision stage: surgered FP32 ONNX → the same graph with calibrated Q/DQ, plus a reusable cache."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calib.quantize import default_exclusions, find_quantizable_layers, insert_qdq, select_excluded
from calib.ranges import METHODS, amax_from_statistics, collect_statistics
from pipeline.artifacts import check_writable, file_sha256, write_json
from pipeline.errors import PipelineError
from pipeline.images import GENERATED_FOLDER_NAME, ImageSet, generate_image_folder, load_image_set
from pipeline.onnx_io import graph_input, read_onnx, write_onnx

log = logging.getLogger(__name__)

#: Bumped whenever what a cache entry means changes (binning, method definitions).
CACHE_FORMAT = 1
DEFAULT_METHOD = "percentile"


def graph_image_size(model: onnx.ModelProto, source: Path) -> tuple[int, int]:
    """(H, W) of the graph's ``[B, 3, H, W]`` image input; a PipelineError if they are not fixed numbers."""
    name, dims = graph_input(model, None, source)
    if len(dims) != 4:
        raise PipelineError(f"input {name!r} of {source} has shape {dims}, not [B, 3, H, W]; pass img_size")
    return (dims[2], dims[3])


def _cache_key(model_sha256: str, pixels: np.ndarray, method: str, percentile: float) -> dict[str, Any]:
    # Hashing the samples' crops covers the folder's contents, the seed, the count and the image size at once.
    return {"format": CACHE_FORMAT, "model_sha256": model_sha256,
            "data_sha256": hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest(),
            "samples": len(pixels), "method": method, "percentile": percentile if method == "percentile" else None}


def _read_cache(path: Path, key: dict[str, Any], tensors: Sequence[str]) -> dict[str, float] | None:
    """The cached amax per tensor if ``path`` holds an entry for ``key`` covering ``tensors``, else None."""
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or any(cached.get(k) != v for k, v in key.items()):
        return None
    entries = cached.get("tensors", {})
    if not set(tensors) <= set(entries):
        return None
    return {name: float(entries[name]["amax"]) for name in tensors}


#: Pixels per calibration run: 8 images of 224×224. Each run returns every quantized layer's input at once, so
#: larger images go fewer to a run. Measured, a Swin-T backbone at 800×1333: peak 4.3 GB at 1 image a run, 7.1 GB
#: at 2, and more than the machine's 23 GB at the former fixed 8.
CALIBRATION_PIXELS_PER_RUN = 8 * 224 * 224


def calibration_batch(img_size: int | tuple[int, int]) -> int:
    """Images per calibration run at ``img_size``: as many as :data:`CALIBRATION_PIXELS_PER_RUN` allows, at least 1."""
    height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
    return max(1, CALIBRATION_PIXELS_PER_RUN // (height * width))


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


def quantize_int8(onnx_path: str | Path, out_path: str | Path, *, calib_dir: str | Path | None = None,
                  calib_files: Sequence[Path] | None = None, samples: int = 256, method: str = DEFAULT_METHOD,
                  percentile: float = 99.99, exclude: Sequence[str] | None = None,
                  cache_path: str | Path | None = None, batch: int | None = None, seed: int = 0,
                  img_size: int | tuple[int, int] | None = None) -> dict[str, Any]:
    """Calibrate the surgered FP32 graph at ``onnx_path`` and write it with INT8 Q/DQ to ``out_path`` (atomically).

    Arguments (the CLI's options mirror them):
    - ``calib_dir``: folder of calibration photos, searched recursively (jpg, jpeg, png, bmp, webp, tif, tiff).
      None: crops of the scikit-image photos are generated into ``<out dir>/generated-calibration-images``
      (labelled by a README.txt) and a warning is logged; fine for testing, not for accuracy that matters.
      ``calib_files``: only these files under it (the calibration part of a split folder, pipeline.image_plan).
    - ``samples``: number of calibration images (more than the folder holds: extra random crops/flips).
    - ``method``: ``percentile`` (default; the most accurate in benchmarks/int8_accuracy.py), ``max`` or
      ``entropy`` (TensorRT's EntropyCalibrator2 KL search). ``percentile``: the |x| percentile it clips at.
    - ``exclude``: layers kept in the graph's precision. Each entry is a role (``patch_embed``, ``qkv``, ``proj``,
      ``fc1``, ``fc2``, ``patch_merging``, ``head``), a glob over official-style layer names (``layers.3.*``,
      ``layers.0.blocks.1.mlp.fc2``) or an ONNX node name. None: the default, ``fc2`` and ``patch_merging``
      for Swin-L (embed dim 192, docs/design.md §4), nothing for the others. ``()`` quantizes every layer.
    - ``cache_path``: calibration cache JSON (default ``<out_path without .onnx>.calib.json``); reused when
      the model file, the preprocessed samples, the method and the percentile are unchanged.
    - ``batch``: images per onnxruntime run (default :func:`calibration_batch` of the image size; the ranges do
      not depend on it, the memory does); ``seed``: sampling and augmentation seed;
      ``img_size``: int or (H, W); default read from the graph's input.

    Returns the report: method, samples, images used/skipped, whether the images were generated, the quantized
    and excluded layers (name, role, ONNX node, activation and weight tensors, weight axis), cache hit and
    timings in seconds.
    """
    started = time.perf_counter()
    if method not in METHODS:
        raise PipelineError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    for path in (out_path, cache_path):
        if path is not None:
            check_writable(path)
    model = read_onnx(onnx_path)
    layers = find_quantizable_layers(model)
    if not layers:
        raise PipelineError(f"{onnx_path} has no MatMul/Gemm/Conv layer with constant weights to quantize")
    if exclude is None:
        exclude = default_exclusions(model)
        if exclude:
            log.info("int8: Swin-L detected (embed dim 192): keeping %s in higher precision (docs/design.md §4); "
                     "pass exclude=() to quantize them too", ", ".join(exclude))
    exclude = tuple(exclude)
    excluded = select_excluded(layers, exclude)
    quantized = [layer for layer in layers if layer.name not in excluded]
    size = graph_image_size(model, Path(onnx_path)) if img_size is None else img_size

    generated = calib_dir is None
    calibration, calib_dir = calibration_images(calib_dir, samples, seed, size, out_path.parent, files=calib_files)
    loaded = time.perf_counter()

    tensors = list(dict.fromkeys(layer.activation for layer in quantized))
    cache_path = Path(cache_path) if cache_path is not None else out_path.with_suffix(".calib.json")
    key = _cache_key(file_sha256(onnx_path), calibration.pixels, method, percentile)
    amax = _read_cache(cache_path, key, tensors)
    cache_hit = amax is not None
    if amax is None:
        per_run = calibration_batch(size) if batch is None else batch
        stats = collect_statistics(model, calibration, tensors, per_run, histograms=method != "max")
        amax = amax_from_statistics(stats, method, percentile)
        write_json(cache_path, {**key, "calib_dir": str(calib_dir), "tensors": {
            name: {"amax": value, "scale": value / 127} for name, value in amax.items()}})
    calibrated = time.perf_counter()

    insert_qdq(model, quantized, amax)
    write_onnx(model, out_path)
    finished = time.perf_counter()

    report = {
        "input": str(onnx_path), "output": str(out_path), "method": method,
        "percentile": percentile if method == "percentile" else None, "samples": samples,
        "calibration": {**calibration.report(), "generated": generated}, "cache": str(cache_path),
        "cache_hit": cache_hit, "exclude": list(exclude),
        "quantized_layers": [layer.report() for layer in quantized],
        "excluded_layers": [layer.report() for layer in layers if layer.name in excluded],
        "timing_s": {"load_images": round(loaded - started, 2), "calibrate": round(calibrated - loaded, 2),
                     "quantize_and_write": round(finished - calibrated, 2), "total": round(finished - started, 2)},
    }
    log.info("int8: %s calibration on %d %s samples, %d layers quantized, %d excluded, cache %s, %.1f s → %s",
             method, samples, "generated" if generated else "photo", len(quantized), len(excluded),
             "hit" if cache_hit else "miss", finished - started, out_path)
    return report
