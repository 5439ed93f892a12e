"""The build stage against TensorRT-RTX for real (ahead of time for SM86, no GPU needed): the surgered Swin-T
builds in FP32 and FP16 with all 12 plugin layers bound, the metadata describes it, the timing cache persists,
bad input fails with our error and leaves no partial engine, and ``check_engine_compatible`` refuses engines
built for another backend, version, GPU or plugin library."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from plugin_build import TEST_CUDA_ARCH, triton_images_for

from pipeline.cli import main
from pipeline.common.artifacts import file_sha256, partial_files
from pipeline.common.errors import PipelineError
from pipeline.kernels.cmake import ROOT
from pipeline.kernels.reference import PLUGIN_OP
from pipeline.serving.triton import write_model_repository
from pipeline.stages.precision import convert_fp16
from pipeline.tensorrt.backends import cuda_device
from pipeline.tensorrt.build import CANCEL_GRACE_S, build_engine, stop_child
from pipeline.tensorrt.load import check_engine_compatible, engine_plugin_library
from pipeline.tensorrt.metadata import (
    BatchProfile,
    BuiltWith,
    EngineMetadata,
    OnnxSource,
    PluginLibrary,
    Runtime,
    Target,
    TensorSpec,
)

trt = pytest.importorskip("tensorrt_rtx_bindings", reason="TensorRT-RTX is not installed (pip install -e '.[rtx]')")

BATCH = (1, 2, 4)  # swin_t_onnx is exported with a batch of at most 4


def no_partial_files(folder: Path) -> bool:
    return not list(folder.glob(".*.partial"))


@pytest.fixture(scope="module")
def fp32_engine(swin_t_onnx, plugin_library, tmp_path_factory) -> tuple[Path, EngineMetadata]:
    folder = tmp_path_factory.mktemp("engine")
    engine = folder / "model.swin.engine"
    metadata = build_engine(swin_t_onnx[1], engine, plugin_library=plugin_library, batch=BATCH, backend="rtx",
                            sm=86, timing_cache=folder / "timing.cache")
    return engine, metadata


def test_fp32_engine_and_metadata(fp32_engine, swin_t_onnx, plugin_library):
    engine, metadata = fp32_engine
    _, swin_path, surgery = swin_t_onnx
    nodes = [node.name for node in onnx.load(swin_path, load_external_data=False).graph.node
             if node.op_type == PLUGIN_OP]
    assert len(nodes) == surgery.blocks_replaced == 12
    written = json.loads(engine.with_suffix(".json").read_text())
    assert written == metadata.to_json() and EngineMetadata.from_json(written) == metadata
    assert metadata.engine == "model.swin.engine"
    assert metadata.backend == BuiltWith("tensorrt_rtx", trt.__version__)
    assert metadata.target == Target(sm=86, gpu=None, ahead_of_time=True)
    assert metadata.precision == "fp32"
    assert metadata.plugin_layers == 12
    assert sorted(metadata.plugin_layer_names) == sorted(nodes)
    assert metadata.layers > 12
    assert metadata.onnx == OnnxSource(str(swin_path.resolve()), file_sha256(swin_path))
    assert metadata.plugin == PluginLibrary(str(plugin_library.resolve()), file_sha256(plugin_library), False)
    assert metadata.attention == "plugin"
    assert metadata.inputs == (TensorSpec("images", "float32", (-1, 3, 224, 224)),)
    assert metadata.outputs == (TensorSpec("logits", "float32", (-1, 1000)),)
    assert metadata.profile == BatchProfile("images", (1, 3, 224, 224), (2, 3, 224, 224), (4, 3, 224, 224))
    assert metadata.builder_optimization_level == 3 and metadata.profiling_verbosity == "default"
    assert metadata.engine_bytes == engine.stat().st_size > 50_000_000
    assert metadata.engine_sha256 == file_sha256(engine)
    assert 0 < metadata.parse_seconds < metadata.build_seconds
    # The file format users ship: these keys, in this order (a later version may add keys, never drop one).
    assert list(written) == ["engine", "precision", "onnx", "plugin", "backend", "target", "inputs", "outputs",
                             "profile", "builder_optimization_level", "profiling_verbosity", "timing_cache", "layers",
                             "plugin_layers", "plugin_layer_names", "parse_seconds", "build_seconds", "engine_bytes",
                             "engine_sha256", "built_at", "attention"]
    assert written["inputs"] == [{"name": "images", "dtype": "float32", "shape": [-1, 3, 224, 224]}]
    assert no_partial_files(engine.parent)


def test_rtx_neither_reads_nor_writes_a_timing_cache(fp32_engine):
    # TensorRT-RTX ignores timing caches (no-op API since 1.2) and warns on loading one: no file, no record.
    engine, metadata = fp32_engine
    assert metadata.timing_cache is None
    assert not list(engine.parent.glob("timing.cache*"))


def test_fp16_engine_binds_every_block(swin_t_onnx, plugin_library, tmp_path):
    fp16_path = tmp_path / "model.swin.fp16.onnx"
    convert_fp16(swin_t_onnx[1], fp16_path)
    metadata = build_engine(fp16_path, tmp_path / "fp16.engine", plugin_library=plugin_library, batch=BATCH,
                            backend="rtx", sm=89, embed_plugin=True, detailed_profile=True)
    assert metadata.precision == "fp16"
    assert metadata.plugin_layers == 12
    assert metadata.inputs[0].dtype == "float32"  # convert_fp16 keeps FP32 I/O with Casts at the boundary
    assert metadata.plugin.embedded is True
    assert metadata.target == Target(sm=89, gpu=None, ahead_of_time=True)
    assert metadata.profiling_verbosity == "detailed" and metadata.timing_cache is None
    engine = (tmp_path / "fp16.engine").read_bytes()
    assert plugin_library.read_bytes() in engine  # plugins_to_serialize
    images = triton_images_for(TEST_CUDA_ARCH)  # so the Triton kernel's images travel inside the engine too
    assert images and all(Path(image).read_bytes() in engine for image in images)


def test_missing_plugin_library_says_make_plugin(swin_t_onnx, tmp_path):
    with pytest.raises(PipelineError, match=r"plugin library .*missing\.so does not exist; build it with `make plugin"):
        build_engine(swin_t_onnx[1], tmp_path / "m.engine", plugin_library=tmp_path / "missing.so", backend="rtx")


def test_corrupt_onnx_is_our_error(plugin_library, tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(PipelineError, match=r"cannot read .*corrupt.onnx as ONNX"):
        build_engine(corrupt, tmp_path / "corrupt.engine", plugin_library=plugin_library, backend="rtx")
    assert not (tmp_path / "corrupt.engine").exists() and no_partial_files(tmp_path)


def test_parser_errors_are_listed_and_no_engine_is_left(plugin_library, tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["images"], ["hidden"], name="relu"),
         helper.make_node("NoSuchOp", ["hidden"], ["logits"], name="mystery_node")],
        "unsupported", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, 8, 8])])
    path = tmp_path / "unsupported.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(PipelineError, match=r"(?s)ONNX parser rejected .*unsupported.onnx.*NoSuchOp"):
        build_engine(path, tmp_path / "unsupported.engine", plugin_library=plugin_library, backend="rtx")
    assert not (tmp_path / "unsupported.engine").exists() and not (tmp_path / "unsupported.json").exists()
    assert no_partial_files(tmp_path)


def test_ctrl_c_mid_build_leaves_no_engine(swin_t_onnx, plugin_library, tmp_path):
    engine = tmp_path / "interrupted.engine"
    script = textwrap.dedent(f"""
        import logging
        from pipeline.tensorrt.build import build_engine
        logging.basicConfig(level=logging.INFO)
        build_engine({str(swin_t_onnx[1])!r}, {str(engine)!r}, plugin_library={str(plugin_library)!r},
                     batch={BATCH}, backend="rtx")
    """)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # its own process group, as a terminal's Ctrl-C sees it
    lines: list[str] = []
    building = threading.Event()

    def read_stderr() -> None:
        for line in process.stderr:
            lines.append(line)
            if "building" in line:
                building.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert building.wait(timeout=300), "".join(lines)
        os.killpg(process.pid, signal.SIGINT)
        # Bounded: a build that ignores the cancel is killed after CANCEL_GRACE_S, so this never waits forever.
        assert process.wait(timeout=CANCEL_GRACE_S + 60) != 0, "".join(lines)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    reader.join(timeout=10)
    assert "KeyboardInterrupt" in "".join(lines)
    assert not engine.exists() and not engine.with_suffix(".json").exists()
    assert no_partial_files(tmp_path)


def test_a_build_child_that_ignores_ctrl_c_is_killed_and_its_partial_files_removed(tmp_path):
    """What bounds every Ctrl-C of a TensorRT-RTX build: the child gets the SIGINT and ``grace_s`` to end."""
    partial = tmp_path / ".model.engine.abc123.partial"
    child_code = "import signal, time; signal.signal(signal.SIGINT, {}); print(flush=True); time.sleep(60)"
    for handler, killed in (("signal.SIG_IGN", True), ("signal.default_int_handler", False)):
        code = child_code.format(handler)
        partial.write_bytes(b"half an engine")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        child.stdout.readline()  # its handler is installed
        start = time.monotonic()
        stop_child(child, partial_files=lambda: partial_files(tmp_path / "model.engine"), grace_s=2)
        assert time.monotonic() - start < 30
        assert child.returncode == (-signal.SIGKILL if killed else -signal.SIGINT)
        assert partial.exists() is not killed  # a child that ends by itself removes its own files
        child.stdout.close()


def copy_engine(engine: Path, folder: Path) -> Path:
    for path in (engine, engine.with_suffix(".json")):
        shutil.copy(path, folder / path.name)
    return folder / engine.name


def test_check_engine_compatible(fp32_engine):
    engine, _ = fp32_engine
    version = trt.__version__
    same = Runtime("tensorrt_rtx", version, 86, "NVIDIA RTX A6000")
    check = check_engine_compatible(engine, [same])
    assert check.runtime == same and check.metadata == EngineMetadata.read(engine)
    assert check.to_json()["runtime"] == {"backend": "tensorrt_rtx", "version": version, "sm": 86,
                                          "gpu": "NVIDIA RTX A6000"}
    assert check_engine_compatible(engine, []).runtime is None  # no TensorRT here: only the files are checked
    rejected = {
        "built with tensorrt_rtx .* but this machine has tensorrt 10.14.1": Runtime("tensorrt", "10.14.1", 86, "A10"),
        "but this machine runs 1.6.0.0; engines do not cross versions": Runtime("tensorrt_rtx", "1.6.0.0", 86, None),
        r"built for SM86 but this GPU is NVIDIA GeForce RTX 4090 \(SM89\).* --sm 89":
            Runtime("tensorrt_rtx", version, 89, "NVIDIA GeForce RTX 4090"),
    }
    for message, runtime in rejected.items():
        with pytest.raises(PipelineError, match=message):
            check_engine_compatible(engine, [runtime])


def test_check_engine_compatible_refuses_changed_plugin_and_missing_metadata(fp32_engine, plugin_library,
                                                                             tmp_path):
    engine = copy_engine(fp32_engine[0], tmp_path)
    library = shutil.copy(plugin_library, tmp_path / "plugin.so")
    metadata = json.loads(engine.with_suffix(".json").read_text())
    metadata["plugin"]["library"] = str(library)
    engine.with_suffix(".json").write_text(json.dumps(metadata))
    check_engine_compatible(engine, [])
    with open(library, "ab") as f:
        f.write(b"\0")
    with pytest.raises(PipelineError, match=r"plugin library .*plugin.so changed since .* was built with"):
        check_engine_compatible(engine, [])
    engine.with_suffix(".json").unlink()
    with pytest.raises(PipelineError, match=r"model.swin.json is missing: it records what"):
        check_engine_compatible(engine, [])


def test_an_engine_shipped_with_its_plugin_library_finds_it_beside_itself(fp32_engine, plugin_library, tmp_path,
                                                                          capsys):
    """Copied to another machine (or moved with its folder), the engine's metadata still names the build machine's
    library path: the same file name beside the engine, or a path given, is used when the SHA-256 matches."""
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    engine = copy_engine(fp32_engine[0], shipped)
    metadata = json.loads(engine.with_suffix(".json").read_text())
    metadata["plugin"]["library"] = "/build-machine/swin-trt/build/plugin/" + plugin_library.name
    engine.with_suffix(".json").write_text(json.dumps(metadata))
    with pytest.raises(PipelineError, match=rf"needs is missing, nor is {plugin_library.name} beside it; pass where"):
        check_engine_compatible(engine, [])
    shipped_metadata = EngineMetadata.read(engine)
    elsewhere = shutil.copy(plugin_library, tmp_path / "libelsewhere.so")
    assert engine_plugin_library(engine, shipped_metadata, elsewhere) == elsewhere
    assert main(["check-engine", str(engine), "--plugin", str(elsewhere)]) == 0
    verdict = capsys.readouterr().out.splitlines()  # a verdict and the facts behind it, not the metadata's JSON
    device = cuda_device()  # TensorRT-RTX is installed here; a GPU decides whether it can run the engine
    assert verdict[0] == (f"model.swin.engine: OK: tensorrt_rtx {trt.__version__} on {device.name} can run it" if device
                          else f"model.swin.engine: files OK and tensorrt_rtx {trt.__version__} here is what built it, "
                               "but there is no GPU here to run it on")
    assert len(verdict) == 5 and "libelsewhere.so (sha256 matches)" in verdict[3]
    assert main(["check-engine", str(engine), "--plugin", str(elsewhere), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plugin_library"] == str(elsewhere)
    beside = shutil.copy(plugin_library, shipped / plugin_library.name)
    assert engine_plugin_library(engine, shipped_metadata) == beside
    check_engine_compatible(engine, [])
    write_model_repository([engine], tmp_path / "triton", model_name="swin_t")
    assert (tmp_path / "triton" / "swin_t" / plugin_library.name).read_bytes() == plugin_library.read_bytes()
    Path(elsewhere).write_bytes(b"another library")
    with pytest.raises(PipelineError, match=r"libelsewhere.so is not the one .* was built with .*pass the one"):
        check_engine_compatible(engine, [], plugin_library=elsewhere)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m.pop("engine_sha256"), r"records no engine checksum \(written by an older swin-trt\); rebuild it"),
    (lambda m: m["target"].pop("ahead_of_time"), r"has no 'ahead_of_time' entry .*; rebuild it on this machine"),
    (lambda m: m.update(inputs=7), r"is not the metadata the build wrote .*; rebuild it on this machine"),
    (lambda m: m.update(extra_key={"from": "a newer swin-trt"}), None),
])
def test_old_or_damaged_metadata_says_rebuild(fp32_engine, tmp_path, edit, message):
    engine = copy_engine(fp32_engine[0], tmp_path)
    metadata = json.loads(engine.with_suffix(".json").read_text())
    edit(metadata)
    engine.with_suffix(".json").write_text(json.dumps(metadata))
    if message is None:  # keys it does not know are ignored
        assert check_engine_compatible(engine, []).metadata == fp32_engine[1]
        return
    with pytest.raises(PipelineError, match=message):
        check_engine_compatible(engine, [])


@pytest.mark.parametrize(("damage", "message"), [
    ("flip one byte", r"is corrupt: its size is right but its sha256 \w{12}… is not the \w{12}… .*json recorded"),
    ("truncate to 1000 bytes", r"is corrupt: it has 1000 bytes, .*json recorded \d+ at build time \(truncated"),
])
def test_check_engine_refuses_a_corrupt_engine(fp32_engine, tmp_path, damage, message):
    engine = copy_engine(fp32_engine[0], tmp_path)
    data = bytearray(engine.read_bytes())
    if damage == "flip one byte":
        data[len(data) // 2] ^= 0x01
    else:
        del data[1000:]
    engine.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match=message):
        check_engine_compatible(engine, [])
    result = subprocess.run([sys.executable, "-m", "pipeline", "check-engine", str(engine)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
