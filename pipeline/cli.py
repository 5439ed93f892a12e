"""``python -m pipeline``: a thin command line over the stage functions (docs/design.md §9).

Commands: ``export``, ``surgery``, ``check``, ``onnx`` (export + surgery + check), ``fp16``, ``quantize``, ``build``,
``check-engine``, ``engine`` (every stage, incrementally) and ``triton`` (a Triton model repository, also of a
``--features-only --img-size 800x1333`` backbone, served as ``swin_t_features_800x1333``); ``python -m pipeline
<command> --help`` says each one's arguments, e.g. ``engine --variant T --precision fp16 --out-dir build/swin_t``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import NoReturn

from pipeline.arguments import (
    AttentionArguments,
    BuildArguments,
    CalibrationArguments,
    ModelArguments,
    PluginArguments,
    add_groups,
    batch_list,
    image_size,
    negative_values_joined,
    recipe_from_args,
    size_range,
)
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.make import PRECISIONS, EngineRecipe, export_model, make_engine
from pipeline.serving import TRITON_BACKENDS

log = logging.getLogger("pipeline")
OUT_DIR_HELP = ("build/swin_<model>: build/swin_t, build/swin_t_features_800x1333 for a backbone, "
                "build/swin_t_trtattn with --attention tensorrt")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _max_batch_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-batch", type=_positive_int, default=32,
                        help="largest batch of the dynamic batch dimension (default 32)")


def _export_recipe(args: argparse.Namespace) -> EngineRecipe:
    return recipe_from_args(args, args.groups, batch=(1, args.max_batch, args.max_batch))


def _cmd_engine(args: argparse.Namespace) -> None:
    recipe = recipe_from_args(args, args.groups, precision=args.precision, images=args.images)
    make_engine(recipe, args.out_dir or recipe.default_out_dir)


def _cmd_onnx(args: argparse.Namespace) -> None:
    recipe = _export_recipe(args)
    make_engine(recipe, args.out_dir or recipe.default_out_dir, until="check")


def _cmd_export(args: argparse.Namespace) -> None:
    export_model(_export_recipe(args), Path(args.out))


def _cmd_surgery(args: argparse.Namespace) -> None:
    from pipeline.stages.surgery import replace_window_attention

    report = replace_window_attention(Path(args.input), Path(args.output),
                                      report_path=Path(args.report) if args.report else None,
                                      attention=args.attention)
    if args.report is None:
        print(json.dumps(report.to_json(blocks=False), indent=2))


def _cmd_check(args: argparse.Namespace) -> None:
    from pipeline.stages.check import compare_onnx

    if isinstance(args.img_size, SizeRange):
        raise PipelineError(f"check --img-size {args.img_size}: expected one size HxW to run the graphs at")
    report = compare_onnx(Path(args.reference), Path(args.candidate), args.batch, args.tolerance, size=args.img_size)
    print(json.dumps(report.to_json(), indent=2))
    report.raise_if_failed()


def _cmd_fp16(args: argparse.Namespace) -> None:
    from pipeline.stages.precision import convert_fp16

    convert_fp16(Path(args.input), Path(args.output))


def _cmd_quantize(args: argparse.Namespace) -> None:
    from pipeline.stages import int8

    report = int8.quantize_int8(Path(args.input), Path(args.output), calib_dir=args.calib_dir,
                                samples=args.calib_samples, method=args.calib_method, percentile=args.percentile,
                                exclude=args.calib_exclude, cache_path=args.cache)
    print(json.dumps({k: v for k, v in report.to_json().items() if k != "quantized_layers"}, indent=2))


def _cmd_build(args: argparse.Namespace) -> None:
    from pipeline.tensorrt.build import build_engine

    metadata = build_engine(Path(args.input), Path(args.engine), plugin_library=args.plugin, batch=args.batch,
                            backend=args.backend, sm=args.sm, timing_cache=args.timing_cache,
                            opt_level=args.opt_level, embed_plugin=args.embed_plugin,
                            detailed_profile=args.detailed_profile, sizes=args.img_size)
    print(json.dumps({k: v for k, v in metadata.to_json().items() if k != "plugin_layer_names"}, indent=2))


def _cmd_check_engine(args: argparse.Namespace) -> None:
    from pipeline.tensorrt.load import check_engine_compatible

    check = check_engine_compatible(Path(args.engine), plugin_library=args.plugin)
    print(json.dumps(check.to_json(), indent=2, default=str) if args.json else check.verdict())


def _cmd_triton(args: argparse.Namespace) -> None:
    from pipeline.serving.triton import write_recipe_repository

    write_recipe_repository(recipe_from_args(args, args.groups, precision=args.precision), args.out,
                            engine_dir=args.engine_dir, engines=args.engines, plugin_library=args.plugin,
                            max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                            backend=args.triton_backend)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one ``error:`` line and a pointer to ``--help``, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _add_graph_commands(sub: argparse._SubParsersAction) -> None:
    """The commands of one graph stage each: export, surgery, check, fp16, quantize."""
    export = sub.add_parser("export", help="PyTorch → ONNX (dynamic batch, checked in onnxruntime)")
    export.set_defaults(groups=add_groups(export, ModelArguments()))
    _max_batch_arg(export)
    export.add_argument("--out", required=True, help="output .onnx path")

    surgery = sub.add_parser("surgery", help="replace window attention with SwinWindowAttention nodes (or ONNX "
                                             "Attention: --attention tensorrt)")
    surgery.add_argument("input", help="exported .onnx (ours, timm or torchvision)")
    surgery.add_argument("output", help="surgered .onnx to write")
    surgery.add_argument("--report", help="write the JSON report here (default: print it)")
    AttentionArguments().add_to(surgery)

    check = sub.add_parser("check", help="compare two ONNX models in onnxruntime (reference op for the plugin)")
    check.add_argument("reference", help="reference .onnx, e.g. model.onnx")
    check.add_argument("candidate", help="candidate .onnx, e.g. model.swin.onnx")
    check.add_argument("--batch", type=batch_list, default=(1, 3), help="batch sizes, e.g. 1,3")
    check.add_argument("--tolerance", type=float, default=1e-4, help="max abs error relative to output scale")
    check.add_argument("--img-size", type=image_size, help="HxW to run graphs exported with dynamic height and "
                                                           "width at")

    fp16 = sub.add_parser("fp16", help="strongly typed FP16 graph (LayerNorm kept FP32)")
    fp16.add_argument("input", help="FP32 (or FP32 + Q/DQ) .onnx, e.g. model.swin.onnx")
    fp16.add_argument("output", help="FP16 .onnx to write")

    quantize = sub.add_parser("quantize", help="INT8 calibration: insert Q/DQ into the surgered FP32 graph")
    quantize.add_argument("input", help="surgered FP32 .onnx, e.g. model.swin.onnx")
    quantize.add_argument("output", help="Q/DQ .onnx to write (convert it with `fp16` for an INT8+FP16 engine)")
    CalibrationArguments().add_to(quantize)
    quantize.add_argument("--percentile", type=float, default=99.99, help="|x| percentile for --calib-method "
                                                                          "percentile")
    quantize.add_argument("--cache", help="calibration cache JSON (default: beside the output)")

    for command, handler in (("export", _cmd_export), ("surgery", _cmd_surgery), ("check", _cmd_check),
                             ("fp16", _cmd_fp16), ("quantize", _cmd_quantize)):
        sub.choices[command].set_defaults(handler=handler)


def _add_engine_commands(sub: argparse._SubParsersAction) -> None:
    """The commands of an engine: build one, check one against this machine."""
    build = sub.add_parser("build", help="build an engine from a typed .onnx (TensorRT, or TensorRT-RTX AOT)")
    build.add_argument("input", help="typed .onnx, e.g. model.swin.fp16.onnx")
    build.add_argument("engine", help="engine to write; its metadata JSON goes beside it")
    add_groups(build, BuildArguments(), PluginArguments())
    build.add_argument("--timing-cache", help="persistent timing cache file")
    build.add_argument("--img-size", type=size_range, help="for a graph exported with dynamic height and width: the "
                                                           "H x W range of the profile, min:opt:max (e.g. "
                                                           "320x320:800x1344:1344x1344)")

    check_engine = sub.add_parser("check-engine", help="does this engine fit this machine's TensorRT and GPU?")
    check_engine.add_argument("engine", help="engine with its metadata JSON beside it")
    check_engine.add_argument("--plugin", type=Path, help="its plugin library (default: the path its metadata "
                                                          "records, else the same name beside the engine)")
    check_engine.add_argument("--json", action="store_true", help="print everything checked as JSON (the engine's "
                                                                  "metadata, the runtime, the plugin library)")

    for command, handler in (("build", _cmd_build), ("check-engine", _cmd_check_engine)):
        sub.choices[command].set_defaults(handler=handler)


def _add_composed_commands(sub: argparse._SubParsersAction) -> None:
    """The commands that compose stages: onnx, engine, and triton over their output."""
    onnx_cmd = sub.add_parser("onnx", help="export + surgery + check into one folder (make engine's first stages)")
    onnx_cmd.set_defaults(groups=add_groups(onnx_cmd, ModelArguments(), AttentionArguments()))
    _max_batch_arg(onnx_cmd)
    onnx_cmd.add_argument("--out-dir", type=Path, help=f"folder for model.onnx, model.swin.onnx, surgery.json "
                                                       f"(default {OUT_DIR_HELP})")

    engine = sub.add_parser("engine", help="every stage: export, surgery, check, precision, engine build, "
                                           "verification")
    engine.add_argument("--precision", choices=PRECISIONS, default="fp16")
    engine.add_argument("--images", type=Path, help="folder of photos to verify the engine on, less any INT8 "
                                                    "calibrates on (default: a quarter of --calib-dir, held out of "
                                                    "calibration, else generated crops of scikit-image photos)")
    engine.set_defaults(groups=add_groups(engine, ModelArguments(), CalibrationArguments(), BuildArguments(),
                                          PluginArguments(), AttentionArguments()))
    engine.add_argument("--out-dir", type=Path, help=f"folder for every artifact (default {OUT_DIR_HELP})")

    triton = sub.add_parser("triton", help="Triton Inference Server model repository of built engines (builds none)")
    # The model options of `engine` (its weights are in the engine): they pick the engine and name the Triton model.
    triton.set_defaults(groups=add_groups(triton, ModelArguments(weights=False), AttentionArguments()))
    triton.add_argument("--precision", choices=PRECISIONS, default="fp16")
    triton.add_argument("--engine-dir", type=Path, help=f"folder `make engine` wrote (default {OUT_DIR_HELP}); the "
                                                        "Triton model is named like its engine: swin_<model>")
    triton.add_argument("--engines", type=Path, nargs="+", help="engines to serve instead, one per compute "
                                                                "capability (metadata JSON beside each), of the model "
                                                                "the options describe")
    triton.add_argument("--out", type=Path, default=Path("build/triton"), help="repository folder (default "
                        "build/triton): absent, empty, or one this command wrote")
    triton.add_argument("--plugin", type=Path, help="plugin library to ship (default: the one the engines were "
                                                    "built with)")
    triton.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching's queue delay")
    triton.add_argument("--instances", type=_positive_int, default=1, help="model instances per GPU")
    triton.add_argument("--triton-backend", choices=TRITON_BACKENDS, default="tensorrt",
                        help="tensorrt: serve the engines; python: the CPU verification route, the engine's typed ONNX "
                             "on onnxruntime with the reference op, same contract (installs build/serving)")

    for command, handler in (("onnx", _cmd_onnx), ("engine", _cmd_engine), ("triton", _cmd_triton)):
        sub.choices[command].set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description="Swin Transformer → TensorRT pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_commands in (_add_graph_commands, _add_engine_commands, _add_composed_commands):
        add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(negative_values_joined(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "torch.onnx", "torch._export"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if _caused_by_interrupt(exc):
            _report_interrupt()
            return 130
        if not isinstance(exc, OSError):
            raise
        # What no check beforehand can rule out (the disk fills, a file vanishes mid-run): the system's words.
        logging.getLogger(__name__).debug("the error's traceback", exc_info=True)
        print(f"error: {exc}; check that path, its permissions and the free disk space (-v shows the traceback)",
              file=sys.stderr)
        return 2
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
