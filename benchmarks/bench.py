"""``python -m benchmarks.bench`` (``make bench``): every deployment route of one Swin variant that this machine
can run, measured in one process, side by side (a route that cannot run here is listed as skipped with the reason).

Routes (``--routes``, :mod:`benchmarks.routes`), GPU and CPU timing and the files: docs/design.md §8d. Results go to
build/bench/bench_<variant>_<device>_<UTC start time>.{json,md,png}, the JSON rewritten as each route finishes.
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
from typing import Protocol, TypeVar

from benchmarks import environment
from benchmarks.gpu_load import GpuLoadSampler, Sample, in_windows, summarize_samples
from benchmarks.records import BatchResult, BenchRun, BenchSettings, Measured, OnnxInputs, RouteRecord
from benchmarks.report import ROOT, RUNS_DIR, evaluate_goals, finish_run, start_run, timestamped, update_run, utc_now
from benchmarks.routes import BenchRoute, OnnxruntimeRoute, RouteUnavailable, TensorRTRoute, TorchRoute
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
from pipeline.common.attention import TRTATTN_SUFFIX, check_route
from pipeline.common.errors import PipelineError
from pipeline.make import EngineFiles, EngineRecipe, ModelRecord, build_model, make_engine, recorded_model
from pipeline.runner import StageRunner

log = logging.getLogger("benchmarks.bench")

DEFAULT_GPU_BATCHES = (1, 8, 32, 64)
DEFAULT_CPU_BATCHES = (1, 8)
SURGERED_NOTE = "reference op, correctness path, not a deployment path"
NOT_SELECTED = "not selected (--routes)"
CPU_ON_GPU_MACHINE = "CPU route: not run by default on a GPU machine; --cpu runs it"


class NamedRoute(Protocol):
    name: str
    device: str


N = TypeVar("N", bound=NamedRoute)


def default_routes(routes: Sequence[N], gpu_present: bool, cpu_requested: bool,
                   selected: set[str] | None) -> list[tuple[N, str | None]]:
    """Each route with None where it runs, else the reason it is listed as skipped.

    ``selected`` (``--routes``) runs exactly the routes it names; without it every route runs, except the CPU ones
    on a machine with a CUDA GPU (minutes of CPU timing at large batches before the first file, for numbers nobody
    deploys there). ``cpu_requested`` (``--cpu``) adds the CPU routes in both cases.
    """
    plan: list[tuple[N, str | None]] = []
    for route in routes:
        cpu_wanted = route.device == "cpu" and cpu_requested
        if selected is not None:
            reason = None if route.name in selected or cpu_wanted else NOT_SELECTED
        else:
            reason = CPU_ON_GPU_MACHINE if route.device == "cpu" and gpu_present and not cpu_wanted else None
        plan.append((route, reason))
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
    """The ONNX files the ONNX and TensorRT routes start from, found or exported on first use (a run of PyTorch routes
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
        if self.onnx_dir is not None:  # before any route runs: every one of them would measure the wrong model
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

    def record(self) -> OnnxInputs:
        """For the report: the files and where they came from, or that no route has needed them (yet)."""
        if self._found is None:
            return OnnxInputs(None, None, "not needed by the routes run so far")
        return OnnxInputs(str(self.onnx), str(self.surgered), self._found[1])

    def typed_plain_onnx(self, precision: str) -> Path:
        """The plain export in ``precision``: TensorRT's own attention fusion gets the same types as ours."""
        if precision == "fp32":
            return self.onnx
        if precision != "fp16":
            raise RouteUnavailable(f"TensorRT's native route needs a {precision.upper()} model of the plain ONNX; the "
                                  "pipeline calibrates only the surgered graph (calib/), so it is not measured")
        from pipeline.stages.precision import convert_fp16

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
            raise RouteUnavailable(str(reason)) from None
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
            raise RouteUnavailable(f"no INT8 engine of the {self.model.describe()} at {made}{other}: INT8 needs "
                                  f"calibration, run `make engine VARIANT={recipe.variant} PRECISION=int8{route}` "
                                  "first")
        engine = make_engine(dataclasses.replace(recipe, precision=precision), work_dir, until="build").engine
        assert engine is not None  # the build stage ran
        return engine

    def native_engine(self, precision: str) -> Path:
        """TensorRT's engine of the plain export (no surgery): the baseline the plugin must beat."""
        from pipeline.tensorrt.build import build_engine

        typed = self.typed_plain_onnx(precision)
        engine = self.native_stages.out_dir / f"native_{self.recipe.variant.lower()}_{precision}.engine"
        recipe = self.recipe
        self.native_stages.run(f"build-{engine.stem}", {"batch": recipe.batch}, [typed], [engine,
                               engine.with_suffix(".json")],
                               lambda: build_engine(typed, engine, plugin_library=recipe.plugin_library,
                                                    batch=recipe.batch, backend="tensorrt",
                                                    timing_cache=self.work_dir / "timing.cache",
                                                    detailed_profile=True))
        return engine


def build_routes(inputs: Inputs, precisions: tuple[str, ...], *, cuda_graphs: bool,
                compile_budget_s: float | None) -> list[BenchRoute]:
    """Every route, GPU ones first; PyTorch and onnxruntime also run FP32, the reference everyone compares with."""
    recipe = inputs.recipe
    # Random weights from seed 0 without a checkpoint (latency does not depend on them), the same for fused ones.
    model = functools.partial(build_model, recipe)
    with_fp32 = tuple(dict.fromkeys(("fp32", *precisions)))
    routes: list[BenchRoute] = []
    for precision in precisions:
        routes.append(TensorRTRoute("tensorrt-plugin", precision, lambda p=precision: inputs.plugin_engine(p),
                                  recipe.plugin_library, cuda_graphs=cuda_graphs, note="our engine"))
    for precision in precisions:  # right after the plugin: the comparison the plugin has to win
        routes.append(TensorRTRoute("tensorrt-attention", precision, lambda p=precision: inputs.attention_engine(p),
                                  None, cuda_graphs=cuda_graphs, note="TensorRT's own attention, no plugin"))
    for precision in precisions:
        routes.append(TensorRTRoute("tensorrt-native", precision, lambda p=precision: inputs.native_engine(p), None,
                                  cuda_graphs=cuda_graphs, note="plain ONNX, no surgery"))
    for compiled in (False, True):
        for fused in (False, True):  # each fused route right after the route it is compared with
            routes += [TorchRoute(model, recipe.image_size, p, "cuda", compile=compiled, fused=fused,
                                compile_budget_s=compile_budget_s, cuda_graphs=cuda_graphs) for p in with_fp32]
    for name in ("onnxruntime-tensorrt", "onnxruntime-cuda"):
        routes += [OnnxruntimeRoute(name, lambda p=p: inputs.typed_plain_onnx(p), p, cache_dir=inputs.work_dir)
                  for p in with_fp32]
    routes += [TorchRoute(model, recipe.image_size, "fp32", "cpu"),
              TorchRoute(model, recipe.image_size, "fp32", "cpu", compile=True, compile_budget_s=compile_budget_s),
              OnnxruntimeRoute("onnxruntime-cpu", lambda: inputs.onnx, "fp32")]
    from pipeline.common.onnx_io import ort_session

    routes.append(OnnxruntimeRoute("onnxruntime-cpu-surgered", lambda: inputs.surgered, "fp32",
                                 session_factory=ort_session, note=SURGERED_NOTE))
    return routes


def run_route(route: BenchRoute, batches: tuple[int, ...], budget: Budget,
              sampler: GpuLoadSampler | None = None) -> RouteRecord:
    """Measure ``route`` at each batch; never raises for a route's problem: it becomes ``skipped``/``failed``.

    ``sampler`` (GPU routes on a GPU machine) runs from before the setup to the end, so that it is sampling by the
    time the first batch is timed; only its samples inside a batch's warm-up and timed loop count.
    """
    record = not_run(route, None)
    results: list[BatchResult] = []
    if sampler is not None:
        sampler.start()
    try:
        route.setup()
        record = dataclasses.replace(record, timer=route.timer().name, budget=budget)
        for batch in batches:
            start = time.time()
            results.append(_run_batch(route, batch, budget))
            if sampler is not None and results[-1].measured is not None:
                sampler.windows[batch] = (start, time.time())
        record = _outcome(record, results)
    except RouteUnavailable as reason:
        record = dataclasses.replace(record, status="skipped", reason=str(reason))
    except Exception as error:  # one broken route must not lose the others' numbers
        log.debug("%s", traceback.format_exc())
        first_line = (str(error).strip().splitlines() or [""])[0]
        record = dataclasses.replace(record, status="failed", reason=f"{type(error).__name__}: {first_line}")
    finally:
        details = route.details()
        route.close()
        if sampler is not None:
            sampler.stop()
    record = dataclasses.replace(record, budget=budget, results=tuple(results), details=details)
    if sampler is not None and sampler.windows:
        record = _with_load(record, sampler)
    log.info("%-26s %-4s %s%s", route.name, route.precision, record.status,
             f": {record.reason}" if record.reason else "")
    return record


def not_run(route: BenchRoute, reason: str | None) -> RouteRecord:
    """The record of a route before it runs, or of one not run for ``reason``."""
    return RouteRecord(name=route.name, precision=route.precision, device=route.device, note=route.note,
                       cuda_graph=route.cuda_graph, reason=reason)


def _outcome(record: RouteRecord, results: list[BatchResult]) -> RouteRecord:
    """Measured when some batch was, else skipped with every batch's reason."""
    if any(r.measured is not None for r in results):
        return dataclasses.replace(record, status="measured", reason=None)
    return dataclasses.replace(record, status="skipped", reason="; ".join(sorted({str(r.reason) for r in results})))


def _with_load(record: RouteRecord, sampler: GpuLoadSampler) -> RouteRecord:
    """The GPU load under the route's timed loops, in all and per batch."""
    results = tuple(dataclasses.replace(r, gpu_load=sampler.summary([sampler.windows[r.batch]]))
                    if r.batch in sampler.windows else r for r in record.results)
    return dataclasses.replace(record, results=results, gpu_load=sampler.summary(sampler.windows.values()))


def _run_batch(route: BenchRoute, batch: int, budget: Budget) -> BatchResult:
    try:
        step = route.step(batch)
    except RouteUnavailable as reason:
        return BatchResult(batch, "skipped", reason=str(reason))
    measurement = route.timer().measure(step, budget)
    summary = summarize(measurement.latencies_ms, batch)
    measured = Measured(**vars(summary), stopped_by=measurement.stopped_by, elapsed_s=round(measurement.elapsed_s, 2),
                        memory_mb=route.memory_mb())
    log.info("%-26s %-4s batch %3d: p50 %8.2f ms, p99 %8.2f ms, %8.1f img/s (%d iterations)", route.name,
             route.precision, batch, measured.p50_ms, measured.p99_ms, measured.throughput_img_s,
             measured.iterations)
    return BatchResult(batch, "measured", measured=measured)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(groups=add_groups(parser, ModelArguments(), PluginArguments()))
    parser.add_argument("--precision", type=precision_list, default=("fp16",),
                        help="TensorRT precisions, comma-separated: fp32, fp16, int8 (default fp16)")
    parser.add_argument("--batch", type=batch_list, help="batch sizes for every route (overrides the two below)")
    parser.add_argument("--gpu-batch", type=batch_list, default=DEFAULT_GPU_BATCHES, help="GPU routes (1,8,32,64)")
    parser.add_argument("--cpu-batch", type=batch_list, default=DEFAULT_CPU_BATCHES, help="CPU routes (1,8)")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per route and batch (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first on the GPU (20)")
    parser.add_argument("--cpu-warmup", type=int, default=5, help="untimed iterations first on the CPU (5; oneDNN "
                        "sets up its kernels during the first few)")
    parser.add_argument("--cpu-budget-s", type=float, default=10.0,
                        help="a CPU timed loop stops after this many seconds... (10)")
    parser.add_argument("--cpu-min-iterations", type=int, default=10, help="...once this many are done (10)")
    parser.add_argument("--compile-budget-s", type=float, default=90.0,
                        help="torch.compile's first call per batch may take this long, else the route is skipped (90)")
    parser.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                        help="replay TensorRT, PyTorch eager and torch.compile as CUDA graphs (default: on where a "
                             "CUDA GPU is visible)")
    parser.add_argument("--routes", help="only these route names, comma-separated (the others are listed as skipped)")
    parser.add_argument("--paths", dest="routes", help=argparse.SUPPRESS)  # the flag's earlier name
    parser.add_argument("--cpu", action="store_true",
                        help="run the CPU routes on a machine with a CUDA GPU too (they are off there by default)")
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


@dataclasses.dataclass
class RunPlan:
    """What a run measures: each route with the reason it is not run (None: it runs), by device its batches and
    budget; ``gpu``: a CUDA GPU is visible."""

    inputs: Inputs
    plan: list[tuple[BenchRoute, str | None]]
    batches: dict[str, tuple[int, ...]]
    budgets: dict[str, Budget]
    gpu: bool

    def pending(self, position: int) -> tuple[str, ...]:
        """The routes after ``position`` in the plan that are to run."""
        return tuple(f"{route.name} {route.precision}" for route, reason in self.plan[position:] if reason is None)


def selected_routes(names: str | None, known: Sequence[str]) -> set[str] | None:
    """``--routes``' names (None: not given); a name no route has is an error listing the known ones."""
    if not names:
        return None
    selected = {n.strip() for n in names.split(",") if n.strip()}
    if selected - set(known):
        raise PipelineError(f"--routes: no route is named {', '.join(sorted(selected - set(known)))}; choose from "
                            f"{', '.join(known)}")
    return selected


def plan_run(args: argparse.Namespace) -> tuple[RunPlan, EngineRecipe, BenchSettings]:
    gpu_batches = args.batch or args.gpu_batch
    cpu_batches = args.batch or args.cpu_batch
    # One export serves every route, so its dynamic batch reaches the largest batch of either list.
    batch = engine_batch_profile(gpu_batches, max(*gpu_batches, *cpu_batches))
    recipe = recipe_from_args(args, args.groups, batch=batch, backend="tensorrt", detailed_profile=True)
    recipe.require_one_size("make bench")
    recipe.validate(until="surgery")
    budgets = {"cuda": Budget(warmup=args.warmup, iterations=args.iterations, min_iterations=args.iterations),
               "cpu": Budget(warmup=args.cpu_warmup, iterations=args.iterations,
                             min_iterations=min(args.cpu_min_iterations, args.iterations), seconds=args.cpu_budget_s)}
    batches = {"cuda": tuple(gpu_batches), "cpu": tuple(cpu_batches)}
    inputs = Inputs(recipe, args.onnx_dir, args.work_dir or ROOT / "build" / f"bench_{recipe.model_tag}",
                    args.engine_dir or ROOT / recipe.default_out_dir)
    gpu = gpu_present()
    cuda_graphs = resolve_cuda_graphs(args.cuda_graphs, gpu)
    routes = build_routes(inputs, args.precision, cuda_graphs=cuda_graphs, compile_budget_s=args.compile_budget_s)
    selected = selected_routes(args.routes, list(dict.fromkeys(r.name for r in routes)))
    settings = BenchSettings(batches=batches, budgets=budgets, cuda_graphs=cuda_graphs, gpu_present=gpu,
                             cpu_routes=args.cpu, compile_budget_s=args.compile_budget_s,
                             precisions=tuple(args.precision))
    return RunPlan(inputs, default_routes(routes, gpu, args.cpu, selected), batches, budgets, gpu), recipe, settings


def run(args: argparse.Namespace, argv: list[str]) -> list[Path]:
    plan, recipe, settings = plan_run(args)
    env = environment.collect()
    created = utc_now()
    device = environment.device_slug(env)
    report = BenchRun(variant=recipe.variant.upper(), image_size=recipe.image_size, model=recipe.model_record(),
                      created=created.isoformat(timespec="seconds"), device=device, command=tuple(argv),
                      complete=False, environment=env, settings=settings, inputs=plan.inputs.record())
    json_path = start_run(report, args.results_dir / timestamped(f"bench_{report.variant.lower()}_{device}", created))
    log.info("results go to %s, rewritten as each route finishes", json_path)
    report = measure_routes(plan, report, json_path)
    return finish_run(json_path, dataclasses.replace(report, complete=True,
                                                     finished=utc_now().isoformat(timespec="seconds")))


def measure_routes(plan: RunPlan, report: BenchRun, json_path: Path) -> BenchRun:
    """Run every route of the plan in order, rewriting the JSON after each; the report with all of them."""
    records: list[RouteRecord] = []
    load_samples: list[Sample] = []  # inside every GPU route's timed loops: the run's range under load

    def progress(position: int) -> BenchRun:
        return dataclasses.replace(report, routes=tuple(records), pending=plan.pending(position),
                                   goals=tuple(evaluate_goals(records, report.variant)), inputs=plan.inputs.record(),
                                   gpu_load=summarize_samples(load_samples) if load_samples else None)

    for position, (route, reason) in enumerate(plan.plan, start=1):
        if reason is not None:
            records.append(not_run(route, reason))
            continue
        sampler = GpuLoadSampler() if plan.gpu and route.device == "cuda" else None
        try:
            records.append(run_route(route, plan.batches[route.device], plan.budgets[route.device], sampler))
        except KeyboardInterrupt:
            update_run(json_path, dataclasses.replace(progress(position - 1),
                                                      interrupted_during=f"{route.name} {route.precision}"))
            log.warning("interrupted during %s %s: the routes finished before it are in %s", route.name,
                        route.precision, json_path)
            raise
        if sampler is not None:
            load_samples += in_windows(sampler.samples, sampler.windows.values())
        update_run(json_path, progress(position))
        log.info("results so far (%d of %d routes) in %s", position, len(plan.plan), json_path)
    return progress(len(plan.plan))


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
        print("interrupted: the JSON keeps the routes finished so far (\"complete\": false)", file=sys.stderr)
        return 130
    for file in written:
        print(f"wrote {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
