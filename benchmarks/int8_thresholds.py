"""What INT8 verification measures, on held-out and on calibration images: the numbers behind its thresholds.

Swin-T with perturbed random weights, classifier and features-only backbone, calibrated (percentile 99.99) on
generated crops (seed 0), made INT8+FP16 as the precision stage does, run on onnxruntime against PyTorch on held-out
crops (seed 1) and on the calibration samples; a broken calibration (every clip value a quarter) shows what the
thresholds must catch. ``max_rel``: each batch's max absolute error over max(1, its max |reference|), the largest
over the batches. Writes ``build/bench/int8_thresholds_<name>_<UTC time>.json`` (docs/design.md §5d).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.report import RUNS_DIR, timestamped, utc_now, write_new
from calib.quantize import find_quantizable_layers, insert_qdq
from pipeline.common.artifacts import write_json
from pipeline.common.compare import ComparisonMetrics, relative_error
from pipeline.common.images import generate_image_folder, load_image_set
from pipeline.common.onnx_io import ort_session, write_onnx
from pipeline.models import build_swin, perturb_weights_
from pipeline.stages.export import export_onnx
from pipeline.stages.int8 import ATTENTION_OPS, quantize_int8
from pipeline.stages.precision import convert_fp16
from pipeline.stages.surgery import replace_window_attention

BATCH = 8


def compare(model: torch.nn.Module, typed: Path, images: np.ndarray) -> dict[str, Any]:
    """Metrics of every output of the INT8+FP16 graph against PyTorch, and the largest per-batch max_rel."""
    session = ort_session(typed)
    names = [o.name for o in session.get_outputs()]
    metrics = {name: ComparisonMetrics() for name in names}
    max_rel = dict.fromkeys(names, 0.0)
    for start in range(0, len(images), BATCH):
        feed = images[start:start + BATCH]
        with torch.no_grad():
            reference = model(torch.from_numpy(feed))
        reference = [reference] if isinstance(reference, torch.Tensor) else list(reference)
        for name, expected, actual in zip(names, reference, session.run(names, {"images": feed}), strict=True):
            metrics[name].add(expected.numpy(), actual)
            max_rel[name] = max(max_rel[name], relative_error(expected.numpy().astype(np.float64), actual))
    return {name: {**metrics[name].result().to_json(), "max_rel": max_rel[name]} for name in names}


def case(folder: Path, features_only: bool, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_swin("T", features_only=features_only)
    if args.weights == "perturbed":
        model = perturb_weights_(model)
    onnx_path = export_onnx(model, folder / "model.onnx", max_batch=BATCH)
    swin = folder / "model.swin.onnx"
    replace_window_attention(onnx_path, swin)
    calib_dir = generate_image_folder(folder / "calib", args.calib_samples, seed=0)
    report = quantize_int8(swin, folder / "qdq.onnx", calib_dir=calib_dir, samples=args.calib_samples)
    convert_fp16(folder / "qdq.onnx", folder / "typed.onnx")
    held_out = load_image_set(generate_image_folder(folder / "eval", args.eval_samples, seed=1),
                              args.eval_samples, seed=1).images
    calibration = load_image_set(calib_dir, args.calib_samples, seed=0).images[:args.eval_samples]

    # Broken on purpose: every activation clipped at a quarter of its calibrated range.
    amax = {name: entry["amax"] / 4 for name, entry in json.loads(report.cache.read_text())["tensors"].items()}
    broken = onnx.load(str(swin))
    insert_qdq(broken, find_quantizable_layers(broken, ATTENTION_OPS), amax)
    write_onnx(broken, folder / "broken.qdq.onnx")
    convert_fp16(folder / "broken.qdq.onnx", folder / "broken.typed.onnx")
    return {"held_out": compare(model, folder / "typed.onnx", held_out),
            "calibration_images": compare(model, folder / "typed.onnx", calibration),
            "broken_clip_quarter_held_out": compare(model, folder / "broken.typed.onnx", held_out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="swin_t")
    parser.add_argument("--calib-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--weights", choices=("perturbed", "init"), default="perturbed",
                        help="init: timm's initialization unperturbed, what make_engine builds without a checkpoint")
    parser.add_argument("--models", default="classifier,features_only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    weights = "seed 0 + N(0, 0.02)" if args.weights == "perturbed" else "seed 0 (timm's initialization)"
    result: dict[str, Any] = {"model": f"Swin-T, random weights {weights}, 224x224",
                              "calibration": f"percentile 99.99 on {args.calib_samples} generated crops (seed 0)",
                              "eval_samples": args.eval_samples, "onnxruntime": ort.__version__,
                              "machine": platform.machine()}
    for label in args.models.split(","):
        features_only = label == "features_only"
        with tempfile.TemporaryDirectory() as tmp:
            result[label] = case(Path(tmp), features_only, args)
        for where, outputs in result[label].items():
            for name, m in outputs.items():
                print(f"{label} {where} {name}: SQNR {m['sqnr_db']:.1f} dB, cosine min {m['cosine_min']:.5f}, "
                      f"top-1 {m['top1_agreement']}, max_rel {m['max_rel']:.4f}, max_abs {m['max_abs']:.4f}",
                      flush=True)
    [out] = write_new(RUNS_DIR / timestamped(f"int8_thresholds_{args.name}", utc_now()),
                      {".json": lambda path: write_json(path, result)})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
