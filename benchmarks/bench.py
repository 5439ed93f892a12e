"""``python -m benchmarks.bench`` (``make bench``): every deployment path of one Swin variant that this machine
can run, measured in one process, side by side.

    python -m benchmarks.bench --variant T [--precision fp16,int8] [--batch 1,8,32,64] [--no-cuda-graphs] [--cpu]

Paths (a path that cannot run here is listed as skipped with the reason, never dropped):
  tensorrt-plugin          our engine with SwinWindowAttention (build/swin_<v>/swin_<v>_<p>.engine from
                           `make engine`, else built here from the surgered ONNX for FP32/FP16)
  tensorrt-attention       TensorRT's own fused attention (ONNX Attention op), no plugin library: the yardstick
                           the plugin must beat (build/swin_<v>_trtattn from `make engine ATTENTION=tensorrt`, else
                           built here for FP16; FP32 has no fused kernel and is listed as skipped)
  tensorrt-native          TensorRT on the plain exported ONNX, no surgery (Myelin fuses attention itself)
  torch-eager-*, torch-compile-*      PyTorch on CUDA (FP32 and the requested precisions) and on the CPU (FP32)
  torch-eager-cuda-fused, torch-compile-cuda-fused   the same model with fused attention: our kernel through
                           torch.ops.swin.window_attention (its library from `make plugin` or $SWIN_ATTN_CUDA_LIBRARY)
  onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu      onnxruntime on the plain ONNX
  onnxruntime-cpu-surgered the surgered ONNX with the Python reference op: a correctness path, not a deployment one

GPU paths: warm-up, then --iterations (200) timed iterations with CUDA events and no host sync inside the loop;
with a CUDA GPU, TensorRT, PyTorch eager and torch.compile are captured once per batch into a CUDA graph and
replayed (--no-cuda-graphs: launched from Python every iteration), and nvidia-smi samples the SM clock and power
while they are timed. CPU paths: the same iteration count, but a timed loop stops after --cpu-budget-s once
--cpu-min-iterations are done, and the default CPU batches are 1,8 (--batch sets both lists); on a machine with
a CUDA GPU they run only with --cpu or when named in --paths.

Results go to build/bench/bench_<variant>_<device>_<UTC start time>.{json,md,png} (git-ignored; a file of another
run is never replaced): the JSON is rewritten as each path finishes ("complete": false, so an interrupted run
keeps what it measured), the .md and .png are written at the end ("complete": true).
`python -m benchmarks.report --commit <json>` copies a run into benchmarks/results/ to be committed.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from benchmarks import environment
from benchmarks.gpu_load import GpuLoadSampler, Sample, in_windows, summarize_samples
from benchmarks.paths import BenchPath, OnnxruntimePath, PathUnavailable, TensorRTPath, TorchPath
from benchmarks.report import ROOT, RUNS_DIR, evaluate_goals, finish_run, start_run, timestamped, update_run, utc_now
from benchmarks.stats import summarize
from benchmarks.timers import Budget
from pipeline.arguments import (
    ModelArguments,
    PluginArguments,
    add_groups,
    batch_list,
    negative_values_joined,
    precision_list,
    recipe_from_args,
)
from pipeline.attention import TRTATTN_SUFFIX, check_route
from pipeline.engine import EngineFiles, EngineRecipe, ModelRecord, build_model, make_engine, recorded_model
from pipeline.errors import PipelineError
from pipeline.stages import StageRunner

log = logging.getLogger("benchmarks.bench")

DEFAULT_GPU_BATCHES = (1, 8, 32, 64)
DEFAULT_CPU_BATCHES = (1, 8)
SURGERED_NOTE = "reference op, correctness path, not a deployment path"
NOT_SELECTED = "not selected (--paths)"
CPU_ON_GPU_MACHINE = "CPU path: not run by default on a GPU machine; --cpu runs it"


class NamedPath(Protocol):
    name: str
    device: str


def default_paths(paths: Sequence[NamedPath], gpu_present: bool, cpu_requested: bool,
                  selected: set[str] | None) -> list[tuple[Any, str | None]]:
    """Each path with None where it runs, else the reason it is listed as skipped.

    ``selected`` (``--paths``) runs exactly the paths it names; without it every path runs, except the CPU ones on
    a machine with a CUDA GPU (minutes of CPU timing at large batches before the first file, for numbers nobody
    deploys there). ``cpu_requested`` (``--cpu``) adds the CPU paths in both cases.
    """
    plan: list[tuple[Any, str | None]] = []
    for path in paths:
        cpu_wanted = path.device == "cpu" and cpu_requested
        if selected is not None:
            reason = None if path.name in selected or cpu_wanted else NOT_SELECTED
        else:
            reason = CPU_ON_GPU_MACHINE if path.device == "cpu" and gpu_present and not cpu_wanted else None
        plan.append((path, reason))
    return plan


def resolve_cuda_graphs(requested: bool | None, gpu_present: bool) -> bool:
    """``--cuda-graphs``/``--no-cuda-graphs``, or by default on wherever a CUDA GPU is visible."""
    return gpu_present if requested is None else requested


def gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


ONNX_NAMES = ("model.onnx", "model.swin.onnx")


@dataclasses.dataclass
class Inputs:
    """The ONNX files the ONNX and TensorRT paths start from, found or exported on first use (a run of PyTorch paths
    alone exports nothing), and a folder for what the benchmark derives from them.

    ``recipe`` is the model and the engine to build when `make engine` has not built one: TensorRT on this
    machine's GPU, the optimization profile spanning the benchmarked batches, detailed profiling for `make profile`.
    ``onnx_dir`` (given) must hold both files of the recipe's model; else `make engine`'s ``engine_dir`` is used
    when it holds them for that model (its export recorded which), else the model is exported into ``work_dir``.
    Engines are found the same way: a folder holding another model's is never measured as this one.
    """

    recipe: EngineRecipe
    onnx_dir: Path | None
    work_dir: Path
    engine_dir: Path

    def __post_init__(self) -> None:
        if self.onnx_dir is not None and not all((self.onnx_dir / n).is_file() for n in ONNX_NAMES):
            raise PipelineError(f"{self.onnx_dir} lacks {' or '.join(ONNX_NAMES)}; run `make onnx VARIANT="
                                f"{self.recipe.variant}` or omit --onnx-dir to export here")
        if self.onnx_dir is not None:  # before any path runs: every one of them would measure the wrong model
            self._check_onnx_dir(self.onnx_dir)
        # The native baseline's own records: make_engine keeps its stages.json in work_dir.
        self.native_stages = StageRunner(self.work_dir / "native")
        self._found: tuple[Path, str] | None = None  #: (folder, where it came from), once a path asked

    @functools.cached_property
    def model(self) -> ModelRecord:
        return self.recipe.model_record()

    def _holds_model(self, folder: Path) -> bool:
        """Whether make_engine's export in ``folder`` recorded the model benchmarked here."""
        held = recorded_model(folder)
        if held is not None and not held.same_model(self.model):
            log.info("%s holds %s, not the %s benchmarked: not used", folder, held.describe(), self.model.describe())
        return held is not None and held.same_model(self.model)

    def _check_onnx_dir(self, folder: Path) -> None:
        """The given folder must hold the benchmarked model: as its export recorded it, else (an ONNX from
        elsewhere) as far as its graph's input size and output count show."""
        import onnx

        held = recorded_model(folder)
        if held is None:
            graph = onnx.load(folder / ONNX_NAMES[0], load_external_data=False).graph
            size = tuple(d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[-2:])
            outputs = 4 if self.recipe.features_only else 1
            if size == self.recipe.image_size and len(graph.output) == outputs:
                return
            what = f"a graph of {size[0]}x{size[1]} images and {len(graph.output)} output(s)"
        elif held.same_model(self.model):
            return
        else:
            what = held.describe()
        raise PipelineError(f"--onnx-dir {folder} holds {what}, not the {self.model.describe()} to benchmark; pass "
                            "that model's folder, or the model's options (--features-only, --img-size, --checkpoint),"
                            " or omit --onnx-dir to export it")

    def _onnx_folder(self) -> tuple[Path, str]:
        if self._found is None:
            if self.onnx_dir is not None:
                self._found = self.onnx_dir, str(self.onnx_dir)
            elif all((self.engine_dir / n).is_file() for n in ONNX_NAMES) and self._holds_model(self.engine_dir):
                self._found = self.engine_dir, f"{self.engine_dir} (make engine)"
            else:
                make_engine(self.recipe, self.work_dir, until="surgery")
                self._found = self.work_dir, f"{self.work_dir} (exported by the benchmark)"
        return self._found

    @property
    def onnx(self) -> Path:
        return self._onnx_folder()[0] / ONNX_NAMES[0]

    @property
    def surgered(self) -> Path:
        return self._onnx_folder()[0] / ONNX_NAMES[1]

    def record(self) -> dict[str, str | None]:
        """For the report: the files and where they came from, or that no path has needed them (yet)."""
        if self._found is None:
            return {"onnx": None, "surgered_onnx": None, "source": "not needed by the paths run so far"}
        return {"onnx": str(self.onnx), "surgered_onnx": str(self.surgered), "source": self._found[1]}

    def typed_plain_onnx(self, precision: str) -> Path:
        """The plain export in ``precision``: TensorRT's own attention fusion gets the same types as ours."""
        if precision == "fp32":
            return self.onnx
        if precision != "fp16":
            raise PathUnavailable(f"TensorRT's native path needs a {precision.upper()} model of the plain ONNX; the "
                                  "pipeline calibrates only the surgered graph (calib/), so it is not measured")
        from pipeline.precision import convert_fp16

        typed = self.native_stages.out_dir / "model.fp16.onnx"
        self.native_stages.run("fp16-plain", {}, [self.onnx], [typed], lambda: convert_fp16(self.onnx, typed))
        return typed

    def plugin_engine(self, precision: str) -> Path:
        """`make engine`'s engine when it exists, else one built here (FP32/FP16; INT8 needs calibration)."""
        return self._engine(self.recipe, precision, self.engine_dir, self.work_dir)

    def attention_engine(self, precision: str) -> Path:
        """The engine of TensorRT's own attention (`make engine ATTENTION=tensorrt`'s, else one built here)."""
        recipe = dataclasses.replace(self.recipe, attention="tensorrt")
        try:
            check_route(recipe.attention, precision)
        except PipelineError as reason:
            raise PathUnavailable(str(reason)) from None
        return self._engine(recipe, precision, self.engine_dir.with_name(self.engine_dir.name + TRTATTN_SUFFIX),
                            self.work_dir / "attention")

    def _engine(self, recipe: EngineRecipe, precision: str, made_dir: Path, work_dir: Path) -> Path:
        made = EngineFiles(made_dir, recipe.model_tag, precision).engine
        if made.is_file() and self._holds_model(made_dir):
            return made
        if precision == "int8":
            route = "" if recipe.attention == "plugin" else f" ATTENTION={recipe.attention}"
            held = recorded_model(made_dir) if made.is_file() else None
            other = f" ({made.name} there is of the {held.describe()})" if held else ""
            raise PathUnavailable(f"no INT8 engine of the {self.model.describe()} at {made}{other}: INT8 needs "
                                  f"calibration, run `make engine VARIANT={recipe.variant} PRECISION=int8{route}` "
                                  "first")
        engine = make_engine(dataclasses.replace(recipe, precision=precision), work_dir, until="build").engine
        assert engine is not None  # the build stage ran
        return engine

    def native_engine(self, precision: str) -> Path:
        """TensorRT's engine of the plain export (no surgery): the baseline the plugin must beat."""
        from pipeline.build import build_engine

        typed = self.typed_plain_onnx(precision)
        engine = self.native_stages.out_dir / f"native_{self.recipe.variant.lower()}_{precision}.engine"
        recipe = self.recipe
        self.native_stages.run(f"build-{engine.stem}", {"batch": recipe.batch}, [typed], [engine,
                               engine.with_suffix(".json")],
                               lambda: build_engine(typed, engine, plugin_library=recipe.plugin_library,
                                                    batch=recipe.batch, backend="tensorrt",
                                                    timing_cache=self.work_dir / "timing.cache",
                                                    detailed_profile=True).to_json())
        return engine


