"""`python -m pipeline engine` (what `make engine` runs): every stage on the CPU path, then reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli import main

ARTIFACTS = {"model.onnx", "model.swin.onnx", "surgery.json", "stages.json", "verify.json", "report.json"}


def run_engine(out_dir: Path, plugin: Path, *extra: str) -> dict:
    code = main(["engine", "--variant", "T", "--batch", "1,2,2", "--out-dir", str(out_dir), "--plugin", str(plugin),
                 *extra])
    assert code == 0
    return json.loads((out_dir / "report.json").read_text())


@pytest.fixture(scope="module")
def engine_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One output folder for the whole module, so later precisions reuse the export and surgery stages."""
    return tmp_path_factory.mktemp("swin_t")


def test_fp16_engine_then_everything_reused(engine_dir: Path, plugin_library: Path) -> None:
    tmp_path = engine_dir
    report = run_engine(tmp_path, plugin_library, "--precision", "fp16")
    assert ARTIFACTS | {"model.swin.fp16.onnx", "swin_t_fp16.engine", "swin_t_fp16.json"} <= {
        p.name for p in tmp_path.iterdir()}
    stages = report["stages"]
    assert list(stages) == ["export", "surgery", "precision", "build", "verify"]
    assert not any(s["skipped"] for s in stages.values())
    assert stages["build"]["result"]["plugin_layers"] == 12
    assert stages["build"]["result"]["precision"] == "fp16"
    verify = json.loads((tmp_path / "verify.json").read_text())
    assert verify["passed"] and verify["outputs"]["logits"]["top1_agreement"] >= 0.99

    again = run_engine(tmp_path, plugin_library, "--precision", "fp16")
    assert all(s["skipped"] for s in again["stages"].values())

    # A new precision reuses export and surgery only.
    fp32 = run_engine(tmp_path, plugin_library, "--precision", "fp32")
    assert [name for name, s in fp32["stages"].items() if s["skipped"]] == ["export", "surgery"]
    assert json.loads((tmp_path / "verify.json").read_text())["outputs"]["logits"]["max_abs"] <= 1e-3


def test_int8_engine(engine_dir: Path, plugin_library: Path) -> None:
    report = run_engine(engine_dir, plugin_library, "--precision", "int8", "--calib-samples", "16")
    assert [name for name, s in report["stages"].items() if s["skipped"]] == ["export", "surgery"]
    calibration = report["stages"]["precision"]["result"]["calibration"]
    assert calibration["samples"] == 16
    assert report["stages"]["build"]["result"]["precision"] == "int8"
    verify = json.loads((engine_dir / "verify.json").read_text())
    assert verify["passed"] and verify["outputs"]["logits"]["cosine_min"] >= 0.99


def test_missing_plugin_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["engine", "--variant", "T", "--out-dir", str(tmp_path), "--plugin", str(tmp_path / "nope.so")])
    assert code == 2
    assert "build it with `make plugin`" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["engine", "--variant", "T", "--precision", "int4", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
