"""``python -m benchmarks.bench`` (``make bench``): every deployment path of one Swin variant that this machine
can run, measured in one process, side by side.

    python -m benchmarks.bench --variant T [--precision fp16,int8] [--batch 1,8,32,64] [--cuda-graphs]

Paths (a path that cannot run here is listed as skipped with the reason, never dropped):
  tensorrt-plugin          our engine with SwinWindowAttention (build/swin_<v>/swin_<v>_<p>.engine from
                           `make engine`, else built here from the surgered ONNX for FP32/FP16)
  tensorrt-native          TensorRT on the plain exported ONNX, no surgery (Myelin fuses attention itself)
  torch-eager-*, torch-compile-*      PyTorch on CUDA (FP32 and the requested precisions) and on the CPU (FP32)
  onnxruntime-tensorrt, onnxruntime-cuda, onnxruntime-cpu      onnxruntime on the plain ONNX
  onnxruntime-cpu-surgered the surgered ONNX with the Python reference op: a correctness path, not a deployment one

GPU paths: warm-up, then --iterations (200) timed iterations with CUDA events and no host sync inside the loop.
CPU paths: the same iteration count, but a timed loop stops after --cpu-budget-s once --cpu-min-iterations are
done, and the default CPU batches are 1,8 (--batch sets both lists). Results go to
build/bench/bench_<variant>_<device>_<UTC time>.{json,md,png} (git-ignored; a file is never replaced);
`python -m benchmarks.report --commit <json>` copies a run into benchmarks/results/ to be committed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import traceback
from pathlib import Path
from typing import Any

from benchmarks import environment
from benchmarks.paths import BenchPath, OnnxruntimePath, PathUnavailable, TensorRTPath, TorchPath
from benchmarks.report import ROOT, RUNS_DIR, evaluate_goals, timestamped, utc_now, write_report
from benchmarks.stats import summarize
from benchmarks.timers import Budget
from pipeline.errors import PipelineError
from pipeline.stages import StageRunner

log = logging.getLogger("benchmarks.bench")

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_GPU_BATCHES = (1, 8, 32, 64)
DEFAULT_CPU_BATCHES = (1, 8)
DEFAULT_PLUGIN = ROOT / "build" / "plugin" / "libswin_window_attention_plugin.so"
SURGERED_NOTE = "reference op, correctness path, not a deployment path"


@dataclasses.dataclass
class Inputs:
    """The ONNX files every path starts from, and a folder for what the benchmark derives from them."""

    variant: str
    onnx: Path
    surgered: Path
    source: str
    work_dir: Path
    plugin_library: Path
    engine_dir: Path
    gpu_batches: tuple[int, ...]

    def __post_init__(self) -> None:
        self.stages = StageRunner(self.work_dir)

    def typed_plain_onnx(self, precision: str) -> Path:
        """The plain export in ``precision``: TensorRT's own attention fusion gets the same types as ours."""
        if precision == "fp32":
            return self.onnx
        if precision != "fp16":
            raise PathUnavailable(f"TensorRT's native path needs a {precision.upper()} model of the plain ONNX; the "
                                  "pipeline calibrates only the surgered graph (calib/), so it is not measured")
        from pipeline.precision import convert_fp16

        typed = self.work_dir / "model.fp16.onnx"
        self.stages.run("fp16-plain", {}, [self.onnx], [typed], lambda: convert_fp16(self.onnx, typed))
        return typed

    def _build(self, name: str, typed: Path) -> Path:
        from pipeline.build import build_engine

        engine = self.work_dir / f"{name}.engine"
        batch = (min(self.gpu_batches), sorted(self.gpu_batches)[len(self.gpu_batches) // 2], max(self.gpu_batches))
        self.stages.run(f"build-{name}", {"batch": batch}, [typed, self.plugin_library],
                        [engine, engine.with_suffix(".json")],
                        lambda: build_engine(typed, engine, plugin_library=self.plugin_library, batch=batch,
                                             backend="tensorrt", timing_cache=self.work_dir / "timing.cache",
                                             detailed_profile=True))
        return engine

    def plugin_engine(self, precision: str) -> Path:
        """`make engine`'s engine when it exists, else one built here (FP32/FP16; INT8 needs calibration)."""
        name = f"swin_{self.variant.lower()}_{precision}"
        made = self.engine_dir / f"{name}.engine"
        if made.is_file():
            return made
        if precision == "int8":
            raise PathUnavailable(f"no INT8 engine at {made}: INT8 needs calibration, run "
                                  f"`make engine VARIANT={self.variant} PRECISION=int8` first")
        if precision == "fp32":
            return self._build(name, self.surgered)
        from pipeline.precision import convert_fp16

        typed = self.work_dir / "model.swin.fp16.onnx"
        self.stages.run("fp16-surgered", {}, [self.surgered], [typed], lambda: convert_fp16(self.surgered, typed))
        return self._build(name, typed)

    def native_engine(self, precision: str) -> Path:
        return self._build(f"native_{self.variant.lower()}_{precision}", self.typed_plain_onnx(precision))


def prepare_inputs(variant: str, onnx_dir: Path | None, work_dir: Path, max_batch: int, **kwargs: Any) -> Inputs:
    """Reuse ``onnx_dir`` or `make engine`'s ``build/swin_<v>/``; else export and operate into ``work_dir``."""
    from pipeline.export import export_onnx
    from pipeline.models import build_swin, variant_config
    from pipeline.surgery import replace_window_attention

    names = ("model.onnx", "model.swin.onnx")
    default_dir = ROOT / "build" / f"swin_{variant.lower()}"
    if onnx_dir is not None:
        if not all((onnx_dir / n).is_file() for n in names):
            raise PipelineError(f"{onnx_dir} lacks {' or '.join(names)}; run `make onnx VARIANT={variant}` or omit "
                                "--onnx-dir to export here")
        return Inputs(variant, onnx_dir / names[0], onnx_dir / names[1], str(onnx_dir), work_dir, **kwargs)
    if all((default_dir / n).is_file() for n in names):
        return Inputs(variant, default_dir / names[0], default_dir / names[1], f"{default_dir} (make engine)",
                      work_dir, **kwargs)
    config = variant_config(variant)
    stages = StageRunner(work_dir)
    onnx_path, surgered = work_dir / names[0], work_dir / names[1]

    def export() -> dict[str, str]:
        import torch

        torch.manual_seed(0)  # random weights, as `make engine` without a checkpoint: latency does not depend on them
        return {"onnx": str(export_onnx(build_swin(variant), onnx_path, img_size=config.img_size,
                                        max_batch=max_batch))}

    stages.run("export", {"variant": variant, "max_batch": max_batch}, [], [onnx_path], export)
    stages.run("surgery", {}, [onnx_path], [surgered],
               lambda: {"blocks": replace_window_attention(onnx_path, surgered)["blocks_replaced"]})
    return Inputs(variant, onnx_path, surgered, f"{work_dir} (exported by the benchmark)", work_dir, **kwargs)


def build_paths(inputs: Inputs, precisions: tuple[str, ...], *, cuda_graphs: bool,
                compile_budget_s: float | None) -> list[BenchPath]:
    """Every path, GPU ones first; PyTorch and onnxruntime also run FP32, the reference everyone compares with."""
    from pipeline.models import build_swin, variant_config

    config = variant_config(inputs.variant)
    size = (config.img_size, config.img_size)

    def model() -> Any:
        import torch

        torch.manual_seed(0)
        return build_swin(inputs.variant)

    with_fp32 = tuple(dict.fromkeys(("fp32", *precisions)))
    paths: list[BenchPath] = []
    for precision in precisions:
        paths.append(TensorRTPath("tensorrt-plugin", precision, lambda p=precision: inputs.plugin_engine(p),
                                  inputs.plugin_library, cuda_graphs=cuda_graphs, note="our engine"))
    for precision in precisions:
        paths.append(TensorRTPath("tensorrt-native", precision, lambda p=precision: inputs.native_engine(p), None,
                                  cuda_graphs=cuda_graphs, note="plain ONNX, no surgery"))
    for compiled in (False, True):
        paths += [TorchPath(model, size, p, "cuda", compile=compiled, compile_budget_s=compile_budget_s,
                            cuda_graphs=cuda_graphs) for p in with_fp32]
    for name in ("onnxruntime-tensorrt", "onnxruntime-cuda"):
        paths += [OnnxruntimePath(name, lambda p=p: inputs.typed_plain_onnx(p), p, cache_dir=inputs.work_dir)
                  for p in with_fp32]
    paths += [TorchPath(model, size, "fp32", "cpu"),
              TorchPath(model, size, "fp32", "cpu", compile=True, compile_budget_s=compile_budget_s),
              OnnxruntimePath("onnxruntime-cpu", lambda: inputs.onnx, "fp32")]
    from pipeline.reference import ort_session

    paths.append(OnnxruntimePath("onnxruntime-cpu-surgered", lambda: inputs.surgered, "fp32",
                                 session_factory=ort_session, note=SURGERED_NOTE))
    return paths


def run_path(path: BenchPath, batches: tuple[int, ...], budget: Budget) -> dict[str, Any]:
    """Measure ``path`` at each batch; never raises for a path problem: it becomes ``skipped``/``failed``."""
    record: dict[str, Any] = {"name": path.name, "precision": path.precision, "device": path.device,
                              "note": path.note, "timer": None, "budget": dataclasses.asdict(budget), "results": []}
    try:
        path.setup()
        record["timer"] = path.timer().name
        for batch in batches:
            record["results"].append(_run_batch(path, batch, budget))
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


def _batches(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,8,32, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def _precisions(text: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip().lower() for v in text.split(",")))
    unknown = [v for v in values if v not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown)}: expected {', '.join(PRECISIONS)}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="T", help="Swin variant (default T)")
    parser.add_argument("--precision", type=_precisions, default=("fp16",),
                        help="TensorRT precisions, comma-separated: fp32, fp16, int8 (default fp16)")
    parser.add_argument("--batch", type=_batches, help="batch sizes for every path (overrides the two below)")
    parser.add_argument("--gpu-batch", type=_batches, default=DEFAULT_GPU_BATCHES, help="GPU paths (1,8,32,64)")
    parser.add_argument("--cpu-batch", type=_batches, default=DEFAULT_CPU_BATCHES, help="CPU paths (1,8)")
    parser.add_argument("--iterations", type=int, default=200, help="timed iterations per path and batch (200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first on the GPU (20)")
    parser.add_argument("--cpu-warmup", type=int, default=5, help="untimed iterations first on the CPU (5; oneDNN "
                        "sets up its kernels during the first few)")
    parser.add_argument("--cpu-budget-s", type=float, default=10.0,
                        help="a CPU timed loop stops after this many seconds... (10)")
    parser.add_argument("--cpu-min-iterations", type=int, default=10, help="...once this many are done (10)")
    parser.add_argument("--compile-budget-s", type=float, default=90.0,
                        help="torch.compile's first call per batch may take this long, else the path is skipped (90)")
    parser.add_argument("--cuda-graphs", action="store_true", help="replay TensorRT and PyTorch eager as CUDA graphs")
    parser.add_argument("--paths", help="only these path names, comma-separated (the others are listed as skipped)")
    parser.add_argument("--onnx-dir", type=Path, help="folder with model.onnx and model.swin.onnx (default: "
                                                      "build/swin_<v> when `make engine` wrote it, else exported)")
    parser.add_argument("--engine-dir", type=Path, help="folder with `make engine`'s engines (build/swin_<v>)")
    parser.add_argument("--work-dir", type=Path, help="for exports and engines built here (build/bench_<v>)")
    parser.add_argument("--plugin", type=Path, default=DEFAULT_PLUGIN, help="SwinWindowAttention plugin library")
    parser.add_argument("--results-dir", type=Path, default=RUNS_DIR,
                        help="where this run's files go (default build/bench, git-ignored)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def run(args: argparse.Namespace, argv: list[str]) -> list[Path]:
    variant = args.variant.upper()
    gpu_batches = args.batch or args.gpu_batch
    cpu_batches = args.batch or args.cpu_batch
    budgets = {"cuda": Budget(warmup=args.warmup, iterations=args.iterations, min_iterations=args.iterations),
               "cpu": Budget(warmup=args.cpu_warmup, iterations=args.iterations,
                             min_iterations=min(args.cpu_min_iterations, args.iterations), seconds=args.cpu_budget_s)}
    batches = {"cuda": gpu_batches, "cpu": cpu_batches}
    inputs = prepare_inputs(variant, args.onnx_dir, args.work_dir or ROOT / "build" / f"bench_{variant.lower()}",
                            max(max(gpu_batches), max(cpu_batches)), plugin_library=args.plugin,
                            engine_dir=args.engine_dir or ROOT / "build" / f"swin_{variant.lower()}",
                            gpu_batches=gpu_batches)
    paths = build_paths(inputs, args.precision, cuda_graphs=args.cuda_graphs, compile_budget_s=args.compile_budget_s)
    selected = set(args.paths.split(",")) if args.paths else None
    if selected is not None and not selected & {p.name for p in paths}:
        raise PipelineError(f"--paths {args.paths} names no path; choose from "
                            f"{', '.join(dict.fromkeys(p.name for p in paths))}")
    env = environment.collect()
    records = []
    for path in paths:
        if selected is not None and path.name not in selected:
            records.append({"name": path.name, "precision": path.precision, "device": path.device, "note": path.note,
                            "status": "skipped", "reason": "not selected (--paths)", "results": []})
            continue
        records.append(run_path(path, batches[path.device], budgets[path.device]))
    created = utc_now()
    device = environment.device_slug(env)
    report = {
        "schema": 1, "variant": variant, "image_size": list(_image_size(variant)),
        "created": created.isoformat(timespec="seconds"), "device": device, "command": argv,
        "environment": env,
        "settings": {"batches": {k: list(v) for k, v in batches.items()},
                     "budgets": {k: dataclasses.asdict(v) for k, v in budgets.items()},
                     "cuda_graphs": args.cuda_graphs, "compile_budget_s": args.compile_budget_s,
                     "precisions": list(args.precision)},
        "inputs": {"onnx": str(inputs.onnx), "surgered_onnx": str(inputs.surgered), "source": inputs.source},
        "paths": records,
        "goals": evaluate_goals(records),
    }
    return write_report(report, args.results_dir / timestamped(f"bench_{variant.lower()}_{device}", created))


def _image_size(variant: str) -> tuple[int, int]:
    from pipeline.models import variant_config

    size = variant_config(variant).img_size
    return size, size


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # Our progress at INFO; the exporters' chatter (onnxscript logs every merged initializer) only with -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    for name in ("benchmarks", "pipeline"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        written = run(args, argv)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