def build_paths(inputs: Inputs, precisions: tuple[str, ...], *, cuda_graphs: bool,
                compile_budget_s: float | None) -> list[BenchPath]:
    """Every path, GPU ones first; PyTorch and onnxruntime also run FP32, the reference everyone compares with."""
    recipe = inputs.recipe
    # Random weights from seed 0 without a checkpoint (latency does not depend on them), the same for fused ones.
    model = functools.partial(build_model, recipe)
    with_fp32 = tuple(dict.fromkeys(("fp32", *precisions)))
    paths: list[BenchPath] = []
    for precision in precisions:
        paths.append(TensorRTPath("tensorrt-plugin", precision, lambda p=precision: inputs.plugin_engine(p),
                                  recipe.plugin_library, cuda_graphs=cuda_graphs, note="our engine"))
    for precision in precisions:  # right after the plugin: the comparison the plugin has to win
        paths.append(TensorRTPath("tensorrt-attention", precision, lambda p=precision: inputs.attention_engine(p),
                                  None, cuda_graphs=cuda_graphs, note="TensorRT's own attention, no plugin"))
    for precision in precisions:
        paths.append(TensorRTPath("tensorrt-native", precision, lambda p=precision: inputs.native_engine(p), None,
                                  cuda_graphs=cuda_graphs, note="plain ONNX, no surgery"))
    for compiled in (False, True):
        for fused in (False, True):  # each fused path right after the path it is compared with
            paths += [TorchPath(model, recipe.image_size, p, "cuda", compile=compiled, fused=fused,
                                compile_budget_s=compile_budget_s, cuda_graphs=cuda_graphs) for p in with_fp32]
    for name in ("onnxruntime-tensorrt", "onnxruntime-cuda"):
        paths += [OnnxruntimePath(name, lambda p=p: inputs.typed_plain_onnx(p), p, cache_dir=inputs.work_dir)
                  for p in with_fp32]
    paths += [TorchPath(model, recipe.image_size, "fp32", "cpu"),
              TorchPath(model, recipe.image_size, "fp32", "cpu", compile=True, compile_budget_s=compile_budget_s),
              OnnxruntimePath("onnxruntime-cpu", lambda: inputs.onnx, "fp32")]
    from pipeline.onnx_io import ort_session

    paths.append(OnnxruntimePath("onnxruntime-cpu-surgered", lambda: inputs.surgered, "fp32",
                                 session_factory=ort_session, note=SURGERED_NOTE))
    return paths


