"""The kernel benchmark's pure parts (rows, bytes moved, peak bandwidth, aggregation) on synthetic timings, and its
PyTorch candidates against the reference on the CPU. The GPU timing itself needs a CUDA device."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import kernel_bench, report
from benchmarks.gpu_load import GpuLoadSampler
from benchmarks.kernel_bench import (
    Shape,
    bench_rows,
    bytes_moved,
    make_candidates,
    network_attention_us,
    peak_bandwidth_gbs,
    per_call_us,
    replays_per_trial,
    stage_shapes,
    summarize_row,
)
from benchmarks.records import KernelBenchRun, KernelRow, KernelStage, KernelVerdict
from pipeline.kernels.reference import window_attention_reference


def by_label() -> dict[str, Shape]:
    return {shape.label: shape for shape in stage_shapes()}


def test_rows_cover_the_issue_shapes() -> None:
    """Swin-T/S/B stages 1-4 (window 7) and B-384/L-384 stages 1-3 (window 12); T and S share their shapes."""
    shapes = by_label()
    assert list(shapes) == [
        *(f"Swin-T s{i}/Swin-S s{i}" for i in range(1, 5)), *(f"Swin-B s{i}" for i in range(1, 5)),
        *(f"Swin-B384 s{i}" for i in range(1, 4)), *(f"Swin-L384 s{i}" for i in range(1, 4))]
    fields = ("resolution", "channels", "heads", "window", "shift")
    assert [getattr(shapes["Swin-T s1/Swin-S s1"], f) for f in fields] == [56, 96, 3, 7, 3]
    assert [getattr(shapes["Swin-T s4/Swin-S s4"], f) for f in fields] == [7, 768, 24, 7, 0]  # one window: no shift
    assert [getattr(shapes["Swin-B384 s1"], f) for f in fields] == [96, 128, 4, 12, 6]
    assert [getattr(shapes["Swin-L384 s3"], f) for f in fields] == [24, 768, 24, 12, 6]
    assert shapes["Swin-T s3/Swin-S s3"].stages == (("T", 3, 6), ("S", 3, 18))
    assert shapes["Swin-B s3"].attributes() == {"height": 14, "width": 14, "window_size": 7, "shift_size": 3,
                                                "num_heads": 16, "scale": 32**-0.5}

    rows = bench_rows(list(shapes.values()), [1, 8, 64], ["fp16", "fp32"])
    assert len(rows) == 14 * 3 * 2
    assert [(r[0].label, r[1], r[2]) for r in rows[:4]] == [
        ("Swin-T s1/Swin-S s1", 1, "fp16"), ("Swin-T s1/Swin-S s1", 8, "fp16"), ("Swin-T s1/Swin-S s1", 64, "fp16"),
        ("Swin-T s2/Swin-S s2", 1, "fp16")]
    assert [s.label for s in stage_shapes({"B384": 3})] == ["Swin-B384 s1", "Swin-B384 s2", "Swin-B384 s3"]


def test_bytes_moved() -> None:
    """qkv + output + rel_bias + qkv_bias, once each: the numbers the H100 run recorded for Swin-T stage 1 FP16."""
    shape = by_label()["Swin-T s1/Swin-S s1"]
    assert bytes_moved(shape, 1, 2) == 2423430  # benchmarks/results/2026-11-25-h100/kernel_bench_fp16.json
    assert bytes_moved(shape, 8, 2) == 19282566
    assert bytes_moved(shape, 1, 4) == 2 * 2423430
    b384 = by_label()["Swin-B384 s1"]
    assert bytes_moved(b384, 2, 2) == (2 * 96 * 96 * 4 * 128 + 4 * 144 * 144 + 3 * 128) * 2


def test_peak_bandwidth() -> None:
    assert peak_bandwidth_gbs("NVIDIA H100 80GB HBM3") == (3350.0, "table")
    assert peak_bandwidth_gbs("NVIDIA H100 PCIe") == (2000.0, "table")
    assert peak_bandwidth_gbs("NVIDIA H200") == (4800.0, "table")
    assert peak_bandwidth_gbs("NVIDIA GH200 480GB") == (4000.0, "table")  # not "H200"'s: the specific name first
    assert peak_bandwidth_gbs("NVIDIA L40S") == (864.0, "table")
    value, source = peak_bandwidth_gbs("Some GPU", memory_clock_khz=1_000_000, bus_width_bits=256)
    assert (value, source) == (64.0, "cudaDeviceProp")  # 2 transfers × 1 GHz × 32 bytes
    value, source = peak_bandwidth_gbs("Some GPU")
    assert math.isnan(value) and source == "unknown"


def test_timing_arithmetic() -> None:
    assert per_call_us([2.0, 4.0], replays=20, calls=10) == [10.0, 20.0]
    with pytest.raises(ValueError):
        per_call_us([1.0], replays=0, calls=10)
    assert replays_per_trial(0.2, min_trial_ms=25, at_least=20) == 125  # 0.2 ms a replay: 125 fill 25 ms
    assert replays_per_trial(5.0, min_trial_ms=25, at_least=20) == 20
    assert replays_per_trial(0.0, min_trial_ms=25, at_least=20) == 20


def test_summarize_row_on_synthetic_timings() -> None:
    shape = by_label()["Swin-T s1/Swin-S s1"]
    timings = {"eager": [400.0, 300.0, 350.0], "kernel": [22.0, 20.0, 21.0], "op": [21.5], "compile": []}
    row = summarize_row(shape, 1, "fp16", timings, peak_gbs=3350.0, errors={"kernel": 1e-3},
                        failures={"sdpa": "OutOfMemoryError: ..."})
    kernel, eager = row.timings["kernel"], row.timings["eager"]
    assert (kernel.us, kernel.us_min, kernel.us_max) == (21.0, 20.0, 22.0)
    assert eager.us == 350.0 and set(row.timings) == {"kernel", "op", "eager"}
    assert row.bytes == 2423430
    assert kernel.gbs == pytest.approx(2423430 / 21e-6 / 1e9)
    assert kernel.fraction_of_peak == pytest.approx(kernel.gbs / 3350.0)
    assert eager.fraction_of_peak == pytest.approx(kernel.fraction_of_peak * 21 / 350)
    assert row.speedups == pytest.approx({"op": 21.5 / 21, "eager": 350 / 21})
    assert row.models == ("Swin-T", "Swin-S") and row.stages[1] == KernelStage("Swin-S", 1, 2)
    assert row.failed == {"sdpa": "OutOfMemoryError: ..."} and row.max_abs_error_vs_eager == {"kernel": 1e-3}
    # The file's keys: one per candidate and statistic, as the committed runs and their readers have them.
    data = row.to_json()
    assert (data["kernel_us"], data["kernel_us_min"], data["kernel_us_max"]) == (21.0, 20.0, 22.0)
    assert data["eager_fraction_of_peak"] == eager.fraction_of_peak and data["speedup_vs_op"] == row.speedups["op"]
    assert "compile_us" not in data and "speedup_vs_compile" not in data and "gpu_load" not in data
    assert data["stages"][1] == {"model": "Swin-S", "stage": 1, "blocks": 2}
    assert KernelRow.from_json(data) == row


def test_network_attention_sums_blocks_times_stage_time() -> None:
    shapes = [s for s in stage_shapes({"T": 4, "S": 4})]
    rows = []
    for i, shape in enumerate(shapes):
        timings = {"kernel": [10.0 * (i + 1)], "eager": [100.0 * (i + 1)]}
        if i != 2:
            timings["sdpa"] = [50.0]  # sdpa missing on stage 3: left out of the totals
        rows.append(summarize_row(shape, 8, "fp16", timings, peak_gbs=1000.0))
    totals = {t.model: t for t in network_attention_us(rows)}
    assert totals["Swin-T"].us == {"kernel": 2 * 10 + 2 * 20 + 6 * 30 + 2 * 40,
                                   "eager": 2 * 100 + 2 * 200 + 6 * 300 + 2 * 400}
    assert totals["Swin-S"].us["kernel"] == 2 * 10 + 2 * 20 + 18 * 30 + 2 * 40
    assert totals["Swin-S"].blocks == 24 and totals["Swin-T"].stages == (1, 2, 3, 4)
    assert (totals["Swin-T"].dtype, totals["Swin-T"].batch) == ("fp16", 8)


@pytest.mark.parametrize("shape", [Shape(14, 64, 2, 7, 3, (("test", 1, 2),)), Shape(7, 96, 3, 7, 0, ())],
                         ids=["shifted", "one-window"])
def test_pytorch_candidates_compute_the_node(shape: Shape) -> None:
    """eager, sdpa and the op (the reference on the CPU) agree with the reference on the benchmark's inputs."""
    assert_candidates_compute_the_node(shape, 2, ["eager", "sdpa", "op"])


