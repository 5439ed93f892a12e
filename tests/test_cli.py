"""The command line: the composed onnx stage, and actionable errors with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.make import EngineFiles, EngineRecipe

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=600)


def test_onnx_stage_writes_all_artifacts(tmp_path: Path) -> None:
    assert main(["onnx", "--variant", "T", "--max-batch", "2", "--out-dir", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.swin.onnx", "report.json",
                                                         "stages.json", "surgery.json"]
    assert json.loads((tmp_path / "surgery.json").read_text())["blocks_replaced"] == 12
    stages = json.loads((tmp_path / "report.json").read_text())["stages"]
    assert list(stages) == ["export", "surgery", "check"] and stages["check"]["result"]["batches"] == [1, 2]
    assert stages["check"]["result"]["max_rel_error"] < 1e-5
    assert main(["onnx", "--variant", "T", "--max-batch", "2", "--out-dir", str(tmp_path)]) == 0  # all reused
    assert all(s["reused"] for s in json.loads((tmp_path / "report.json").read_text())["stages"].values())
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
    (["engine", "--img-size", "-1x-1"], "argument --img-size: expected an image size of positive sides like 224 or "
                                        "256x320, got '-1x-1'"),
    (["engine", "--batch", "-1,8,32"], "argument --batch: batch sizes must be >= 1, got '-1,8,32'"),
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


def test_usage_errors_are_one_line_with_a_pointer_to_help() -> None:
    result = run_cli("engine", "--variant", "T", "--no-such-flag", "--out-dir", "x")
    assert (result.returncode, result.stderr) == (
        2, "error: unrecognized arguments: --no-such-flag (see `python -m pipeline --help`)\n")
    result = run_cli("engine", "--precision", "int4", "--out-dir", "x")
    assert (result.returncode, result.stderr) == (
        2, "error: argument --precision: invalid choice: 'int4' (choose from 'fp32', 'fp16', 'int8') "
           "(see `python -m pipeline engine --help`)\n")


@pytest.mark.parametrize(("args", "message"), [
    (["--sm", "87"], "an engine for Jetson Orin is built on that GPU with TensorRT: on the Jetson, TensorRT comes "
                     "with JetPack"),
    (["--sm", "90"], "an engine for Hopper (H100/H200) is built on that GPU with TensorRT"),
    (["--backend", "tensorrt"], "backend 'tensorrt' needs the tensorrt Python package and a CUDA GPU"),
    (["--variant", "Q"], "unknown Swin variant 'Q'"),
    (["--checkpoint", "missing.pth"], "checkpoint missing.pth does not exist"),
    (["--calib-dir", "no-photos"], "image folder no-photos does not exist"),
    (["--images", "no-photos"], "image folder no-photos does not exist"),
    (["--attention", "nope"], "argument --attention: invalid choice: 'nope' (choose from 'plugin', 'tensorrt')"),
    (["--attention", "tensorrt", "--precision", "fp32"], "--attention tensorrt cannot build FP32"),
    (["--attention", "tensorrt", "--embed-plugin"], "--attention tensorrt has no plugin library to embed"),
])
def test_engine_rejects_bad_input_before_any_stage(tmp_path: Path, args: list[str], message: str) -> None:
    """Checked by EngineRecipe.validate: nothing is exported (no 'running' stage) and no folder is created."""
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")  # only its existence is checked before the build
    # --backend rtx: what a machine without a GPU builds with, named so that a GPU machine validates the same way.
    result = subprocess.run([sys.executable, "-m", "pipeline", "engine", "--out-dir", "out", "--plugin", str(plugin),
                             "--backend", "rtx", *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_unusable_checkpoints_are_one_line_before_any_stage_and_never_advise_an_unsafe_load(tmp_path: Path) -> None:
    """A file of another kind, a pickle that would run code or that torch.save did not write, a checkpoint of another
    variant: each named by validation from the file's header, pickle and shapes, before the export stage."""
    import argparse
    import pickle

    import torch
    from conftest import save_shaped_checkpoint

    (tmp_path / "random.pth").write_bytes(np_random_bytes(4096))
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "training.pth")
    (tmp_path / "tensors.pkl").write_bytes(pickle.dumps({"a": torch.zeros(2)}))
    save_shaped_checkpoint("S", tmp_path / "swin_s.pth")
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")
    for name, message in (("random.pth", "it is not a torch checkpoint or a .safetensors file"),
                          ("training.pth", "refused, loading it would run code (it imports argparse.Namespace)"),
                          ("tensors.pkl", "it is a plain pickle (pickle.dump), not torch.save's format"),
                          ("swin_s.pth", "holds Swin-S weights (embed 96, depths 2-2-18-2, heads 3-6-12-24, window 7), "
                                         "not Swin-T's; pass VARIANT=S (--variant S) or a Swin-T checkpoint")):
        result = subprocess.run([sys.executable, "-m", "pipeline", "engine", "--out-dir", "out", "--checkpoint", name,
                                 "--variant", "T", "--plugin", str(plugin), "--backend", "rtx"], capture_output=True,
                                text=True, cwd=tmp_path, timeout=300)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and message in result.stderr
        assert "export: running" not in result.stderr and "weights_only" not in result.stderr
        assert not (tmp_path / "out").exists()  # no stage ran, no empty folder is left


def np_random_bytes(count: int) -> bytes:
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, count, dtype=np.uint8).tobytes()


