"""The command line: the composed onnx stage, and actionable errors with a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=600)


def test_onnx_stage_writes_all_artifacts(tmp_path: Path) -> None:
    assert main(["onnx", "--variant", "T", "--max-batch", "2", "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.swin.onnx", "surgery.json"]
    report = json.loads((tmp_path / "surgery.json").read_text())
    assert report["blocks_replaced"] == 12
    check = run_cli("check", str(tmp_path / "model.onnx"), str(tmp_path / "model.swin.onnx"), "--batch", "2")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["passed"] is True


@pytest.mark.parametrize(("args", "message"), [
    (["export", "--variant", "Q", "--out", "x.onnx"], "unknown Swin variant 'Q'"),
    (["export", "--checkpoint", "missing.pth", "--out", "x.onnx"], "checkpoint missing.pth does not exist"),
    (["surgery", "missing.onnx", "out.onnx"], "ONNX file missing.onnx does not exist"),
    (["check", "missing.onnx", "other.onnx"], "missing.onnx"),
    (["export", "--img-size", "big", "--out", "x.onnx"], "expected an image size like 224 or 256x320"),
    (["build", "missing.onnx", "x.engine", "--plugin", "missing.so"], "build it with `make plugin`"),
    (["check-engine", "missing.engine"], "engine missing.engine does not exist"),
    (["quantize", "missing.onnx", "out.onnx"], "ONNX file missing.onnx does not exist"),
    (["engine", "--batch", "8,1", "--out-dir", "."], "expected min[,opt],max in increasing order"),
])
def test_bad_input_gives_message_and_exit_code(tmp_path: Path, args: list[str], message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=tmp_path,
                            timeout=300)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "out.onnx").exists()


def test_surgery_on_a_graph_without_swin_blocks(tmp_path: Path) -> None:
    import onnx

    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "relu", [onnx.helper.make_tensor_value_info("x", 1, [1, 4])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1, 4])])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "relu.onnx"))
    result = run_cli("surgery", str(tmp_path / "relu.onnx"), str(tmp_path / "out.onnx"))
    assert result.returncode == 2
    assert "contains no Swin window-attention blocks" in result.stderr