def assert_candidates_compute_the_node(shape: Shape, batch: int, names: list[str]) -> None:
    """The candidates ``names`` (on the CPU) against the reference, on the same inputs."""
    generator = torch.Generator().manual_seed(0)
    candidates = make_candidates(None, shape, batch, torch.float32, names, generator, device="cpu")
    generator = torch.Generator().manual_seed(0)  # the same inputs again, for the reference
    qkv = torch.randn(batch, shape.tokens, 3 * shape.channels, generator=generator)
    rel_bias = torch.randn(shape.heads, shape.window**2, shape.window**2, generator=generator)
    qkv_bias = torch.randn(3 * shape.channels, generator=generator)
    expected = window_attention_reference(qkv.numpy(), rel_bias.numpy(), qkv_bias.numpy(), **shape.attributes())
    assert list(candidates) == names
    for name, fn in candidates.items():
        np.testing.assert_allclose(fn().numpy(), expected, rtol=0, atol=1e-5, err_msg=name)


def test_needs_a_gpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("sys.argv", ["kernel_bench"])
    assert kernel_bench.main() == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def _row_at(shape: Shape, batch: int, fraction: float, compile_speedup: float | None,
            peak: float = 3350.0) -> KernelRow:
    """A row whose kernel reaches ``fraction`` of ``peak`` and whose torch.compile takes ``compile_speedup`` × as
    long (None: compile not measured)."""
    kernel_us = bytes_moved(shape, batch, 2) / (fraction * peak * 1e9) * 1e6
    timings = {"kernel": [kernel_us]} | ({"compile": [kernel_us * compile_speedup]} if compile_speedup else {})
    return summarize_row(shape, batch, "fp16", timings, peak)


