"""``python -m pipeline``: a thin command line over the stage functions.

    python -m pipeline export  --variant T --out build/swin_t/model.onnx
    python -m pipeline surgery build/swin_t/model.onnx build/swin_t/model.swin.onnx --report surgery.json
    python -m pipeline check   build/swin_t/model.onnx build/swin_t/model.swin.onnx
    python -m pipeline onnx    --variant T --out-dir build/swin_t      (export + surgery + check)
    python -m pipeline fp16    build/swin_t/model.swin.onnx build/swin_t/model.swin.fp16.onnx
    python -m pipeline quantize build/swin_t/model.swin.onnx build/swin_t/model.swin.qdq.onnx --calib-dir photos/
    python -m pipeline build   build/swin_t/model.swin.fp16.onnx build/swin_t/swin_t_fp16.engine --batch 1,8,32
    python -m pipeline check-engine build/swin_t/swin_t_fp16.engine
    python -m pipeline engine  --variant T --precision fp16 --out-dir build/swin_t   (every stage, incrementally)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import NoReturn

from pipeline.engine import DEFAULT_PLUGIN, PRECISIONS, EngineRecipe, build_model, make_engine, run_surgery
from pipeline.errors import PipelineError
from pipeline.variants import VARIANTS

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


def _batch_profile(text: str) -> tuple[int, int, int]:
    """``1,8,32`` → (min 1, opt 8, max 32); one value fixes the batch, two are min and max (opt = max)."""
    values = _batches(text)
    if len(values) > 3 or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"expected min[,opt],max in increasing order like 1,8,32, got {text!r}")
    return (values[0], values[len(values) // 2] if len(values) == 3 else values[-1], values[-1])


def _calib_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calib-dir", help="calibration images (INT8); default: a generated folder of photos")
    parser.add_argument("--calib-samples", type=int, default=256, help="calibration images to use (INT8)")
    parser.add_argument("--calib-method", choices=("max", "percentile", "entropy"), default="percentile")
    parser.add_argument("--calib-exclude", nargs="*", help="layers kept out of INT8: roles (fc2, patch_merging, "
                                                           "head ...), globs (layers.3.*) or node names; default: "
                                                           "the variant's safe list; no value: quantize all")


def _build_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch", type=_batch_profile, default=(1, 8, 32),
                        help="optimization profile min,opt,max (default 1,8,32)")
    parser.add_argument("--backend", choices=("auto", "tensorrt", "rtx"), default="auto")
    parser.add_argument("--sm", type=int, default=86, help="compute capability for TensorRT-RTX (default 86)")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0-5")
    parser.add_argument("--embed-plugin", action="store_true", help="store the plugin library inside the engine")
    parser.add_argument("--detailed-profile", action="store_true",
                        help="ProfilingVerbosity.DETAILED, so `make profile` can describe every layer")
    parser.add_argument("--plugin", default=str(DEFAULT_PLUGIN), help="plugin library (make plugin builds it)")


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", default="T", help=f"Swin variant: {', '.join(VARIANTS)} (default T)")
    parser.add_argument("--checkpoint", help="official, timm or torchvision checkpoint (.pth or .safetensors); "
                                             "without one the weights are random (seed 0)")
    parser.add_argument("--img-size", type=_img_size, help="input size, e.g. 224 or 256x320 (default: the "
                                                           "variant's)")
    parser.add_argument("--features-only", action="store_true", help="export the backbone's four stage maps")


def _max_batch_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=int, default=32, help="largest batch of the dynamic batch dimension")


def _export(args: argparse.Namespace, out: Path) -> Path:
    from pipeline.export import export_onnx

    recipe = EngineRecipe(variant=args.variant, checkpoint=_optional_path(args.checkpoint), img_size=args.img_size,
                          features_only=args.features_only)
    return export_onnx(build_model(recipe), out, img_size=recipe.image_size, max_batch=args.max_batch)


def _check(reference: Path, candidate: Path, batches: tuple[int, ...], tolerance: float) -> dict:
    from pipeline.check import compare_onnx

    result = compare_onnx(reference, candidate, batches, tolerance)
    worst = max(r["max_abs_error"] for r in result["results"])
    if not result["passed"]:
        raise PipelineError(f"{candidate} differs from {reference} by up to {worst:.2e} (tolerance {tolerance:.0e}); "
                            f"details: {json.dumps(result['results'])}")
    log.info("check: %s matches %s to %.1e on batches %s", candidate, reference, worst, list(batches))
    return result


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _recipe(args: argparse.Namespace) -> EngineRecipe:
    return EngineRecipe(
        variant=args.variant, checkpoint=_optional_path(args.checkpoint), img_size=args.img_size,
        features_only=args.features_only, precision=args.precision, batch=args.batch, backend=args.backend,
        sm=args.sm, opt_level=args.opt_level, embed_plugin=args.embed_plugin, detailed_profile=args.detailed_profile,
        plugin_library=Path(args.plugin), calib_dir=_optional_path(args.calib_dir), calib_samples=args.calib_samples,
        calib_method=args.calib_method,
        calib_exclude=None if args.calib_exclude is None else tuple(args.calib_exclude),
        images=_optional_path(args.images))


def _cmd_engine(args: argparse.Namespace) -> None:
    make_engine(_recipe(args), args.out_dir)


def _cmd_export(args: argparse.Namespace) -> None:
    _export(args, Path(args.out))


def _cmd_surgery(args: argparse.Namespace) -> None:
    report = run_surgery(Path(args.input), Path(args.output), Path(args.report) if args.report else None)
    if args.report is None:
        print(json.dumps({k: v for k, v in report.items() if k != "blocks"}, indent=2))


def _cmd_check(args: argparse.Namespace) -> None:
    print(json.dumps(_check(Path(args.reference), Path(args.candidate), args.batch, args.tolerance), indent=2))


def _cmd_onnx(args: argparse.Namespace) -> None:
    out_dir = Path(args.out_dir)
    timings = {}
    start = time.perf_counter()
    onnx_path = _export(args, out_dir / "model.onnx")
    timings["export_s"] = time.perf_counter() - start
    start = time.perf_counter()
    swin_path = out_dir / "model.swin.onnx"
    run_surgery(onnx_path, swin_path, out_dir / "surgery.json")
    timings["surgery_s"] = time.perf_counter() - start
    start = time.perf_counter()
    _check(onnx_path, swin_path, (1, min(3, args.max_batch)), 1e-4)
    timings["check_s"] = time.perf_counter() - start
    log.info("onnx: wrote %s, %s and %s (%s)", onnx_path, swin_path, out_dir / "surgery.json",
             ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def _cmd_fp16(args: argparse.Namespace) -> None:
    from pipeline.precision import convert_fp16

    convert_fp16(Path(args.input), Path(args.output))


def _cmd_quantize(args: argparse.Namespace) -> None:
    from calib import quantize_int8

    report = quantize_int8(Path(args.input), Path(args.output), calib_dir=args.calib_dir, samples=args.calib_samples,
                           method=args.calib_method, percentile=args.percentile, exclude=args.calib_exclude,
                           cache_path=args.cache)
    print(json.dumps({k: v for k, v in report.items() if k != "quantized_layers"}, indent=2))


def _cmd_build(args: argparse.Namespace) -> None:
    from pipeline.build import build_engine

    metadata = build_engine(Path(args.input), Path(args.engine), plugin_library=args.plugin, batch=args.batch,
                            backend=args.backend, sm=args.sm, timing_cache=args.timing_cache,
                            opt_level=args.opt_level, embed_plugin=args.embed_plugin,
                            detailed_profile=args.detailed_profile)
    print(json.dumps({k: v for k, v in metadata.items() if k != "plugin_layer_names"}, indent=2))


def _cmd_check_engine(args: argparse.Namespace) -> None:
    from pipeline.build import check_engine_compatible

    print(json.dumps(check_engine_compatible(Path(args.engine)), indent=2, default=str))


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one ``error:`` line and a pointer to ``--help``, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description="Swin Transformer → TensorRT pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    export = sub.add_parser("export", help="PyTorch → ONNX (dynamic batch, checked in onnxruntime)")
    _model_args(export)
    _max_batch_arg(export)
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
    _max_batch_arg(onnx_cmd)
    onnx_cmd.add_argument("--out-dir", required=True, help="folder for model.onnx, model.swin.onnx, surgery.json")

    fp16 = sub.add_parser("fp16", help="strongly typed FP16 graph (LayerNorm kept FP32)")
    fp16.add_argument("input", help="FP32 (or FP32 + Q/DQ) .onnx, e.g. model.swin.onnx")
    fp16.add_argument("output", help="FP16 .onnx to write")

    engine = sub.add_parser("engine", help="every stage: export, surgery, precision, engine build, verification")
    _model_args(engine)
    engine.add_argument("--precision", choices=PRECISIONS, default="fp16")
    _calib_args(engine)
    engine.add_argument("--images", help="folder of photos to verify the engine on (default: --calib-dir, else "
                                         "generated crops of scikit-image photos)")
    _build_args(engine)
    engine.add_argument("--out-dir", required=True, help="folder for every artifact, e.g. build/swin_t")

    quantize = sub.add_parser("quantize", help="INT8 calibration: insert Q/DQ into the surgered FP32 graph")
    quantize.add_argument("input", help="surgered FP32 .onnx, e.g. model.swin.onnx")
    quantize.add_argument("output", help="Q/DQ .onnx to write (convert it with `fp16` for an INT8+FP16 engine)")
    _calib_args(quantize)
    quantize.add_argument("--percentile", type=float, default=99.99, help="|x| percentile for --calib-method "
                                                                          "percentile")
    quantize.add_argument("--cache", help="calibration cache JSON (default: beside the output)")

    build = sub.add_parser("build", help="build an engine from a typed .onnx (TensorRT, or TensorRT-RTX AOT)")
    build.add_argument("input", help="typed .onnx, e.g. model.swin.fp16.onnx")
    build.add_argument("engine", help="engine to write; its metadata JSON goes beside it")
    _build_args(build)
    build.add_argument("--timing-cache", help="persistent timing cache file")

    check_engine = sub.add_parser("check-engine", help="does this engine fit this machine's TensorRT and GPU?")
    check_engine.add_argument("engine", help="engine with its metadata JSON beside it")

    for name, handler in (("export", _cmd_export), ("surgery", _cmd_surgery), ("check", _cmd_check),
                          ("onnx", _cmd_onnx), ("fp16", _cmd_fp16), ("engine", _cmd_engine),
                          ("quantize", _cmd_quantize), ("build", _cmd_build), ("check-engine", _cmd_check_engine)):
        sub.choices[name].set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not _caused_by_interrupt(exc):
            raise
        _report_interrupt()
        return 130
    except KeyboardInterrupt:
        _report_interrupt()
        return 130
    return 0


def _caused_by_interrupt(exc: BaseException | None) -> bool:
    """Whether a Ctrl-C started this exception: a KeyboardInterrupt inside a library's lazy import can surface as
    another error (torch.onnx's exporter then fails on its half-imported torch._dynamo with an AttributeError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _report_interrupt() -> None:
    print("interrupted: no partial artifact was left behind", file=sys.stderr)
