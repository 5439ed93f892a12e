"""The prepared device run (benchmarks.device_check): its plan fits the device tool's limits, every command it
would run names real modules, files and tests, and the runner keeps to its budget, records each step and survives a
failing or hanging one. The steps' GPU work itself runs only on a GPU machine."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import device_check
from benchmarks.device_check import (
    DEVICE_PACKAGES,
    LOG,
    MAX_RESULT_FILES,
    SANITIZED_TESTS,
    STEPS,
    SUMMARY,
    Command,
    DeviceSummary,
    Plan,
    Step,
    headline,
    pinned_versions,
    result_files,
    run_plan,
    select_steps,
)

ROOT = Path(__file__).resolve().parents[1]


def test_result_files_fit_what_the_device_tool_returns() -> None:
    names = result_files(STEPS)
    assert len(names) <= MAX_RESULT_FILES
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in names), names


def test_every_command_names_a_real_module_or_path() -> None:
    plan = Plan(list(STEPS), Path("/out"), 540.0, arch="90")
    for step in STEPS:
        for command in step.commands:
            argv = plan.argv(command)
            if "-m" in argv:
                module = argv[argv.index("-m") + 1]
                assert importlib.util.find_spec(module) is not None, f"{step.name}: no module {module}"
            for arg in argv:
                if arg.startswith("tests"):
                    assert (ROOT / arg).exists(), f"{step.name}: {arg} does not exist"


def test_kernel_bench_accepts_the_arguments_the_steps_pass(capsys: pytest.CaptureFixture[str]) -> None:
    """On a CPU machine kernel_bench parses its arguments and then refuses for want of CUDA (a usage error would
    exit through argparse instead)."""
    from benchmarks import kernel_bench

    plan = Plan(list(STEPS), Path("/tmp/out"), 540.0, arch="90")
    module = "benchmarks.kernel_bench"
    invocations = [plan.argv(c) for step in STEPS for c in step.commands if module in plan.argv(c)]
    assert len(invocations) == 4  # FP16 and FP32 timing, two Nsight Compute runs
    for argv in invocations:
        assert kernel_bench.main(argv[argv.index(module) + 1:]) == 2
        assert "needs a CUDA device" in capsys.readouterr().err


def test_bench_accepts_the_arguments_and_route_names_the_network_step_passes() -> None:
    from benchmarks.bench import build_parser
    from benchmarks.routes import CUDA_GRAPH_ROUTES

    networks = [step for step in STEPS if step.name.startswith("network")]
    assert len(networks) == 2
    for network, command in ((step, command) for step in networks for command in step.commands):
        argv = Plan([network], Path("/tmp/out"), 540.0, arch="90").argv(command)
        args = build_parser().parse_args(argv[argv.index("benchmarks.bench") + 1:])
        assert args.batch
        # PyTorch on CUDA only, each replayed from a CUDA graph: no CPU route, no TensorRT engine to build there.
        assert set(args.routes.split(",")) <= set(CUDA_GRAPH_ROUTES) - {"tensorrt-plugin", "tensorrt-native"}


def test_sanitized_selection_is_every_kernel_case_but_the_batch_64_one() -> None:
    """The sanitizers' -k expression against the real test ids: collected, not run (they need a GPU)."""
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                             *SANITIZED_TESTS], capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
    selected = [line for line in result.stdout.splitlines() if "::" in line]
    from test_plugin_gpu import GPU_CASES
    from test_triton_kernel import CASES as TRITON_CASES

    cases = [case for case in GPU_CASES if case[0] != 64]
    kernel_tests = [line for line in selected if "test_plugin_gpu.py::test_kernel_matches_reference" in line]
    assert len(kernel_tests) == 2 * len(cases)  # FP32 and FP16
    triton_tests = [line for line in selected if "test_triton_kernel.py::test_kernel_on_cuda_matches_reference" in line]
    assert len(triton_tests) == 2 * len(TRITON_CASES)  # the Triton kernel: JIT, its ahead-of-time image, compile
    assert not any("[64-56-56-96" in line or "-64-56-56-96-" in line for line in selected)