def run_path(path: BenchPath, batches: tuple[int, ...], budget: Budget,
             sampler: GpuLoadSampler | None = None) -> dict[str, Any]:
    """Measure ``path`` at each batch; never raises for a path problem: it becomes ``skipped``/``failed``.

    ``sampler`` (GPU paths on a GPU machine) runs from before the setup to the end, so that it is sampling by the
    time the first batch is timed; only its samples inside a batch's warm-up and timed loop count.
    """
    record: dict[str, Any] = {"name": path.name, "precision": path.precision, "device": path.device,
                              "note": path.note, "cuda_graph": path.cuda_graph, "timer": None,
                              "budget": dataclasses.asdict(budget), "results": []}
    if sampler is not None:
        sampler.start()
    try:
        path.setup()
        record["timer"] = path.timer().name
        for batch in batches:
            start = time.time()
            record["results"].append(_run_batch(path, batch, budget))
            if sampler is not None and record["results"][-1]["status"] == "measured":
                sampler.windows[batch] = (start, time.time())
    except PathUnavailable as reason:
        record |= {"status": "skipped", "reason": str(reason)}
    except Exception as error:  # one broken path must not lose the others' numbers
        log.debug("%s", traceback.format_exc())
        first_line = (str(error).strip().splitlines() or [""])[0]
        record |= {"status": "failed", "reason": f"{type(error).__name__}: {first_line}"}
    else:
        measured = [r for r in record["results"] if r["status"] == "measured"]
        record |= ({"status": "measured", "reason": None} if measured else
                   {"status": "skipped", "reason": "; ".join(sorted({r["reason"] for r in record["results"]}))})
    finally:
        record["details"] = path.details()
        path.close()
        if sampler is not None:
            sampler.stop()
            if sampler.windows:
                record["gpu_load"] = sampler.summary(sampler.windows.values())
                for result in record["results"]:
                    if result["batch"] in sampler.windows:
                        result["gpu_load"] = sampler.summary([sampler.windows[result["batch"]]])
    log.info("%-26s %-4s %s%s", path.name, path.precision, record["status"],
             f": {record['reason']}" if record["reason"] else "")
    return record


