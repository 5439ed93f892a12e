"""The incremental stage runner: reuse by fingerprint, and a Ctrl-C that Python swallowed still stops a stage."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.common import progress
from pipeline.common.records import JsonRecord
from pipeline.runner import RECORDS_FILE, StageRecord, StageRunner


@dataclass(frozen=True)
class Chars(JsonRecord):
    chars: int


@dataclass(frozen=True)
class Done(JsonRecord):
    pass


def test_a_stage_runs_once_until_its_inputs_change(tmp_path: Path) -> None:
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("a")
    runs = []

    def stage() -> Chars:
        runs.append(1)
        output.write_text(source.read_text().upper())
        return Chars(len(source.read_text()))

    for _ in range(2):
        assert StageRunner(tmp_path).run("upper", {"mode": 1}, [source], [output], stage) == {"chars": 1}
    assert len(runs) == 1
    source.write_text("ab")
    runner = StageRunner(tmp_path)
    assert runner.run("upper", {"mode": 1}, [source], [output], stage) == {"chars": 2}
    assert len(runs) == 2 and runner.summary["upper"].reused is False
    saved = json.loads((tmp_path / RECORDS_FILE).read_text())["upper"]
    assert StageRecord.from_json(saved) == runner.records["upper"]


class _InterruptedFinalizer:
    """Sends Ctrl-C to this process from __del__, where Python prints "Exception ignored in" and carries on (what
    happened when the signal landed in tqdm's __del__ at the end of a calibration loop)."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed interrupt itself
def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_stage(tmp_path: Path) -> None:
    output = tmp_path / "out.txt"
    # Python's own Ctrl-C handling, also where this runs as a background job (whose SIGINT the shell ignores).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def stage() -> Done:
        _InterruptedFinalizer()  # collected at once: the KeyboardInterrupt is raised, and ignored, in __del__
        output.write_text("done")
        return Done()

    try:
        with pytest.raises(KeyboardInterrupt):
            StageRunner(tmp_path).run("finalized", {}, [], [output], stage)
        assert not (tmp_path / RECORDS_FILE).exists()  # not recorded as done: the next run does it again
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_long_stage_says_how_far_it_is_on_a_terminal_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    def slow() -> Done:
        for step in range(1, 4):
            time.sleep(0.12)
            progress.advance(step, 3, "batches")
        return Done()

    monkeypatch.setattr(progress, "INTERVAL_S", 0.05)
    for terminal in (True, False):
        monkeypatch.setattr(progress, "wants_progress", lambda terminal=terminal: terminal)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pipeline"):
            StageRunner(tmp_path / str(terminal)).run("calibrate", {}, [], [], slow)
        lines = [r.getMessage() for r in caplog.records if r.name == "pipeline"]
        if not terminal:
            assert lines == []  # a log file gets the stage's own 'running' line (pipeline.runner) and no more
            continue
        assert len(lines) >= 4 and all(re.fullmatch(r"calibrate: \d+ s(, [123]/3 batches)?", m) for m in lines)
        assert lines[-1].endswith("3/3 batches") or lines[-1].endswith("2/3 batches")


def test_every_stage_is_a_module_whose_run_takes_the_job_and_returns_a_typed_report() -> None:
    """STAGES names modules, not lambdas: pipeline.stages.<name>.run(job) -> a JsonRecord, for each stage in order."""
    import importlib
    import inspect
    import typing

    from pipeline.make import STAGES
    from pipeline.recipe import STAGE_NAMES, EngineJob

    assert tuple(stage.name for stage in STAGES) == STAGE_NAMES
    for stage in STAGES:
        run = importlib.import_module(f"pipeline.stages.{stage.name}").run
        hints = typing.get_type_hints(run, localns={"EngineJob": EngineJob})
        assert list(inspect.signature(run).parameters) == ["job"] and hints["job"] is EngineJob
        assert issubclass(hints["return"], JsonRecord), stage.name


def test_the_precision_result_keeps_the_shape_report_json_has_always_had() -> None:
    """FP32: its name; FP16: the conversion's own record; INT8: calibration, images and conversion (readers of
    report.json and stages.json depend on these shapes)."""
    from pipeline.stages.precision import Fp16Report, PrecisionReport

    fp16 = Fp16Report(input="a.onnx", output="b.onnx", precision="fp16", initializers_converted=1, casts_inserted=2,
                      fp32_nodes={"LayerNormalization": 3}, qdq_nodes=0)
    assert PrecisionReport("fp32").to_json() == {"precision": "fp32"}
    assert PrecisionReport("fp16", fp16=fp16).to_json() == fp16.to_json()
