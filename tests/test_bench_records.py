"""The committed result files under benchmarks/results/ load as the benchmarks' typed records and write back what
they hold, so renaming a field never strands a committed run; and the records' JSON options (renamed, omitted,
flattened keys) on a synthetic record."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from typing import Any

import pytest

from benchmarks.records import BatchResult, BenchRun, GpuLoad, KernelBenchRun, Measured, RouteRecord
from benchmarks.report import RESULTS_DIR, ROOT
from benchmarks.stats import summarize
from pipeline.serving.triton_load import LoadReport

#: Committed JSON that no tool of the project reads back, by the prefix of its path under benchmarks/results/:
#: the first GPU run's raw files (their folder's README: the kernel benchmark's format before goals, and ad-hoc
#: whole-network scripts) and the INT8 studies' measurement notes (benchmarks/int8_*.py write them for reading).
NOT_READ_BACK = ("2026-11-25-h100/kernel_bench", "2026-11-25-h100/whole_network", "int8_accuracy_",
                 "int8_thresholds_")


def holds(written: Any, original: Any) -> bool:
    """Whether ``written`` has every key of ``original`` with the same value (it may add keys older files lack)."""
    if isinstance(original, dict):
        return isinstance(written, dict) and all(k in written and holds(written[k], v) for k, v in original.items())
    if isinstance(original, list):
        return isinstance(written, list) and len(written) == len(original) and all(map(holds, written, original))
    return written == original


def committed_json() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the repository's checkout")
    listed = subprocess.run(["git", "ls-files", "*.json"], cwd=RESULTS_DIR, capture_output=True, text=True,
                            check=True).stdout.split()
    return sorted(listed)


def test_every_committed_result_loads_as_its_record_and_writes_back_what_it_holds():
    loaded = []
    for name in committed_json():
        data = json.loads((RESULTS_DIR / name).read_text())
        if name.rsplit("/", 1)[-1].startswith("bench_"):
            record: BenchRun | KernelBenchRun | LoadReport = BenchRun.from_json(data)
        elif name.rsplit("/", 1)[-1].startswith("kernel_bench") and KernelBenchRun.current_format(data):
            record = KernelBenchRun.from_json(data)
        elif name.startswith("triton_load_"):
            record = LoadReport.from_json(data)
        else:
            assert name.startswith(NOT_READ_BACK), f"{name}: which record reads it? (else add it to NOT_READ_BACK)"
            continue
        written = record.to_json()
        assert holds(written, data), name
        assert type(record).from_json(json.loads(json.dumps(written))) == record, name
        loaded.append(name)
    assert {"bench_t_cpu-amd-epyc-2c_2026-11-25.json", "bench_t_h100-80gb-hbm3_2026-11-25.json",
            "triton_load_swin_t_python-route_cpu-amd-epyc-2c_2026-12-05.json"} <= set(loaded)


def test_routes_are_paths_in_the_file_and_absent_keys_stay_absent():
    measured = Measured(**vars(summarize([2.0, 4.0], 2)), stopped_by="iterations", elapsed_s=0.5, memory_mb=None)
    route = RouteRecord(name="onnxruntime-cpu", precision="fp32", device="cpu", status="measured",
                        results=(BatchResult(1, "skipped", reason="too large"), BatchResult(2, "measured",
                                                                                           measured=measured)))
    skipped, timed = route.to_json()["results"]
    assert skipped == {"batch": 1, "status": "skipped", "reason": "too large"}  # no statistics, no gpu_load
    # The statistics sit in the batch's own object, as the files have them, memory_mb null included.
    assert timed == {"batch": 2, "status": "measured", "iterations": 2, "mean_ms": 3.0, "std_ms": 1.0, "min_ms": 2.0,
                     "max_ms": 4.0, "p50_ms": 3.0, "p90_ms": 3.8, "p95_ms": 3.9, "p99_ms": 3.98,
                     "throughput_img_s": pytest.approx(2000 / 3), "stopped_by": "iterations", "elapsed_s": 0.5,
                     "memory_mb": None}
    assert RouteRecord.from_json(route.to_json()) == route
    loaded = dataclasses.replace(route, gpu_load=GpuLoad(0, reason="nvidia-smi not found"))
    assert loaded.to_json()["gpu_load"] == {"samples": 0, "reason": "nvidia-smi not found"}
    run = BenchRun.from_json(json.loads((RESULTS_DIR / "bench_t_cpu-amd-epyc-2c_2026-11-25.json").read_text()))
    assert [(r.label, r.status) for r in run.routes if r.measured_results()][:2] == [
        ("torch-eager-cpu fp32", "measured"), ("torch-compile-cpu fp32", "measured")]
    written = dataclasses.replace(run, settings=dataclasses.replace(run.settings, cpu_routes=True)).to_json()
    assert written["paths"][0]["name"] == "tensorrt-plugin" and "routes" not in written
    assert written["settings"]["cpu_paths"] is True and "cpu_routes" not in written["settings"]