def test_every_device_package_is_pinned() -> None:
    pins = pinned_versions(DEVICE_PACKAGES)
    assert [pin.split("==")[0].lower().replace("_", "-") for pin in pins] == [
        name.lower().replace("_", "-") for name in DEVICE_PACKAGES]
    assert all(re.fullmatch(r"[\w.-]+==[\w.+-]+", pin) for pin in pins)


def test_unknown_step_is_a_one_line_error() -> None:
    with pytest.raises(SystemExit, match="expected names from wheels, env, build"):
        select_steps("build,tset")
    assert [s.name for s in select_steps("kernel,build,kernel")] == ["kernel", "build"]


def test_dry_run_prints_the_plan_and_marks_what_exceeds_the_budget(capsys: pytest.CaptureFixture[str]) -> None:
    assert device_check.main(["--dry-run", "--budget-s", "100", "--arch", "90"]) == 0
    printed = capsys.readouterr().out
    for step in STEPS:
        assert re.search(rf"^{step.name}\s", printed, flags=re.MULTILINE)
    assert "beyond the budget" in printed
    assert "--arch 90" in printed


def test_a_real_run_needs_an_output_folder(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        device_check.main(["--steps", "env"])
    assert exit_info.value.code == 2
    assert "--out is required" in capsys.readouterr().err


def _python(code: str) -> Command:
    return Command(("{python}", "-c", code))


def test_runner_keeps_going_past_failures_skips_what_does_not_fit_and_kills_what_overruns(tmp_path: Path) -> None:
    out = tmp_path / "out"
    steps = [
        Step("ok", "prints", (_python("print('fine')"),), typical_s=0.1),
        Step("fails", "exits 3", (_python("import sys; sys.exit(3)"), _python("print('still runs')")),
             typical_s=0.1),
        Step("hangs", "sleeps with a child", (_python(
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            " time.sleep(60)"),), typical_s=0.1),
        Step("late", "never fits", (_python("print('no')"),), typical_s=3600),
    ]
    start = time.monotonic()
    records = run_plan(Plan(steps, out, budget_s=2.5, arch="90"))
    assert time.monotonic() - start < 30
    assert [(r.name, r.status) for r in records] == [("ok", "passed"), ("fails", "failed"), ("hangs", "timeout"),
                                                     ("late", "skipped")]
    assert records[1].returncodes == (3, 0)
    assert "s of the budget left" in (records[3].reason or "")
    summary = DeviceSummary.from_json(json.loads((out / SUMMARY).read_text()))
    assert summary.complete is True and summary.seconds is not None
    assert summary.steps == tuple(records) and "fine" in records[0].commands[0]
    log = (out / LOG).read_text()
    assert "fine" in log and "still runs" in log and "killed after" in log
    assert "no\n" not in log
    # The hanging step's grandchild went with it: its process group was killed.
    time.sleep(0.5)
    leftover = subprocess.run(["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True, check=False)
    assert leftover.stdout.strip() == ""


def test_runner_collects_the_newest_matching_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_check, "ROOT", tmp_path)
    results = tmp_path / "build" / "bench"
    results.mkdir(parents=True)
    older, newer = results / "bench_t_a.json", results / "bench_t_b.json"
    older.write_text('{"which": "older"}')
    newer.write_text('{"which": "newer"}')
    import os

    os.utime(older, (1, 1))
    step = Step("collect", "copies", (_python("pass"),), 0.1, collect=(("build/bench/bench_t_*.json", "bench_t.json"),))
    run_plan(Plan([step], tmp_path / "out", 60.0, arch="90"))
    assert json.loads((tmp_path / "out" / "bench_t.json").read_text()) == {"which": "newer"}


def test_headlines_read_pytest_and_sanitizer_summaries(tmp_path: Path) -> None:
    (tmp_path / LOG).write_text(
        "\n$ compute-sanitizer --tool memcheck ...\n========= ERROR SUMMARY: 0 errors\n"
        "\n$ compute-sanitizer --tool racecheck ...\n========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, "
        "0 warnings)\n"
        "\n$ python -m pytest -m gpu\n....s\n1 failed, 40 passed, 3 skipped in 51.20s\n")
    assert headline("test", tmp_path) == "1 failed, 40 passed, 3 skipped"
    assert headline("sanitize", tmp_path) == "0 errors; 0 hazards displayed (0 errors, 0 warnings)"
    assert headline("env", tmp_path) is None


def test_a_baseline_library_is_built_from_another_revision_and_passed_to_the_kernel_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--build-baseline: the revision's own CMake project from a temporary worktree (left behind: none), its CUDA
    library with real kernels for the arch; the kernel step then times it as the baseline candidate."""
    from pipeline.kernels.cuobjdump import kernel_resources

    monkeypatch.setattr(device_check, "BASELINE_DIR", tmp_path / ".device")
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    plan = Plan([s for s in STEPS if s.name == "kernel"], tmp_path / "out", 540.0, arch="86")
    assert not any("--baseline" in plan.argv(c) for c in plan.steps[0].commands)

    library = device_check.build_baseline("HEAD", "86")
    assert library == tmp_path / ".device" / "baseline_sm86.so"
    assert json.loads(library.with_suffix(".json").read_text())["arch"] == "86"
    assert {k.arch for k in kernel_resources(library)} == {"sm_86"}
    assert any(k.name.startswith("windowAttentionHalfKernel") for k in kernel_resources(library))
    assert subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout == worktrees
    for command in plan.steps[0].commands:
        argv = plan.argv(command)
        assert argv[argv.index("--baseline") + 1] == str(library)


def test_a_revision_that_is_no_commit_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_check, "BASELINE_DIR", tmp_path / ".device")
    with pytest.raises(SystemExit, match="'no-such-rev' is no commit of this repository"):
        device_check.build_baseline("no-such-rev", "86")
    assert not (tmp_path / ".device").exists()


def test_kernel_bench_refuses_a_missing_baseline_before_anything_else(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import kernel_bench

    for args, message in ((["--baseline", str(tmp_path / "none.so")], "does not exist: build one with"),
                          (["--candidates", "kernel", "baseline"], "the baseline candidate needs --baseline LIB")):
        assert kernel_bench.main(args) == 2
        assert message in capsys.readouterr().err


def test_a_run_becomes_a_results_folder_with_a_readme_of_what_ran(tmp_path: Path) -> None:
    from benchmarks.environment import device_slug

    out = tmp_path / "out"
    [env_step] = [s for s in STEPS if s.name == "env"]
    steps = [env_step, Step("test", "prints pytest's last line", (_python("print('3 passed, 1 skipped in 0.50s')"),),
                            typical_s=0.1)]
    run_plan(Plan(steps, out, 120.0, arch="90", commit="abc123"))
    target = device_check.file_results(out, tmp_path / "results")
    environment = json.loads((out / "environment.json").read_text())
    summary = DeviceSummary.from_json(json.loads((out / SUMMARY).read_text()))
    assert target.name == f"{summary.started_utc[:10]}-{device_slug(environment)}"
    assert sorted(p.name for p in target.iterdir()) == ["README.md", LOG, "environment.json", SUMMARY]
    readme = (target / "README.md").read_text()
    assert "commit `abc123`, built for sm_90" in readme
    assert "| test | passed |" in readme and "| 3 passed, 1 skipped |" in readme
    assert "-m benchmarks.environment > environment.json" in readme
    assert device_check.file_results(out, tmp_path / "results").name == f"{target.name}_2"  # never replaced


def test_filing_a_folder_that_is_no_run_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"has no summary\.json: give the folder a device run's files came back to"):
        device_check.file_results(tmp_path, tmp_path / "results")
    assert not (tmp_path / "results").exists()


def test_the_test_step_names_every_file_with_gpu_tests() -> None:
    marked = {f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")
              if re.search(r"pytest\.mark\.gpu\b", path.read_text())}
    assert set(device_check.GPU_TEST_FILES) == marked


def test_a_tool_that_is_not_installed_fails_its_step_and_leaves_no_empty_result_file(tmp_path: Path) -> None:
    step = Step("ncu", "a profiler that is not there", (Command(("no-such-profiler-here", "--version"), "ncu.txt"),),
                typical_s=0.1)
    [record] = run_plan(Plan([step], tmp_path, 60.0, arch="90"))
    assert (record.status, record.returncodes) == ("failed", (127,))
    assert not (tmp_path / "ncu.txt").exists()
    assert "No such file or directory: 'no-such-profiler-here'" in (tmp_path / LOG).read_text()
