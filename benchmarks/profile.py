"""``python -m benchmarks.profile`` (``make profile``): TensorRT's per-layer times of our engine, of TensorRT's own
attention's (``--attention tensorrt``) and of the plain ONNX's: each route's share of time in attention, whether each
ONNX Attention node became one layer, and whether Myelin fused the native attention.

Writes ``build/swin_<v>/profile.json``: per-layer average times (IProfiler), the engine inspector's layer information
and a summary. Needs TensorRT with a CUDA GPU (the inspector needs a deserialized engine, even of TensorRT-RTX);
elsewhere it prints why it skipped and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench import Inputs, engine_batch_profile
from benchmarks.records import EngineProfile, LayerSummary, LayerTime, ProfileRun, Skipped
from benchmarks.report import ROOT
from benchmarks.routes import RouteUnavailable, require_tensorrt
from pipeline.arguments import ModelArguments, PluginArguments, add_groups, recipe_from_args
from pipeline.common.artifacts import write_json
from pipeline.common.errors import PipelineError
from pipeline.make import PRECISIONS
from pipeline.runtime import SwinEngine
from pipeline.tensorrt.backends import BACKENDS

log = logging.getLogger("benchmarks.profile")


def layer_times(engine: SwinEngine, batch: int, iterations: int) -> list[LayerTime]:
    """Average time per layer over ``iterations`` profiled runs, in execution order."""
    trt = BACKENDS[engine.metadata.backend.name].bindings()
    totals: dict[str, list[float]] = {}

    class Profiler(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            totals.setdefault(layer_name, []).append(ms)

    run = engine.bind(batch)  # shapes and buffers for this batch
    run()  # one untimed run
    engine.stream.synchronize()
    context = engine.context
    profiler = Profiler()  # held here: TensorRT does not keep the Python object alive
    context.profiler = profiler
    context.enqueue_emits_profile = False  # report explicitly after each synchronization
    for _ in range(iterations):
        run()
        engine.stream.synchronize()
        context.report_to_profiler()
    total = sum(sum(v) / len(v) for v in totals.values())
    return [LayerTime(name, sum(v) / len(v), 100 * sum(v) / len(v) / total) for name, v in totals.items()]


#: The name of each ONNX Attention node the ``tensorrt`` route writes (pipeline.stages.surgery), which the engine's
#: layer names carry: ``tensorrt_attention_<block>/attention``.
_ATTENTION_NODE = re.compile(r"tensorrt_attention_(\d+)/attention")


def summarize_layers(layers: list[LayerTime], plugin_layer_names: list[str]) -> LayerSummary:
    """Total time, the plugin layers' share, the layers of TensorRT's own attention (how many blocks became exactly
    one layer, and their share), and Myelin's fused regions ("ForeignNode") with whether any Softmax survived as a
    layer of its own (unfused attention)."""
    attention = [layer for layer in layers if _ATTENTION_NODE.search(layer.name)]
    per_block = collections.Counter(block for layer in attention for block in set(_ATTENTION_NODE.findall(layer.name)))
    plugin_names = set(plugin_layer_names)
    plugin = [layer for layer in layers if layer.name in plugin_names or "SwinWindowAttention" in layer.name]
    foreign = [layer for layer in layers if "ForeignNode" in layer.name or "myelin" in layer.name.lower()]
    standalone_softmax = tuple(layer.name for layer in layers
                               if "softmax" in layer.name.lower() and layer not in foreign)
    return LayerSummary(
        total_ms=sum(layer.average_ms for layer in layers),
        layers=len(layers),
        plugin_layers=len(plugin),
        plugin_ms=sum(layer.average_ms for layer in plugin),
        plugin_percent=sum(layer.percent for layer in plugin),
        myelin_regions=len(foreign),
        myelin_percent=sum(layer.percent for layer in foreign),
        standalone_softmax_layers=standalone_softmax,
        attention_fused_by_myelin=bool(foreign) and not standalone_softmax and not plugin,
        attention_layers=len(attention),
        attention_percent=sum(layer.percent for layer in attention),
        attention_blocks=len(per_block),
        attention_blocks_in_one_layer=sum(count == 1 for count in per_block.values()),
    )


def profile_engine(engine_path: Path, plugin_library: Path | None, batch: int, iterations: int) -> EngineProfile:
    """Per-layer times and the engine inspector's layer information of one engine (through SwinEngine)."""
    with SwinEngine(engine_path, plugin_library) as engine:
        trt = BACKENDS[engine.metadata.backend.name].bindings()
        layers = layer_times(engine, batch, iterations)
        inspector = engine.engine.create_engine_inspector()
        inspector.execution_context = engine.context
        information = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        # LAYER_NAMES_ONLY engines give names only in the inspector's JSON; DETAILED ones add tactics, formats, fusions.
        return EngineProfile(str(engine_path), batch, iterations,
                             summarize_layers(layers, list(engine.metadata.plugin_layer_names)), tuple(layers),
                             information)


