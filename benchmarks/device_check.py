"""One prepared run on a lent GPU machine: every check and measurement the kernel work needs, as steps within a
time budget, in one command (the device tool's limits and why it is done this way: docs/design.md §8b, §8d).

Here: ``make device-wheels`` (.whl/) and, to time an older kernel beside this tree's, ``--build-baseline <rev>``
(.device/); there, the device tool's `run` with `carry: [".whl", ".device"]`: ``python3 -m benchmarks.device_check
--out $OUT --commit <git sha>``. ``--dry-run`` prints the plan (``STEPS``); ``--file-results <files_at>`` copies
the run's files into benchmarks/results/<date>-<device>/ with a README of what ran.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.common.artifacts import write_json
from pipeline.common.records import JsonRecord

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIR = ROOT / ".whl"
#: What the device image lacks of this project's needs (its python3 has torch, onnx, onnxruntime, pytest, PyYAML):
#: the versions come from requirements/constraints.txt. timm is there, but not necessarily the pinned one.
DEVICE_PACKAGES = ("onnx_graphsurgeon", "polygraphy", "onnxruntime_extensions", "kernel-lens", "timm")
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                    "manylinux2014_x86_64", "manylinux1_x86_64")
SITE_DIR = "/tmp/swin-device-site"  #: where the wheels step installs (outside the repository: nothing to clean)
RESULTS_ROOT = ROOT / "benchmarks" / "results"
BASELINE_DIR = ROOT / ".device"  #: git-ignored: the baseline kernel library built here, carried to the device
#: The device tool returns at most 8 files from the top of $OUT (letters, digits, '.', '_', '-').
MAX_RESULT_FILES = 8
SUMMARY, LOG = "summary.json", "device_check.log"


@dataclasses.dataclass(frozen=True)
class Command:
    """One child process: ``argv`` with ``{placeholders}`` from :class:`Plan`; its output goes to the log, or to
    ``stdout_file`` (a result file) when set."""

    argv: tuple[str, ...]
    stdout_file: str | None = None

    def resolve(self, values: dict[str, str], lists: dict[str, list[str]]) -> list[str]:
        """Each ``{name}`` in an argument from ``values``; an argument that is exactly ``{name}`` of ``lists``
        becomes that many arguments."""
        argv: list[str] = []
        for arg in self.argv:
            key = arg.strip("{}")
            argv += lists[key] if arg == f"{{{key}}}" and key in lists else [arg.format(**values)]
        return argv


@dataclasses.dataclass(frozen=True)
class Step:
    """A named group of commands; ``typical_s``: how long it takes on an H100 (what the budget plans with);
    ``results``: files it leaves at the top of the output folder; ``collect``: (glob under the repository, name in
    the output folder) copied after the commands ran (the newest match)."""

    name: str
    what: str
    commands: tuple[Command, ...]
    typical_s: float
    results: tuple[str, ...] = ()
    collect: tuple[tuple[str, str], ...] = ()


def _py(*args: str, stdout_file: str | None = None) -> Command:
    return Command(("{python}", *args), stdout_file)


BENCH_RESULTS = "build/device-check/bench"
#: The test files with GPU tests, named rather than collected from tests/: other files import packages the device
#: image lacks (tritonclient, TensorRT-RTX), and one collection error stops a pytest run.
GPU_TEST_FILES = ("tests/test_plugin_gpu.py", "tests/test_triton_kernel.py", "tests/test_fused.py",
                  "tests/test_bench_runner.py", "tests/test_build_gpu.py", "tests/test_runtime.py",
                  "tests/test_dynamic_sizes.py")
# Both kernels' GPU test cases without the CUDA kernel's batch-64 one (racecheck on it alone takes minutes); pytest
# ids join the parameters.
SANITIZED_TESTS = ("tests/test_plugin_gpu.py", "tests/test_triton_kernel.py", "-k", "not 64-56-56-96")
NCU_SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "MemoryWorkloadAnalysis", "WarpStateStats")


def _sanitizer(tool: str) -> Command:
    # application-only: CMake's and nvcc's child processes (the test fixture's build, a no-op after the build step,
    # which made the same build/native-sm<arch>) are not tracked.
    return Command(("compute-sanitizer", "--tool", tool, "--target-processes", "application-only",
                    "--error-exitcode", "1", "{python}", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    *SANITIZED_TESTS))


def _ncu(*kernel_bench_args: str) -> Command:
    sections = [arg for name in NCU_SECTIONS for arg in ("--section", name)]
    # The kernel's first two launches (kernel_bench's warm-up calls before its CUDA graph capture) are enough; one
    # replay and one trial keep the rest of the run short, since ncu serializes every launch anyway.
    return Command(("ncu", "--target-processes", "application-only", "--kernel-name", "regex:windowAttention.*",
                    "--launch-count", "2", *sections, "{python}", "-m", "benchmarks.kernel_bench",
                    *kernel_bench_args, "--candidates", "kernel", "--calls", "1", "--replays", "1", "--trials", "1",
                    "--min-trial-ms", "0", "--out", "{scratch}/ncu_kernel_bench.json"), "ncu.txt")


def _network(variant: str, batches: str) -> Command:
    return _py("-m", "benchmarks.bench", "--variant", variant, "--precision", "fp16", "--batch", batches,
               "--routes", "torch-eager-cuda,torch-compile-cuda,torch-eager-cuda-fused,torch-compile-cuda-fused",
               "--results-dir", BENCH_RESULTS)


def _network_step(variant: str, batches: str) -> Step:
    return Step(f"network-{variant.lower()}", f"whole Swin-{variant}, FP16, PyTorch eager and compiled, unfused and "
                "fused", (_network(variant, batches),), 300,
                collect=((f"{BENCH_RESULTS}/bench_{variant.lower()}_*.json", f"bench_{variant.lower()}.json"),))


# typical_s: estimates for an H100 with 16 cores (builds ~10 s a library, torch.compile ~5 s per kernel row and
# ~30 s per whole-network batch), to be replaced by what the first real run's summary.json says.
STEPS = (
    Step("wheels", "install the carried wheels (make device-wheels)",
         (_py("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
              "--upgrade", "--target", "{site}", "{wheels}"),), 15),
    Step("env", "card, driver, clocks, versions", (_py("-m", "benchmarks.environment",
                                                        stdout_file="environment.json"),), 10),
    # The table goes to the log; kernel_bench's JSON records the resources of the library it times.
    Step("build", "native libraries for this card, resource report",
         (_py("-m", "benchmarks.kernel_resources", "--arch", "{arch}"),), 30),
    Step("test", "every GPU test",
         (_py("-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider", *GPU_TEST_FILES),), 120),
    Step("kernel", "kernel benchmark: CUDA and Triton kernels (each config), FP16 with torch.compile, FP32 without",
         (_py("-m", "benchmarks.kernel_bench", "--dtypes", "fp16", "{baseline}", "--out",
              "{out}/kernel_bench_fp16.json"),
          _py("-m", "benchmarks.kernel_bench", "--dtypes", "fp32", "--no-compile", "{baseline}",
              "--out", "{out}/kernel_bench_fp32.json")),
         330, results=("kernel_bench_fp16.json", "kernel_bench_fp32.json")),
    Step("sanitize", "compute-sanitizer memcheck and racecheck", (_sanitizer("memcheck"), _sanitizer("racecheck")),
         180),
    Step("ncu", "Nsight Compute of the kernel",
         (_ncu("--models", "T", "--dtypes", "fp16", "--batches", "64"),
          _ncu("--models", "B384", "--dtypes", "fp16", "--batches", "8")), 90, results=("ncu.txt",)),
    _network_step("T", "1,8,32,64"),
    _network_step("B384", "1,8,32"),
)
STEP_NAMES = tuple(step.name for step in STEPS)


def result_files(steps: Sequence[Step] = STEPS) -> list[str]:
    """Every file a run of ``steps`` may leave at the top of the output folder."""
    names = [SUMMARY, LOG]
    for step in steps:
        names += [*step.results, *(target for _, target in step.collect)]
        names += [c.stdout_file for c in step.commands if c.stdout_file]
    return list(dict.fromkeys(names))


# ---------------------------------------------------------------------------------------------------------
# The plan


@dataclasses.dataclass(frozen=True)
class StepRecord(JsonRecord):
    name: str
    status: str = "pending"  #: running, passed, failed, timeout, skipped
    seconds: float = 0.0
    returncodes: tuple[int | None, ...] = ()
    reason: str | None = None
    headline: str | None = None
    commands: tuple[str, ...] = ()  #: as run, for the results' README


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeviceSummary(JsonRecord):
    """``summary.json``: the run's steps so far (``complete`` once every step had its turn)."""

    commit: str
    arch: str
    budget_s: float
    started_utc: str
    complete: bool = False
    seconds: float | None = None
    steps: tuple[StepRecord, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        return data if self.seconds is not None else {k: v for k, v in data.items() if k != "seconds"}


@dataclasses.dataclass
class Plan:
    steps: list[Step]
    out: Path
    budget_s: float
    python: str = sys.executable
    arch: str = "{arch}"
    commit: str = "unknown"

    def values(self) -> dict[str, str]:
        return {"python": self.python, "out": str(self.out), "arch": self.arch, "site": SITE_DIR,
                "scratch": str(ROOT / "build" / "device-check")}

    def argv(self, command: Command) -> list[str]:
        # With no wheel there, the pattern itself goes to pip, whose error then names the missing folder.
        wheels = [str(w) for w in sorted(WHEEL_DIR.glob("*.whl"))] or [str(WHEEL_DIR / "*.whl")]
        library = baseline_library(self.arch)
        baseline = ["--baseline", str(library)] if library.is_file() else []
        return command.resolve(self.values(), {"wheels": wheels, "baseline": baseline})

    def command_line(self, command: Command) -> str:
        """The command as a shell would read it, with where its output goes."""
        return shlex.join(self.argv(command)) + (f" > {command.stdout_file}" if command.stdout_file else "")

    def describe(self) -> list[str]:
        lines, total = [], 0.0
        for step in self.steps:
            total += step.typical_s
            fits = "" if total <= self.budget_s else "  (beyond the budget: would be skipped)"
            lines.append(f"{step.name:<9} ~{step.typical_s:4.0f} s  (cumulative {total:4.0f} s){fits}  {step.what}")
            lines += [f"    {self.command_line(c)}" for c in step.commands]
        return lines


def select_steps(names: str | None) -> list[Step]:
    """The steps named (comma-separated, in that order), or all; an unknown name is a one-line error."""
    if names is None:
        return list(STEPS)
    by_name = {step.name: step for step in STEPS}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in by_name]
    if unknown or not wanted:
        raise SystemExit(f"device_check: error: --steps {names!r}: expected names from {', '.join(STEP_NAMES)}")
    return [by_name[n] for n in dict.fromkeys(wanted)]