def _run_batch(path: BenchPath, batch: int, budget: Budget) -> dict[str, Any]:
    try:
        step = path.step(batch)
    except PathUnavailable as reason:
        return {"batch": batch, "status": "skipped", "reason": str(reason)}
    measurement = path.timer().measure(step, budget)
    result = {"batch": batch, "status": "measured", **summarize(measurement.latencies_ms, batch),
              "stopped_by": measurement.stopped_by, "elapsed_s": round(measurement.elapsed_s, 2),
              "memory_mb": path.memory_mb()}
    log.info("%-26s %-4s batch %3d: p50 %8.2f ms, p99 %8.2f ms, %8.1f img/s (%d iterations)", path.name,
             path.precision, batch, result["p50_ms"], result["p99_ms"], result["throughput_img_s"],
             result["iterations"])
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(groups=add_groups(parser, ModelArguments(), PluginArguments()))
    parser.add_argument("--precision", type=precision_list, default=("fp16",),
                        help="TensorRT precisions, comma-separated: fp32, fp16, int8 (default fp16)")
    parser.add_argument("--batch", type=batch_list, help="batch sizes for every path (overrides the two below)")
    parser.add_argument("--gpu-batch", type=batch_list, default=DEFAULT_GPU_BATCHES, help="GPU paths (1,8,32,64)")
    parser.add_argument("--cpu-batch", type=batch_list, default=DEFAULT_CPU_BATCHES, help="CPU paths (1,8)")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per path and batch (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first on the GPU (20)")
    parser.add_argument("--cpu-warmup", type=int, default=5, help="untimed iterations first on the CPU (5; oneDNN "
                        "sets up its kernels during the first few)")
    parser.add_argument("--cpu-budget-s", type=float, default=10.0,
                        help="a CPU timed loop stops after this many seconds... (10)")
    parser.add_argument("--cpu-min-iterations", type=int, default=10, help="...once this many are done (10)")
    parser.add_argument("--compile-budget-s", type=float, default=90.0,
                        help="torch.compile's first call per batch may take this long, else the path is skipped (90)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="replay TensorRT, PyTorch eager and torch.compile as CUDA graphs (default: on where a "
                             "CUDA GPU is visible)")
    parser.add_argument("--paths", help="only these path names, comma-separated (the others are listed as skipped)")
    parser.add_argument("--cpu", action="store_true",
                        help="run the CPU paths on a machine with a CUDA GPU too (they are off there by default)")
    parser.add_argument("--onnx-dir", type=Path, help="folder with model.onnx and model.swin.onnx (default: "
                                                      "build/swin_<v> when `make engine` wrote it, else exported)")
    parser.add_argument("--engine-dir", type=Path, help="folder with `make engine`'s engines (build/swin_<v>)")
    parser.add_argument("--work-dir", type=Path, help="for exports and engines built here (build/bench_<v>)")
    parser.add_argument("--results-dir", type=Path, default=RUNS_DIR,
                        help="where this run's files go (default build/bench, git-ignored)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def engine_batch_profile(batches: tuple[int, ...], max_batch: int) -> tuple[int, int, int]:
    """The optimization profile of an engine built for these batches: smallest, median, and ``max_batch``."""
    ordered = sorted(batches)
    return ordered[0], ordered[len(ordered) // 2], max_batch


def run(args: argparse.Namespace, argv: list[str]) -> list[Path]:
    gpu_batches = args.batch or args.gpu_batch
    cpu_batches = args.batch or args.cpu_batch
    # One export serves every path, so its dynamic batch reaches the largest batch of either list.
    batch = engine_batch_profile(gpu_batches, max(*gpu_batches, *cpu_batches))
    recipe = recipe_from_args(args, args.groups, batch=batch, backend="tensorrt", detailed_profile=True)
    recipe.validate(until="surgery")
    variant = recipe.variant.upper()
    budgets = {"cuda": Budget(warmup=args.warmup, iterations=args.iterations, min_iterations=args.iterations),
               "cpu": Budget(warmup=args.cpu_warmup, iterations=args.iterations,
                             min_iterations=min(args.cpu_min_iterations, args.iterations), seconds=args.cpu_budget_s)}
    batches = {"cuda": gpu_batches, "cpu": cpu_batches}
    inputs = Inputs(recipe, args.onnx_dir, args.work_dir or ROOT / "build" / f"bench_{recipe.model_tag}",
                    args.engine_dir or ROOT / recipe.default_out_dir)
    gpu = gpu_present()
    cuda_graphs = resolve_cuda_graphs(args.cuda_graphs, gpu)
    paths = build_paths(inputs, args.precision, cuda_graphs=cuda_graphs, compile_budget_s=args.compile_budget_s)
    names = list(dict.fromkeys(p.name for p in paths))
    selected = {n.strip() for n in args.paths.split(",") if n.strip()} if args.paths else None
    if selected is not None and selected - set(names):
        raise PipelineError(f"--paths: no path is named {', '.join(sorted(selected - set(names)))}; choose from "
                            f"{', '.join(names)}")
    plan = default_paths(paths, gpu, args.cpu, selected)
    env = environment.collect()
    created = utc_now()
    device = environment.device_slug(env)
    report: dict[str, Any] = {
        "schema": 1, "variant": variant, "image_size": list(recipe.image_size),
        "model": recipe.model_record().to_json(),
        "created": created.isoformat(timespec="seconds"), "device": device, "command": argv,
        "complete": False, "finished": None,
        "environment": env,
        "settings": {"batches": {k: list(v) for k, v in batches.items()},
                     "budgets": {k: dataclasses.asdict(v) for k, v in budgets.items()},
                     "cuda_graphs": cuda_graphs, "gpu_present": gpu, "cpu_paths": args.cpu,
                     "compile_budget_s": args.compile_budget_s, "precisions": list(args.precision)},
        "inputs": inputs.record(),
        "gpu_load": None, "paths": [], "pending": [], "goals": [],
    }
    json_path = start_run(report, args.results_dir / timestamped(f"bench_{variant.lower()}_{device}", created))
    log.info("results go to %s, rewritten as each path finishes", json_path)
    records: list[dict[str, Any]] = []
    load_samples: list[Sample] = []  # inside every GPU path's timed loops: the run's range under load

    def update(position: int) -> None:
        report["paths"] = records
        report["pending"] = [f"{p.name} {p.precision}" for p, reason in plan[position:] if reason is None]
        report["goals"] = evaluate_goals(records, variant)
        report["inputs"] = inputs.record()
        report["gpu_load"] = summarize_samples(load_samples) if load_samples else None

    for position, (path, reason) in enumerate(plan, start=1):
        if reason is not None:
            records.append({"name": path.name, "precision": path.precision, "device": path.device, "note": path.note,
                            "cuda_graph": path.cuda_graph, "status": "skipped", "reason": reason, "results": []})
            continue
        sampler = GpuLoadSampler() if gpu and path.device == "cuda" else None
        try:
            records.append(run_path(path, batches[path.device], budgets[path.device], sampler))
        except KeyboardInterrupt:
            update(position - 1)
            report["interrupted_during"] = f"{path.name} {path.precision}"
            update_run(json_path, report)
            log.warning("interrupted during %s %s: the paths finished before it are in %s", path.name,
                        path.precision, json_path)
            raise
        if sampler is not None:
            load_samples += in_windows(sampler.samples, sampler.windows.values())
        update(position)
        update_run(json_path, report)
        log.info("results so far (%d of %d paths) in %s", position, len(plan), json_path)
    update(len(plan))
    report |= {"complete": True, "finished": utc_now().isoformat(timespec="seconds")}
    return finish_run(json_path, report)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(negative_values_joined(argv))
    # Our progress at INFO; the exporters' chatter (onnxscript logs every merged initializer) only with -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    for name in ("benchmarks", "pipeline"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        written = run(args, argv)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the JSON keeps the paths finished so far (\"complete\": false)", file=sys.stderr)
        return 130
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