def profile_routes(inputs: Inputs, variant: str, args: argparse.Namespace) -> ProfileRun:
    """Our engine's profile, and TensorRT's own attention's and the plain ONNX's (skipped with the reason when they
    cannot be built or run)."""
    def other(engine: Callable[[str], Path]) -> EngineProfile | Skipped:
        try:
            return profile_engine(engine(args.precision), None, args.batch, args.iterations)
        except (RouteUnavailable, PipelineError) as reason:
            return Skipped(str(reason))

    plugin = profile_engine(inputs.plugin_engine(args.precision), inputs.recipe.plugin_library, args.batch,
                            args.iterations)
    return ProfileRun(variant, args.precision, plugin, other(inputs.attention_engine),
                      None if args.no_native else other(inputs.native_engine))


def summary_line(summary: LayerSummary) -> str:
    return (f"{summary.total_ms:.3f} ms over {summary.layers} layers; plugin {summary.plugin_percent:.1f}%, "
            f"TensorRT attention {summary.attention_percent:.1f}% ({summary.attention_blocks_in_one_layer} of "
            f"{summary.attention_blocks} blocks in one layer), Myelin regions {summary.myelin_regions} "
            f"({summary.myelin_percent:.1f}%), attention fused by Myelin: {summary.attention_fused_by_myelin}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = add_groups(parser, ModelArguments(), PluginArguments())
    parser.add_argument("--precision", default="fp16", choices=PRECISIONS)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=50, help="profiled runs averaged per layer (50)")
    parser.add_argument("--no-native", action="store_true", help="skip TensorRT's engine of the plain ONNX")
    parser.add_argument("--out", type=Path, help="default build/swin_<v>/profile.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    recipe = recipe_from_args(args, groups, batch=engine_batch_profile((1, args.batch), max(args.batch, 8)),
                              backend="tensorrt", detailed_profile=True)
    variant = recipe.variant.upper()
    engine_dir = ROOT / recipe.default_out_dir
    try:
        require_tensorrt()
    except RouteUnavailable as reason:
        print(f"profile: skipped: {reason}. TensorRT-RTX cannot stand in: its engine inspector needs a deserialized "
              "engine, and deserializing needs the GPU. Nothing was written.")
        return 0
    try:
        recipe.require_one_size("make profile")
        recipe.validate(until="surgery")
        inputs = Inputs(recipe, None, ROOT / "build" / f"bench_{recipe.model_tag}", engine_dir)
        result = profile_routes(inputs, variant, args)
    except (PipelineError, RouteUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or engine_dir / "profile.json"
    write_json(out, result.to_json())
    for key in ("plugin_engine", "attention_engine", "native_engine"):
        profiled = getattr(result, key)
        if isinstance(profiled, EngineProfile):
            print(f"{key}: {summary_line(profiled.summary)}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