def test_kernel_goals_select_the_issue_rows_and_judge_them() -> None:
    shapes = by_label()
    rows = [_row_at(shape, batch, 0.7, 3.0) for shape in shapes.values() for batch in (1, 8, 64)]
    # Two rows miss: Swin-B stage 2 at 50% of peak, Swin-T stage 1 only 2x torch.compile.
    rows = [_row_at(shapes["Swin-B s2"], 64, 0.5, 3.0) if (r.shape, r.batch) == ("Swin-B s2", 64) else
            _row_at(shapes["Swin-T s1/Swin-S s1"], 64, 0.7, 2.0) if (r.shape, r.batch) == (
                "Swin-T s1/Swin-S s1", 64) else r for r in rows]
    verdicts = kernel_bench.evaluate_kernel_goals(rows)
    by_goal: dict[str, list[KernelVerdict]] = {}
    for verdict in verdicts:
        by_goal.setdefault(verdict.id, []).append(verdict)
    # Window 7 at batch 64: Swin-T and Swin-B stages 1-3 (T and S share a row), six rows.
    assert sorted(str(v.row) for v in by_goal["bandwidth_w7_b64"]) == sorted(
        [f"Swin-T s{i}/Swin-S s{i}" for i in (1, 2, 3)] + [f"Swin-B s{i}" for i in (1, 2, 3)])
    assert [v.row for v in by_goal["bandwidth_w7_b64"] if not v.met] == ["Swin-B s2"]
    assert [v.row for v in by_goal["vs_compile_w7_b64"] if not v.met] == ["Swin-T s1/Swin-S s1"]
    # Window 12: Swin-B-384 stages 1-3 at batch 8 and 64, not L-384.
    assert sorted((str(v.row), v.batch) for v in by_goal["bandwidth_w12"]) == sorted(
        (f"Swin-B384 s{i}", b) for i in (1, 2, 3) for b in (8, 64))
    assert all(v.value is not None and math.isclose(v.value, 0.7) and v.met for v in by_goal["bandwidth_w12"])
    # Batch 1: every stage shape, judged on kernel µs (these synthetic rows are far under 10 µs).
    assert len(by_goal["latency_b1"]) == len(shapes)
    lines = report.goal_lines(verdicts)
    assert "bandwidth_w7_b64: 5/6 rows met (worst 0.5, target >= 0.6)" in lines


def test_kernel_goals_say_what_was_not_measured() -> None:
    shape = by_label()["Swin-T s1/Swin-S s1"]
    verdicts = kernel_bench.evaluate_kernel_goals([_row_at(shape, 64, 0.7, None)])
    [compile_verdict] = [v for v in verdicts if v.id == "vs_compile_w7_b64"]
    assert compile_verdict.met is None and compile_verdict.reason == "speedup_vs_compile not measured"
    [window_12] = [v for v in verdicts if v.id == "bandwidth_w12"]
    assert window_12.row is None and window_12.met is None and "no fp16 row at batch 8/64" in str(window_12.reason)


def test_triton_candidates_compute_the_node() -> None:
    """Configs of the Triton kernel's tuning space (the interpreter on the CPU) on the benchmark's inputs."""
    assert kernel_bench.expand_candidates(["kernel", "triton-jit"]) == ["kernel", *kernel_bench.TRITON_JIT]
    assert_candidates_compute_the_node(Shape(7, 32, 2, 7, 3, (("test", 1, 2),)), 1, list(kernel_bench.TRITON_JIT)[:2])


def test_a_run_record_carries_its_rows_goals_and_totals_and_reads_back(tmp_path) -> None:
    """What main writes after every row (its GPU parts aside): the rows, their goals and network totals, the GPU
    load (here: why there is none), in a file that loads as KernelBenchRun again."""
    args = kernel_bench.build_parser().parse_args(["--baseline", str(tmp_path / "old.so"), "--calls", "4"])
    shape = by_label()["Swin-T s1/Swin-S s1"]
    run = kernel_bench.KernelRun(args, ["kernel", "compile"], {}, {"collected_at": "2026-12-01T00:00:00+00:00"},
                                 GpuLoadSampler(executable=None))
    run.rows.append(_row_at(shape, 64, 0.7, 3.0))
    record = run.record(True, [{"library": "kernel", "registers": 128}])
    assert record.config.calls_per_graph == 4 and record.config.baseline == str(tmp_path / "old.so")
    assert [v.met for v in record.goals if v.row is not None] == [True, True]
    assert {t.model for t in record.network_attention_us} == {"Swin-T", "Swin-S"}
    assert record.gpu_load is not None and "nvidia-smi not found" in str(record.gpu_load.reason)
    data = json.loads(json.dumps(record.to_json()))
    assert KernelBenchRun.current_format(data) and KernelBenchRun.from_json(data) == record
