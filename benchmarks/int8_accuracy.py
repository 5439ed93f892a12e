"""INT8 accuracy of the calibration methods: Q/DQ graph vs the FP32 surgered graph, both in onnxruntime (CPU).

Without ``--model``: Swin-T with perturbed random weights (docs/design.md §5b), surgered. Calibration on generated
crops (seed 0), evaluation on others (seed 1); the statistics are collected once (absmax and histogram passes), and a
method's calibration time is the passes it needs plus its threshold search. Methods are ranked by SQNR and minimum
cosine (docs/design.md §5c). Writes ``build/bench/int8_accuracy_<name>_<UTC time>.json``, prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from benchmarks.report import RUNS_DIR, timestamped, utc_now, write_new
from calib.quantize import SWIN_L_EXCLUDE, find_quantizable_layers, insert_qdq, select_excluded
from calib.ranges import ActivationStatistics, amax_from_statistics, collect_absmax, collect_histograms
from pipeline.common.artifacts import write_json
from pipeline.common.compare import comparison_metrics
from pipeline.common.images import generate_image_folder, image_array
from pipeline.common.onnx_io import ort_session
from pipeline.models import build_swin, perturb_weights_
from pipeline.stages.export import export_onnx
from pipeline.stages.int8 import ATTENTION_OPS, calibration_session
from pipeline.stages.surgery import replace_window_attention

#: (label, method, percentile, exclusion selectors)
CONFIGS = (
    ("max", "max", None, ()),
    ("percentile 99.9", "percentile", 99.9, ()),
    ("percentile 99.99", "percentile", 99.99, ()),
    ("percentile 99.999", "percentile", 99.999, ()),
    ("entropy", "entropy", None, ()),
    ("percentile 99.99, fc2 + patch_merging excluded", "percentile", 99.99, SWIN_L_EXCLUDE),
    ("percentile 99.99, head excluded", "percentile", 99.99, ("head",)),
)


def perturbed_swin_t(folder: Path) -> Path:
    """Export + surgery of Swin-T with random weights perturbed like the tests' fixture."""

    torch.manual_seed(0)
    onnx_path = export_onnx(perturb_weights_(build_swin("T")), folder / "model.onnx", max_batch=8)
    replace_window_attention(onnx_path, folder / "model.swin.onnx")
    return folder / "model.swin.onnx"


def run(session: ort.InferenceSession, images: np.ndarray, batch: int) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="surgered FP32 ONNX (default: perturbed random Swin-T)")
    parser.add_argument("--name", default="swin_t", help="result file name part")
    parser.add_argument("--calib-samples", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model_path = args.model or perturbed_swin_t(folder)
        model = onnx.load(str(model_path))
        calib = image_array(generate_image_folder(folder / "calib", args.calib_samples, seed=0),
                                   args.calib_samples, seed=0)
        evaluation = image_array(generate_image_folder(folder / "eval", args.eval_samples, seed=1),
                                        args.eval_samples, seed=1)

    layers = find_quantizable_layers(model, ATTENTION_OPS)
    tensors = list(dict.fromkeys(layer.activation for layer in layers))
    started = time.perf_counter()
    absmax = collect_absmax(model, calib, tensors, args.batch, new_session=calibration_session)
    absmax_s = time.perf_counter() - started
    started = time.perf_counter()
    stats = ActivationStatistics(absmax, collect_histograms(model, calib, absmax, args.batch,
                                                            new_session=calibration_session))
    histogram_s = time.perf_counter() - started

    started = time.perf_counter()
    reference = run(ort_session(model), evaluation, args.batch)
    fp32_eval_s = time.perf_counter() - started
    rows = []
    for label, method, percentile, exclude in CONFIGS:
        started = time.perf_counter()
        amax = amax_from_statistics(stats, method, percentile or 99.99)
        excluded = select_excluded(layers, exclude)
        quantized = onnx.ModelProto.FromString(model.SerializeToString())
        insert_qdq(quantized, [layer for layer in layers if layer.name not in excluded], amax)
        search_and_insert_s = time.perf_counter() - started
        int8 = run(ort_session(quantized), evaluation, args.batch)
        calib_s = absmax_s + (histogram_s if method != "max" else 0.0) + search_and_insert_s
        rows.append({"config": label, "method": method, "percentile": percentile, "exclude": list(exclude),
                     "quantized_layers": len(layers) - len(excluded), **comparison_metrics(reference, int8).to_json(),
                     "calib_and_quantize_s": round(calib_s, 1)})
        print(f"{label}: {rows[-1]}", flush=True)

    result = {"model": str(args.model or "Swin-T, random weights seed 0 + N(0, 0.02)"),
              "calib_samples": args.calib_samples, "eval_samples": args.eval_samples, "batch": args.batch,
              "fp32_logit_std": float(reference.std()),
              "fp32_median_top2_gap": float(np.median(np.diff(np.sort(reference, axis=1)[:, -2:], axis=1))),
              "absmax_pass_s": round(absmax_s, 1), "histogram_pass_s": round(histogram_s, 1),
              "fp32_eval_s": round(fp32_eval_s, 1), "onnxruntime": ort.__version__, "machine": platform.machine(),
              "rows": rows}
    [out] = write_new(RUNS_DIR / timestamped(f"int8_accuracy_{args.name}", utc_now()),
                      {".json": lambda path: write_json(path, result)})
    print("| config | cosine mean / min | SQNR (dB) | top-1 agreement | calib+quant (s) |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['cosine_mean']:.5f} / {row['cosine_min']:.5f} | {row['sqnr_db']:.1f} | "
              f"{row['top1_agreement']:.3f} | {row['calib_and_quantize_s']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
