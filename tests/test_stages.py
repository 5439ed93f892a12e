"""The incremental stage runner: reuse by fingerprint, and a Ctrl-C that Python swallowed still stops a stage."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from pipeline.stages import RECORDS_FILE, StageRecord, StageRunner


def test_a_stage_runs_once_until_its_inputs_change(tmp_path: Path) -> None:
    source, output = tmp_path / "in.txt", tmp_path / "out.txt"
    source.write_text("a")
    runs = []

    def stage() -> dict:
        runs.append(1)
        output.write_text(source.read_text().upper())
        return {"chars": len(source.read_text())}

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

    def stage() -> dict:
        _InterruptedFinalizer()  # collected at once: the KeyboardInterrupt is raised, and ignored, in __del__
        output.write_text("done")
        return {}

    try:
        with pytest.raises(KeyboardInterrupt):
            StageRunner(tmp_path).run("finalized", {}, [], [output], stage)
        assert not (tmp_path / RECORDS_FILE).exists()  # not recorded as done: the next run does it again
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