def test_an_error_that_a_ctrl_c_started_counts_as_the_interrupt(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """torch.onnx's exporter, interrupted inside a lazy import, fails on the half-imported module and wraps that."""

    def export_interrupted_in_an_import(args: object) -> None:
        error = AttributeError("module 'torch._dynamo' has no attribute 'exc'")
        error.__context__ = KeyboardInterrupt()  # raised while the except clause looked up torch._dynamo.exc
        raise RuntimeError("Failed to export the model with torch.export") from error

    monkeypatch.setattr("pipeline.cli._cmd_fp16", export_interrupted_in_an_import)
    assert main(["fp16", "in.onnx", "out.onnx"]) == 130
    assert capsys.readouterr().err == "interrupted: no partial artifact was left behind\n"
    monkeypatch.setattr("pipeline.cli._cmd_fp16", lambda args: {}["a bug"])
    with pytest.raises(KeyError):
        main(["fp16", "in.onnx", "out.onnx"])


def test_an_os_error_mid_run_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def disk_full(args: object) -> None:
        raise OSError(28, "No space left on device", "build/swin_t/model.swin.fp16.onnx")

    monkeypatch.setattr("pipeline.cli._cmd_fp16", disk_full)
    assert main(["fp16", "in.onnx", "out.onnx"]) == 2
    assert capsys.readouterr().err == (
        "error: [Errno 28] No space left on device: 'build/swin_t/model.swin.fp16.onnx'; check that path, its "
        "permissions and the free disk space (-v shows the traceback)\n")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder nobody can write to")
def test_an_output_path_that_cannot_be_written_fails_before_any_work(tmp_path: Path) -> None:
    """Each command that writes checks its output path first: not minutes later, when the artifact is ready."""
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    onnx_in = tmp_path / "in.onnx"  # never read: the output is checked first
    cases = {
        ("engine", "--backend", "rtx", "--variant", "T", "--plugin", str(plugin), "--out-dir", str(a_file)):
            f"cannot write {a_file}: it exists and is not a folder",
        ("onnx", "--variant", "T", "--out-dir", str(a_file / "sub")):
            f"cannot write {a_file / 'sub'}: {a_file} is a file, not a folder",
        ("export", "--variant", "T", "--out", "/proc/swin.onnx"): "cannot write /proc/swin.onnx: /proc does not take",
        ("surgery", str(onnx_in), str(a_file / "out.onnx")): f"{a_file} is a file, not a folder",
        ("fp16", str(onnx_in), "/proc/out.onnx"): "/proc does not take new files",
        ("quantize", str(onnx_in), "/proc/out.onnx"): "/proc does not take new files",
        ("build", str(onnx_in), "/proc/x.engine", "--plugin", str(plugin), "--backend", "rtx"):
            "/proc does not take new files",
    }
    for argv, message in cases.items():
        result = subprocess.run([sys.executable, "-m", "pipeline", *argv], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], (argv, result.stderr)
        assert "Traceback" not in result.stderr and "running" not in result.stderr, (argv, result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "plugin.so"]


def test_engine_validation_does_not_wait_for_torch(tmp_path: Path) -> None:
    """Bad input must fail in about a second: checking a recipe does not import torch (1.5 s alone on 2 cores)."""
    plugin = tmp_path / "plugin.so"
    plugin.write_bytes(b"")
    script = ("import sys\nfrom pipeline.make import EngineRecipe\nfrom pipeline.common.errors import PipelineError\n"
              f"try:\n    EngineRecipe(sm=90, plugin_library={str(plugin)!r}).validate()\n"
              "except PipelineError:\n    pass\nelse:\n    raise SystemExit('SM90 was accepted')\n"
              "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout) == (0, "False\n"), result.stderr


@pytest.mark.parametrize(("recipe", "folder", "engine"), [
    (EngineRecipe(), "build/swin_t", "swin_t_fp16.engine"),
    (EngineRecipe(features_only=True, img_size=(800, 1333)), "build/swin_t_features_800x1333",
     "swin_t_features_800x1333_fp16.engine"),
    (EngineRecipe(img_size=(384, 384)), "build/swin_t_384x384", "swin_t_384x384_fp16.engine"),
    (EngineRecipe(variant="B384", img_size=(384, 384)), "build/swin_b384", "swin_b384_fp16.engine"),
    (EngineRecipe(attention="tensorrt"), "build/swin_t_trtattn", "swin_t_fp16.engine"),
])
def test_each_model_has_its_own_default_folder_and_engine_name(recipe: EngineRecipe, folder: str,
                                                               engine: str) -> None:
    """The README's classifier and backbone commands, in any order, keep each other's files."""
    assert recipe.default_out_dir == Path(folder)
    assert EngineFiles(recipe.default_out_dir, recipe.model_tag, recipe.precision).engine.name == engine


def test_make_passes_the_model_and_lets_the_pipeline_name_the_folder() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    dry = subprocess.run([make, "-n", "engine", "FEATURES=1", "IMG_SIZE=800x1333",
                          "PY=python"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    [command] = [line for line in dry.splitlines() if "-m pipeline engine" in line]
    assert "--features-only --img-size 800x1333" in command and "--out-dir" not in command
    named = subprocess.run([make, "-n", "engine", "BUILD_DIR=out/x", "PY=python"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout
    assert "--out-dir out/x" in named
