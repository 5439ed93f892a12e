"""`python -m pipeline engine` (what `make engine` runs): every stage on the CPU path, then reuse."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.common.artifacts import folder_locked
from pipeline.make import EngineRecipe, EngineReport, make_engine
from pipeline.tensorrt import backends

#: TensorRT-RTX ahead of time for SM86, what a machine without a GPU builds with: named, so that these tests build
#: the same way on a GPU machine too (where auto would pick TensorRT, or refuse another card without it).
RTX = ("--backend", "rtx", "--sm", "86")
ARTIFACTS = {"model.onnx", "model.swin.onnx", "surgery.json", "stages.json", "verify.json", "report.json"}


def run_engine(out_dir: Path, plugin: Path, *extra: str) -> dict:
    code = main(["engine", *RTX, "--variant", "T", "--batch", "1,2,2", "--out-dir", str(out_dir), "--plugin",
                 str(plugin), *extra])
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
    assert list(stages) == ["export", "surgery", "check", "precision", "build", "verify"]
    assert stages["check"]["result"]["max_rel_error"] < 1e-5
    assert not any(s["reused"] for s in stages.values())
    assert stages["build"]["result"]["plugin_layers"] == 12
    assert stages["build"]["result"]["precision"] == "fp16"
    verify = json.loads((tmp_path / "verify.json").read_text())
    assert verify["passed"] and verify["outputs"]["logits"]["top1_agreement"] >= 0.99

    again = run_engine(tmp_path, plugin_library, "--precision", "fp16")
    assert all(s["reused"] for s in again["stages"].values())
    # The library call with the same recipe is the same pipeline: every stage is reused, the report is typed.
    from_python = make_engine(EngineRecipe(variant="T", precision="fp16", batch=(1, 2, 2), backend="rtx",
                                           plugin_library=plugin_library), tmp_path)
    assert all(record.reused for record in from_python.stages.values())
    assert from_python.engine == tmp_path / "swin_t_fp16.engine" and from_python.model.weights == "random (seed 0)"
    assert EngineReport.from_json(json.loads((tmp_path / "report.json").read_text())) == from_python

    # A new precision reuses export and surgery only.
    fp32 = run_engine(tmp_path, plugin_library, "--precision", "fp32")
    assert [name for name, s in fp32["stages"].items() if s["reused"]] == ["export", "surgery", "check"]
    assert json.loads((tmp_path / "verify.json").read_text())["outputs"]["logits"]["max_abs"] <= 1e-3


def test_int8_engine(engine_dir: Path, plugin_library: Path) -> None:
    report = run_engine(engine_dir, plugin_library, "--precision", "int8", "--calib-samples", "16")
    assert [name for name, s in report["stages"].items() if s["reused"]] == ["export", "surgery", "check"]
    calibration = report["stages"]["precision"]["result"]["calibration"]
    assert calibration["samples"] == 16
    assert report["stages"]["build"]["result"]["precision"] == "int8"
    assert report["stages"]["precision"]["result"]["images"]["source"] == "generated"
    verify = json.loads((engine_dir / "verify.json").read_text())
    assert verify["passed"] and verify["polygraphy_compare_accuracy_passed"] is True
    assert verify["outputs"]["logits"]["sqnr_db"] >= verify["thresholds"]["sqnr_db_min"] == 25
    assert verify["images"]["source"] == "generated" and len(verify["images"]["files"]) == 32


BACKBONE = ["--features-only", "--img-size", "160x224", "--precision", "fp32"]


def test_backbone_engine_replaces_the_previous_models_artifacts(engine_dir: Path, plugin_library: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A features_only backbone, verified on all four feature maps; the classifier's engines, built from another
    model into the same folder (a BUILD_DIR the user named), are removed rather than left beside the new ones, and
    the log says what was removed and why."""
    assert (engine_dir / "swin_t_int8.engine").exists()
    with caplog.at_level(logging.WARNING, logger="pipeline.make"):
        report = run_engine(engine_dir, plugin_library, *BACKBONE)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "replacing" in r.message]
    assert "held Swin-T classifier 224x224, random (seed 0); replacing it with Swin-T backbone 160x224" in warning
    assert "swin_t_int8.engine" in warning and "BUILD_DIR" in warning
    assert (engine_dir / "swin_t_features_160x224_fp32.engine").is_file()
    assert not any(s["reused"] for s in report["stages"].values())
    assert report["model"]["features_only"] and report["model"]["img_size"] == [160, 224]
    assert report["model"]["checkpoint"] is None and report["model"]["weights"] == "random (seed 0)"
    assert not (engine_dir / "swin_t_int8.engine").exists() and not (engine_dir / "swin_t_fp16.engine").exists()
    verify = json.loads((engine_dir / "verify.json").read_text())
    assert verify["passed"] and verify["model"] == report["model"]
    assert len(verify["outputs"]) == 4 and all(o["max_abs"] <= 1e-3 for o in verify["outputs"].values())
    assert verify["images"]["source"].startswith("generated") and verify["images"]["count"] == 32