# ---------------------------------------------------------------------------------------------------------
# Running


def _environment(plan: Plan, installed_site: bool) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    paths = [str(ROOT)] + ([SITE_DIR] if installed_site else [])
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])])
    from pipeline.kernels.cmake import arch_build_dir  # numpy: not needed to plan, list or file a run

    # The fused model's op (pipeline.kernels.ops, $SWIN_ATTN_CUDA_LIBRARY) loads the kernel the build step built.
    env.setdefault("SWIN_ATTN_CUDA_LIBRARY", str(arch_build_dir(plan.arch) / "libswin_window_attention_cuda.so"))
    return env


def run_command(argv: list[str], log: Path, stdout_file: Path | None, timeout_s: float,
                env: dict[str, str]) -> int | None:
    """Run ``argv`` in its own process group (a timeout kills its children too); None when it timed out."""
    with log.open("a") as log_file:
        log_file.write(f"\n$ {shlex.join(argv)}\n")
        log_file.flush()
        stdout = stdout_file.open("a") if stdout_file else log_file
        try:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=stdout, stderr=log_file,
                                       start_new_session=True)
            try:
                return process.wait(timeout=max(timeout_s, 1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                log_file.write(f"[device_check] killed after {timeout_s:.0f} s (the budget)\n")
                return None
        except FileNotFoundError as error:
            log_file.write(f"[device_check] {error}\n")
            return 127
        finally:
            if stdout_file:
                stdout.close()
                if stdout_file.stat().st_size == 0:  # a tool that never started: no empty result file
                    stdout_file.unlink()


def run_step(step: Step, plan: Plan, deadline: float) -> StepRecord:
    """Run one step's commands (each until ``deadline``), then collect its files."""
    start = time.monotonic()
    env = _environment(plan, installed_site=Path(SITE_DIR).is_dir())
    commands: list[str] = []
    codes: list[int | None] = []
    for command in step.commands:
        left = deadline - time.monotonic()
        commands.append(plan.command_line(command))
        stdout_file = plan.out / command.stdout_file if command.stdout_file else None
        codes.append(run_command(plan.argv(command), plan.out / LOG, stdout_file, left, env))
        if codes[-1] is None:
            break
    for pattern, target in step.collect:
        found = sorted(ROOT.glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            shutil.copyfile(found[-1], plan.out / target)
    status = "timeout" if None in codes else "passed" if all(code == 0 for code in codes) else "failed"
    return StepRecord(step.name, status, round(time.monotonic() - start, 1), tuple(codes),
                      headline=headline(step.name, plan.out), commands=tuple(commands))


def run_plan(plan: Plan) -> list[StepRecord]:
    """Every step in order within the budget; ``summary.json`` rewritten after each."""
    plan.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    deadline = started + plan.budget_s
    records = [StepRecord(step.name) for step in plan.steps]
    summary = DeviceSummary(commit=plan.commit, arch=plan.arch, budget_s=plan.budget_s, started_utc=datetime.datetime
                            .now(datetime.timezone.utc).isoformat(timespec="seconds"))

    def save(**changes: Any) -> None:
        write_json(plan.out / SUMMARY, dataclasses.replace(summary, steps=tuple(records), **changes).to_json())

    save()
    for position, step in enumerate(plan.steps):
        left = deadline - time.monotonic()
        if left < step.typical_s:
            records[position] = StepRecord(step.name, "skipped", reason=f"{left:.0f} s of the budget left, it takes "
                                           f"~{step.typical_s:.0f}")
        else:
            records[position] = StepRecord(step.name, "running")
            save()
            records[position] = run_step(step, plan, deadline)
        save()
    save(complete=True, seconds=round(time.monotonic() - started, 1))
    return records


# ---------------------------------------------------------------------------------------------------------
# Headlines: one line per step for the table printed last (the device tool returns the output's tail)


def _last_match(pattern: str, text: str) -> str | None:
    found = re.findall(pattern, text, flags=re.MULTILINE)
    return found[-1] if found else None


def headline(step: str, out: Path) -> str | None:
    """The one number a reader wants from a step's output (pytest's counts, the sanitizers' error summaries,
    the kernel goals' verdicts), or None."""
    log = (out / LOG).read_text(errors="replace") if (out / LOG).is_file() else ""
    section = log.rsplit("\n$ ", 1)[-1] if step != "sanitize" else log
    if step == "test":
        return _last_match(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s", section)
    if step == "sanitize":
        summaries = re.findall(r"^=+ (?:ERROR|RACECHECK) SUMMARY: (.*)$", log, flags=re.MULTILINE)
        return "; ".join(summaries[-2:]) or None
    if step == "kernel" and (out / "kernel_bench_fp16.json").is_file():
        from benchmarks.records import KernelBenchRun  # pipeline.make: not needed to plan, list or file a run

        goals = KernelBenchRun.from_json(json.loads((out / "kernel_bench_fp16.json").read_text())).goals
        return f"{sum(g.met is True for g in goals)}/{len(goals)} goal rows met (kernel_bench_fp16.json)"
    return None


def summary_table(records: Sequence[StepRecord]) -> str:
    lines = [f"{'step':<9} {'status':<8} {'seconds':>7}  result"]
    for r in records:
        detail = r.headline or r.reason or ""
        lines.append(f"{r.name:<9} {r.status:<8} {r.seconds:7.1f}  {detail}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Here, afterwards: a run's files as a committed results folder


def results_readme(summary: DeviceSummary, environment: dict[str, Any] | None, files: Sequence[str]) -> str:
    """What ran, on what, with what outcome: the README of a results folder, from the run's own records
    (``environment``: benchmarks.environment's, where the run got that far)."""
    gpu = (environment or {}).get("gpu") or {}
    smi = ((environment or {}).get("nvidia_smi") or [{}])[0]
    packages = (environment or {}).get("packages") or {}
    cpu = (environment or {}).get("cpu") or {}
    machine = gpu.get("device") or (f"a CPU ({cpu['model']})" if cpu.get("model") else "an unrecorded machine")
    lines = [f"# Device run on {machine}, {summary.started_utc}", "",
             f"Working tree at commit `{summary.commit}`, built for sm_{summary.arch}; "
             f"driver {smi.get('driver_version', '?')}, nvcc {(environment or {}).get('nvcc', '?')}, "
             f"torch {packages.get('torch', '?')}. Made by `python -m benchmarks.device_check` "
             f"(budget {summary.budget_s:.0f} s{'' if summary.complete else ', did not finish'}).", "",
             "| step | status | seconds | result |", "|---|---|---|---|"]
    lines += [f"| {step.name} | {step.status} | {step.seconds:.1f} | {step.headline or step.reason or ''} |"
              for step in summary.steps]
    lines += ["", "Files:", *(f"- `{name}`" for name in files), "", "Commands:", ""]
    lines += [f"    {command}" for step in summary.steps for command in step.commands]
    return "\n".join(lines) + "\n"


def file_results(run: Path, results_root: Path = RESULTS_ROOT) -> Path:
    """Copy a device run's files (``run``: the device tool's files_at) into ``results_root/<date>-<device>/`` with
    a README of what ran; a folder of that name is never replaced (``_2``…)."""
    from benchmarks.environment import device_slug
    from pipeline.common.artifacts import atomic_folder

    if not (run / SUMMARY).is_file():
        raise SystemExit(f"device_check: error: {run} has no {SUMMARY}: give the folder a device run's files came "
                         "back to (the device tool's files_at)")
    summary = DeviceSummary.from_json(json.loads((run / SUMMARY).read_text()))
    environment = json.loads((run / "environment.json").read_text()) if (run / "environment.json").is_file() else None
    device = device_slug(environment) if environment else "unknown-device"
    stem = f"{summary.started_utc[:10]}-{device}"
    target, attempt = results_root / stem, 1
    while target.exists():
        attempt += 1
        target = results_root / f"{stem}_{attempt}"
    files = [name for name in result_files() if (run / name).is_file()]
    with atomic_folder(target) as staged:
        for name in files:
            shutil.copyfile(run / name, staged / name)
        (staged / "README.md").write_text(results_readme(summary, environment, files))
    return target


# ---------------------------------------------------------------------------------------------------------
# Here: the wheels the device needs


def pinned_versions(names: Sequence[str], constraints: Path = ROOT / "requirements" / "constraints.txt") -> list[str]:
    """``name==version`` for each name, from the constraints file (names compared as pip does: case, - and _)."""
    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {canonical(n): line.strip() for line in constraints.read_text().splitlines()
            if "==" in line and not line.startswith("#") for n in [line.split("==")[0]]}
    missing = [n for n in names if canonical(n) not in pins]
    if missing:
        raise SystemExit(f"device_check: error: {constraints} pins no {', '.join(missing)}: pin it there first")
    return [pins[canonical(n)] for n in names]


def baseline_library(arch: str) -> Path:
    return BASELINE_DIR / f"baseline_sm{arch}.so"


def build_baseline(revision: str, arch: str) -> Path:
    """``revision``'s CUDA kernel library for ``arch``, built here from a temporary git worktree (the C ABI is the
    same across revisions), at :func:`baseline_library` with a ``.json`` beside it naming the commit."""
    from pipeline.common.artifacts import atomic_path
    from pipeline.kernels.cmake import build_native

    commit = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, capture_output=True,
                            text=True, check=False)
    if commit.returncode != 0:
        raise SystemExit(f"device_check: error: --build-baseline {revision!r} is no commit of this repository: "
                         "give a branch, tag or commit hash")
    sha = commit.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="swin-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", "--quiet", str(tree), sha], cwd=ROOT, check=True)
        try:
            built = build_native(Path(tmp) / "build", cuda_arch=arch, source=tree)
            target = baseline_library(arch)
            with atomic_path(target) as staged:
                shutil.copyfile(built.cuda, staged)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    write_json(target.with_suffix(".json"), {"revision": revision, "commit": sha, "arch": arch})
    return target


def download_wheels(dest: Path = WHEEL_DIR) -> int:
    """``pip download`` of ``DEVICE_PACKAGES`` (pinned) for the device's Python and platform into ``dest``."""
    platforms = [arg for p in DEVICE_PLATFORMS for arg in ("--platform", p)]
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
            DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(dest), *pinned_versions(DEVICE_PACKAGES)]
    return subprocess.run(argv, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="result folder (on the device: $OUT)")
    parser.add_argument("--steps", help=f"comma-separated, in order (default: all of {','.join(STEP_NAMES)})")
    parser.add_argument("--budget-s", type=float, default=560.0,
                        help="seconds for all steps (560: a device command may run 600 s)")
    parser.add_argument("--commit", default="unknown", help="the commit the working tree is (the device has no .git)")
    parser.add_argument("--arch", help="CUDA architecture, e.g. 90 (default: the visible GPU's)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--download-wheels", action="store_true",
                        help=f"here, with network: fetch the device's wheels into {WHEEL_DIR.name}/ and exit")
    parser.add_argument("--build-baseline", metavar="REV",
                        help=f"here: build REV's kernel library for --arch (default 90) into {BASELINE_DIR.name}/, "
                             "which the kernel step then times beside this tree's, and exit")
    parser.add_argument("--file-results", metavar="DIR", type=Path,
                        help="here, afterwards: copy a run's files (the device tool's files_at) into "
                             "benchmarks/results/<date>-<device>/ with a README of what ran, and exit")
    args = parser.parse_args(argv)
    if args.file_results:
        print(f"wrote {file_results(args.file_results)}")
        return 0
    if args.download_wheels:
        return download_wheels()
    if args.build_baseline:
        try:
            print(f"wrote {build_baseline(args.build_baseline, args.arch or '90')}")
        except RuntimeError as error:  # the build's own message, CMake's output after its first line
            print(f"device_check: error: building {args.build_baseline}: {error}", file=sys.stderr)
            return 2
        return 0
    steps = select_steps(args.steps)
    if args.out is None and not args.dry_run:
        parser.error("--out is required (on the device: --out $OUT)")
    if len(result_files(steps)) > MAX_RESULT_FILES:
        parser.error(f"these steps leave {len(result_files(steps))} files; the device tool returns {MAX_RESULT_FILES}")
    plan = Plan(steps, args.out or Path("$OUT"), args.budget_s, commit=args.commit)
    if args.arch:
        plan.arch = args.arch
    elif not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("device_check: error: no CUDA device is visible (torch.cuda.is_available() is False); run it on "
                  "the device machine, or --dry-run here", file=sys.stderr)
            return 2
        plan.arch = "".join(map(str, torch.cuda.get_device_capability()))
    if args.dry_run:
        print("\n".join(plan.describe()))
        return 0
    records = run_plan(plan)
    print(summary_table(records))
    return 0 if all(r.status in ("passed", "skipped") for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
