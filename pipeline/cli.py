"""``python -m pipeline``: a thin command line over the stage functions.

    python -m pipeline export  --variant T --out build/swin_t/model.onnx
    python -m pipeline surgery build/swin_t/model.onnx build/swin_t/model.swin.onnx --report surgery.json
    python -m pipeline check   build/swin_t/model.onnx build/swin_t/model.swin.onnx
    python -m pipeline onnx    --variant T --out-dir build/swin_t      (export + surgery + check)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from pipeline.artifacts import write_json
from pipeline.check import compare_onnx
from pipeline.errors import PipelineError
from pipeline.export import export_onnx
from pipeline.models import VARIANTS, build_swin, variant_config
from pipeline.surgery import replace_window_attention

log = logging.getLogger("pipeline")


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,3, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _img_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(v) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an image size like 224 or 256x320, got {text!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected an image size like 224 or 256x320, got {text!r}")
    return (parts[0], parts[-1])


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="T", help=f"Swin variant: {', '.join(VARIANTS)} (default T)")
    parser.add_argument("--checkpoint", help="official, timm or torchvision checkpoint (.pth or .safetensors); "
                                             "without one the weights are random (seed 0)")
    parser.add_argument("--img-size", type=_img_size, help="input size, e.g. 224 or 256x320 (default: the "
                                                           "variant's)")
    parser.add_argument("--features-only", action="store_true", help="export the backbone's four stage maps")
    parser.add_argument("--max-batch", type=int, default=32, help="largest batch of the dynamic batch dimension")


def _build_model(args: argparse.Namespace) -> tuple[torch.nn.Module, tuple[int, int]]:
    config = variant_config(args.variant)
    size = args.img_size or (config.img_size, config.img_size)
    if args.checkpoint is None:
        log.warning("no --checkpoint: Swin-%s gets random weights (seed 0); fine for testing the pipeline, "
                    "meaningless for accuracy", args.variant.upper())
        torch.manual_seed(0)
    model = build_swin(args.variant, args.checkpoint, features_only=args.features_only)
    return model, size


def _export(args: argparse.Namespace, out: Path) -> Path:
    model, size = _build_model(args)
    return export_onnx(model, out, img_size=size, max_batch=args.max_batch)


def _surgery(in_path: Path, out_path: Path, report_path: Path | None) -> dict:
    report = replace_window_attention(in_path, out_path)
    if report_path is not None:
        write_json(report_path, report)
    log.info("surgery: %d blocks replaced (%d shifted), %d → %d nodes, self-check error %.1e",
             report["blocks_replaced"], report["blocks_shifted"], report["node_count_before"],
             report["node_count_after"], report["max_rel_error"])
    return report


def _check(reference: Path, candidate: Path, batches: tuple[int, ...], tolerance: float) -> dict:
    result = compare_onnx(reference, candidate, batches, tolerance)
    worst = max(r["max_abs_error"] for r in result["results"])
    if not result["passed"]:
        raise PipelineError(f"{candidate} differs from {reference} by up to {worst:.2e} (tolerance {tolerance:.0e}); "
                            f"details: {json.dumps(result['results'])}")
    log.info("check: %s matches %s to %.1e on batches %s", candidate, reference, worst, list(batches))
    return result


def _run(args: argparse.Namespace) -> None:
    if args.command == "export":
        _export(args, Path(args.out))
    elif args.command == "surgery":
        report = _surgery(Path(args.input), Path(args.output), Path(args.report) if args.report else None)
        if args.report is None:
            print(json.dumps({k: v for k, v in report.items() if k != "blocks"}, indent=2))
    elif args.command == "check":
        print(json.dumps(_check(Path(args.reference), Path(args.candidate), args.batch, args.tolerance), indent=2))
    elif args.command == "onnx":
        out_dir = Path(args.out_dir)
        timings = {}
        start = time.perf_counter()
        onnx_path = _export(args, out_dir / "model.onnx")
        timings["export_s"] = time.perf_counter() - start
        start = time.perf_counter()
        swin_path = out_dir / "model.swin.onnx"
        _surgery(onnx_path, swin_path, out_dir / "surgery.json")
        timings["surgery_s"] = time.perf_counter() - start
        start = time.perf_counter()
        _check(onnx_path, swin_path, (1, min(3, args.max_batch)), 1e-4)
        timings["check_s"] = time.perf_counter() - start
        log.info("onnx: wrote %s, %s and %s (%s)", onnx_path, swin_path, out_dir / "surgery.json",
                 ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description="Swin Transformer → TensorRT pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="PyTorch → ONNX (dynamic batch, checked in onnxruntime)")
    _model_args(export)
    export.add_argument("--out", required=True, help="output .onnx path")

    surgery = sub.add_parser("surgery", help="replace window attention with SwinWindowAttention nodes")
    surgery.add_argument("input", help="exported .onnx (ours, timm or torchvision)")
    surgery.add_argument("output", help="surgered .onnx to write")
    surgery.add_argument("--report", help="write the JSON report here (default: print it)")

    check = sub.add_parser("check", help="compare two ONNX models in onnxruntime (reference op for the plugin)")
    check.add_argument("reference", help="reference .onnx, e.g. model.onnx")
    check.add_argument("candidate", help="candidate .onnx, e.g. model.swin.onnx")
    check.add_argument("--batch", type=_batches, default=(1, 3), help="batch sizes, e.g. 1,3")
    check.add_argument("--tolerance", type=float, default=1e-4, help="max abs error relative to output scale")

    onnx_cmd = sub.add_parser("onnx", help="export + surgery + check into one folder")
    _model_args(onnx_cmd)
    onnx_cmd.add_argument("--out-dir", required=True, help="folder for model.onnx, model.swin.onnx, surgery.json")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        _run(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no partial artifact was left behind", file=sys.stderr)
        return 130
    return 0
