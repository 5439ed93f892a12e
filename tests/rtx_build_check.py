"""Build an ONNX model with SwinWindowAttention nodes ahead of time with TensorRT-RTX; print a JSON report.

Runs without a GPU (DESIGN.md §5). TensorRT-RTX's ONNX parser dlopens the unversioned ``libtensorrt_rtx.so``
when it imports a plugin node, and the wheel ships only ``libtensorrt_rtx.so.1``: run this script through
``tests.plugin_build.run_rtx_build`` (or with ``LD_LIBRARY_PATH`` naming a folder with that symlink), since
the loader reads ``LD_LIBRARY_PATH`` only at process start.

    python tests/rtx_build_check.py --plugin build/plugin/libswin_window_attention_plugin.so \\
        --onnx model.swin.onnx --input input:1x3x224x224,8x3x224x224,8x3x224x224 --sm 86

Report keys: parsed, parser_errors, num_layers, plugin_layers (count of PLUGIN_V3 layers), plugin_layer_names,
built, engine_bytes, parse_seconds, build_seconds, log (TensorRT messages of severity >= --log-level).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def parse_profile(text: str) -> tuple[str, list[tuple[int, ...]]]:
    """``name:min,opt,max`` with shapes like ``1x196x96`` → (name, [min, opt, max])."""
    name, _, shapes = text.rpartition(":")
    dims = [tuple(int(d) for d in shape.split("x")) for shape in shapes.split(",")]
    if not name or len(dims) != 3:
        raise argparse.ArgumentTypeError(f"expected NAME:MIN,OPT,MAX, got {text!r}")
    return name, dims


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plugin", required=True, help="plugin library, loaded with IPluginRegistry.load_library")
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--input", action="append", type=parse_profile, default=[],
                        help="optimization profile NAME:MIN,OPT,MAX for a dynamic input (repeatable)")
    parser.add_argument("--sm", default="86", help="compute capability to build for, e.g. 86 (SM86)")
    parser.add_argument("--engine", help="write the serialized engine here")
    parser.add_argument("--log-level", default="WARNING", choices=["VERBOSE", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)

    import tensorrt_rtx_bindings as trt

    log: list[str] = []
    threshold = getattr(trt.ILogger.Severity, args.log_level)

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity <= threshold:
                log.append(f"[{severity.name}] {msg}")

    logger = Logger()
    report: dict = {"tensorrt_rtx": trt.__version__, "parsed": False, "built": False, "log": log}
    builder = trt.Builder(logger)
    if not trt.get_plugin_registry().load_library(args.plugin):
        report["error"] = f"load_library({args.plugin}) failed"
        print(json.dumps(report))
        return 0
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    onnx_parser = trt.OnnxParser(network, logger)

    start = time.perf_counter()
    report["parsed"] = bool(onnx_parser.parse_from_file(args.onnx))
    report["parse_seconds"] = round(time.perf_counter() - start, 3)
    report["parser_errors"] = [str(onnx_parser.get_error(i)) for i in range(onnx_parser.num_errors)]
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    plugin_layers = [layer for layer in layers if layer.type == trt.LayerType.PLUGIN_V3]
    report["num_layers"] = len(layers)
    report["plugin_layers"] = len(plugin_layers)
    report["plugin_layer_names"] = [layer.name for layer in plugin_layers]
    report["inputs"] = {network.get_input(i).name: [str(network.get_input(i).dtype), list(network.get_input(i).shape)]
                        for i in range(network.num_inputs)}
    if not report["parsed"]:
        print(json.dumps(report))
        return 0

    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, f"SM{args.sm}"), 0)
    if args.input:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in args.input:
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)

    start = time.perf_counter()
    engine = builder.build_serialized_network(network, config)
    report["build_seconds"] = round(time.perf_counter() - start, 3)
    report["built"] = engine is not None
    if engine is not None:
        report["engine_bytes"] = engine.nbytes
        if args.engine:
            with open(args.engine, "wb") as f:
                f.write(engine)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