def interrupt_engine(out_dir: Path, plugin: Path, stage: str, delay: float, *args: str) -> tuple[int, str]:
    """Run the engine command, and Ctrl-C its process group (as a terminal does) ``delay`` s into ``stage``."""
    command = [sys.executable, "-m", "pipeline", "engine", *RTX, "--variant", "T", "--batch", "1,2,2", "--out-dir",
               str(out_dir), "--plugin", str(plugin), *args]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    assert process.stderr is not None
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.strip() == f"INFO {stage}: running":
            time.sleep(delay)
            os.killpg(process.pid, signal.SIGINT)
            break
    _, rest = process.communicate(timeout=300)
    return process.returncode, "".join(lines) + rest


def test_ctrl_c_in_any_stage_exits_130_and_leaves_no_partial_artifact(engine_dir: Path, plugin_library: Path,
                                                                       tmp_path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (256, 256), (120, 30, 200)).save(tmp_path / "photo.png")
    int8 = [a for a in BACKBONE if a != "fp32"] + ["int8", "--calib-samples", "8"]
    cases = [("build", 1.0, [*BACKBONE, "--opt-level", "2"]), ("verify", 4.0, [*BACKBONE, "--images", str(tmp_path)]),
             ("precision", 4.0, int8), ("export", 3.0, [*BACKBONE[:2], "192x224", *BACKBONE[3:]])]
    for stage, delay, args in cases:
        before = json.loads((engine_dir / "stages.json").read_text())
        code, stderr = interrupt_engine(engine_dir, plugin_library, stage, delay, *args)
        assert code == 130, f"{stage}: {stderr[-3000:]}"
        assert stderr.splitlines()[-1].startswith("interrupted: "), f"{stage}: {stderr[-3000:]}"
        assert "Traceback" not in stderr and "terminate called" not in stderr, f"{stage}: {stderr[-3000:]}"
        assert "BuildCanceled" not in stderr and "ERROR" not in stderr, f"{stage}: {stderr[-3000:]}"
        assert not list(engine_dir.rglob(".*.partial")), stage
        if stage != "export":  # a new model removes the previous one's artifacts before export starts
            assert json.loads((engine_dir / "stages.json").read_text()) == before, stage
            assert (engine_dir / "swin_t_features_160x224_fp32.engine").exists()
            assert (engine_dir / "verify.json").exists()


def test_missing_plugin_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["engine", "--variant", "T", "--out-dir", str(tmp_path), "--plugin", str(tmp_path / "nope.so")])
    assert code == 2
    assert "build it with `make plugin`" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_second_run_into_a_folder_in_use_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")
    out = tmp_path / "swin_t"
    out.mkdir()
    (out / "stages.json").write_text("{}")
    # Another process's run: its lock is on the folder itself, so take it the same way, from another descriptor.
    with folder_locked(out, "test"):
        code = main(["engine", *RTX, "--variant", "T", "--out-dir", str(out), "--plugin", str(plugin)])
    err = capsys.readouterr().err
    assert code == 2 and f"error: {out} is in use by another python -m pipeline engine" in err, err
    assert "running" not in err and [p.name for p in out.iterdir()] == ["stages.json"]
    with folder_locked(out, "test"):  # released: a failed attempt leaves no lock behind
        pass


def test_a_file_system_that_cannot_lock_a_folder_runs_unlocked_with_a_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def nfs_flock(descriptor: int, operation: int) -> None:  # NFS: flock is a write lock, a folder is read-only
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))

    monkeypatch.setattr(fcntl, "flock", nfs_flock)
    with caplog.at_level(logging.WARNING), folder_locked(tmp_path, "make engine"):
        ran = True
    assert ran and f"cannot lock {tmp_path} on this file system (Bad file descriptor)" in caplog.text


def test_auto_on_a_gpu_without_tensorrt_refuses_to_build_for_another_card(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """On an H100 without TensorRT, auto used to build an SM86 TensorRT-RTX engine with an INFO line: an engine for
    some other card, where the H100's user meant to run it on the H100."""
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")
    monkeypatch.setattr(backends, "cuda_device", lambda: backends.CudaDevice("NVIDIA H100 80GB HBM3", 90))
    monkeypatch.setattr(backends.Backend, "is_installed", lambda backend: backend is backends.TENSORRT_RTX)
    assert main(["engine", "--variant", "T", "--out-dir", str(tmp_path / "out"), "--plugin", str(plugin)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: this machine has NVIDIA H100 80GB HBM3 (SM90) but no TensorRT, so the engine would "
                          "be built for SM86 ahead of time and could not run here: install TensorRT"), err
    assert "--backend rtx --sm <its compute capability>" in err and not (tmp_path / "out").exists()
    assert backends.select_backend("rtx", 86) is backends.TENSORRT_RTX  # another card, asked for on purpose
    monkeypatch.setattr(backends, "cuda_device", lambda: backends.CudaDevice("NVIDIA GeForce RTX 3090", 86))
    assert backends.select_backend("auto", 86) is backends.TENSORRT_RTX  # built for the card it runs on


def test_unknown_precision_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["engine", "--variant", "T", "--precision", "int4", "--out-dir", str(tmp_path)])
    assert exit_info.value.code == 2
