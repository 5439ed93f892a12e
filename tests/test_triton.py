"""`python -m pipeline triton` (`make triton`): the Triton model repository, its config.pbtxt read with Triton's own
ModelConfig protobuf, refusals, the client's request against the configuration, and the plugin's load-time
registration (all that Triton's `plugins=` does is dlopen it).

No TensorRT runs here, so the engines are files with metadata written through EngineMetadata (size and SHA-256 right,
so check_engine_compatible's file checks pass); building a real one takes minutes and the writer reads only these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

from pipeline.arguments import recipe_from_args
from pipeline.cli import build_parser, main
from pipeline.common.artifacts import write_json
from pipeline.common.errors import PipelineError
from pipeline.common.images import load_image_set
from pipeline.make import EngineFiles, EngineRecipe
from pipeline.runtime import preprocess as runtime_preprocess
from pipeline.runtime import top_k as runtime_top_k
from pipeline.serving import triton_client
from pipeline.serving.triton import (
    MARKER,
    TRANSFORM_SOURCE,
    config_text,
    find_engine,
    plugin_registers_with,
    write_model_repository,
)
from pipeline.tensorrt.metadata import (
    BatchProfile,
    BuiltWith,
    EngineMetadata,
    OnnxSource,
    PluginLibrary,
    Target,
    TensorSpec,
    metadata_path,
)

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")

ROOT = Path(__file__).resolve().parents[1]

RTX = BuiltWith("tensorrt_rtx", "1.7.1.116")
CLASSIFIER = ((TensorSpec("images", "float32", (-1, 3, 224, 224)),), (TensorSpec("logits", "float32", (-1, 1000)),))
BACKBONE = ((TensorSpec("images", "float32", (-1, 3, 160, 224)),),
            tuple(TensorSpec(f"features.{i}", "float32", (-1, 96 << i, 40 >> i, 56 >> i)) for i in range(4)))
#: A backbone for every size from 320x320 to 1344x1344 (--img-size 320x320:800x1344:1344x1344).
DYNAMIC_BACKBONE = ((TensorSpec("images", "float32", (-1, 3, -1, -1)),),
                    tuple(TensorSpec(f"features.{i}", "float32", (-1, 96 << i, -1, -1)) for i in range(4)))
DYNAMIC_CLASSIFIER = ((TensorSpec("images", "float32", (-1, 3, -1, -1)),), CLASSIFIER[1])
SIZES = ((320, 320), (800, 1344), (1344, 1344))


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """A stand-in plugin library: names libnvinfer.so.10 as ours does (what plugin_registers_with reads)."""
    path = tmp_path / "plugin" / "libswin_window_attention_plugin.so"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF stand-in\x00libnvinfer.so.10\x00getCreators\x00")
    return path


def fake_engine(folder: Path, plugin: Path, *, sm: int = 86, precision: str = "fp16", tag: str = "t",
                backend: BuiltWith = RTX, batch: tuple[int, int, int] = (1, 8, 32), embedded: bool = False,
                tensors: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]] = CLASSIFIER,
                onnx_sha256: str = "0" * 64, sizes: tuple[tuple[int, int], ...] | None = None) -> Path:
    """``make engine``'s file names in ``folder``: swin_<model tag>_<precision>.engine and its metadata JSON.
    ``sizes``: the (H, W) min, opt and max of an engine taking a range of sizes (its tensors have -1 for H, W)."""
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / f"swin_{tag}_{precision}.engine"
    engine.write_bytes(f"engine {sm} {precision} {backend.name}".encode() * 100)
    inputs, outputs = tensors
    image = [inputs[0].shape[1:]] * 3 if sizes is None else [(inputs[0].shape[1], *size) for size in sizes]
    metadata = EngineMetadata(
        engine=engine.name, precision=precision, onnx=OnnxSource(f"model.swin.{precision}.onnx", onnx_sha256),
        plugin=PluginLibrary(str(plugin), hashlib.sha256(plugin.read_bytes()).hexdigest(), embedded),
        backend=backend, target=Target(sm, None if backend == RTX else "NVIDIA GPU", backend == RTX),
        inputs=inputs, outputs=outputs,
        profile=BatchProfile(inputs[0].name, *((b, *shape) for b, shape in zip(batch, image, strict=True))),
        builder_optimization_level=3, profiling_verbosity="default", timing_cache=None, layers=200, plugin_layers=12,
        plugin_layer_names=(), parse_seconds=0.5, build_seconds=30.0, engine_bytes=engine.stat().st_size,
        engine_sha256=hashlib.sha256(engine.read_bytes()).hexdigest(), built_at="2026-11-25T00:00:00+00:00")
    write_json(metadata_path(engine), metadata.to_json())
    return engine


def parse_config(repository: Path, model: str = "swin_t") -> model_config_pb2.ModelConfig:
    return text_format.Parse((repository / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def load_client(path: Path) -> ModuleType:
    """The repository's client.py, imported by path as a deployment machine would run it."""
    spec = importlib.util.spec_from_file_location(f"client_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_repository_from_one_engine_matches_its_metadata(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "swin_t", plugin)
    repository = tmp_path / "triton"
    record = write_model_repository([engine], repository, model_name="swin_t", max_queue_delay_us=250, instances=2)
    metadata = EngineMetadata.read(engine)

    config = parse_config(repository)
    assert (config.name, config.platform) == ("swin_t", "tensorrt_plan")
    assert config.max_batch_size == metadata.profile.max[0] == record.max_batch_size == 32
    for tensors, specs in ((config.input, metadata.inputs), (config.output, metadata.outputs)):
        assert [(t.name, model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in tensors] == [
            (s.name, "TYPE_FP32", s.shape[1:]) for s in specs]
    assert list(config.dynamic_batching.preferred_batch_size) == [metadata.profile.opt[0]] == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert [(model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), g.count) for g in config.instance_group] == [
        ("KIND_GPU", 2)]
    assert not config.cc_model_filenames and not config.default_model_filename  # Triton's default: model.plan

    files = {str(p.relative_to(repository)) for p in repository.rglob("*") if p.is_file()}
    assert files == {"swin_t/config.pbtxt", "swin_t/1/model.plan", "swin_t/libswin_window_attention_plugin.so",
                     "README.md", "client.py", "imagenet_transform.py", MARKER}
    assert (repository / "swin_t/1/model.plan").read_bytes() == engine.read_bytes()
    assert (repository / record.plugin_library).read_bytes() == plugin.read_bytes()
    assert (repository / "client.py").read_bytes() == Path(triton_client.__file__).read_bytes()
    assert (repository / "imagenet_transform.py").read_bytes() == TRANSFORM_SOURCE.read_bytes()
    assert record.plugin_registers_with_tensorrt == 10
    assert json.loads((repository / MARKER).read_text())["engines"][0]["file"] == "swin_t/1/model.plan"
    assert not list(tmp_path.glob(".triton.*"))  # no temporary folder left beside it

    readme = (repository / "README.md").read_text()
    command = re.search(r'tritonserver --model-repository="\$PWD" \\\n +--backend-config=tensorrt,plugins="\$PWD/(.+)"',
                        readme)
    assert command and (repository / command.group(1)).is_file()
    assert 'LD_PRELOAD="libnvinfer.so.10 $PWD/swin_t/libswin_window_attention_plugin.so"' in readme
    assert "Not servable as is" in readme and "BACKEND=tensorrt" in readme  # a TensorRT-RTX engine
    assert "python client.py --url localhost:8001 --protocol grpc --model swin_t" in readme


def test_the_repositorys_client_uses_the_transform_beside_it(tmp_path: Path, plugin: Path) -> None:
    """On a deployment machine client.py imports its preprocessing from the copy beside it, not from this project."""
    repository = tmp_path / "triton"
    write_model_repository([fake_engine(tmp_path / "swin_t", plugin)], repository, model_name="swin_t")
    probe = "import client, imagenet_transform; print(imagenet_transform.__file__)"
    result = subprocess.run([sys.executable, "-c", probe], cwd=repository, capture_output=True, text=True, check=True)
    assert Path(result.stdout.strip()) == repository / "imagenet_transform.py"


def imagenet_crop_as_the_readme_says(photo: Path, size: tuple[int, int]) -> np.ndarray:
    """The backbone README's preprocessing, followed word for word: resize (bilinear, aspect kept) by the smallest
    factor that makes the photo at least H·256/224 × W·256/224, crop the centre H × W, scale, normalize."""
    height, width = size
    image = Image.open(photo).convert("RGB")
    factor = max(height * 256 / 224 / image.height, width * 256 / 224 / image.width)
    resized = image.resize((round(image.width * factor), round(image.height * factor)), Image.BILINEAR)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    pixels = np.asarray(resized.crop((left, top, left + width, top + height)), np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


def test_readme_of_a_backbone_describes_its_maps_not_classes(tmp_path: Path, plugin: Path) -> None:
    """The user report: a backbone's README promised top-5 classes and a crop "224/256 of the shorter side"."""
    engine = fake_engine(tmp_path / "e", plugin, tensors=BACKBONE)
    record = write_model_repository([engine], tmp_path / "triton", model_name="swin_t_features_160x224")
    readme = (tmp_path / "triton/README.md").read_text()
    assert record.kind == "backbone"
    for claim in ("top-5", "classes with", "logits", "224/256 of the shorter side", "--labels"):
        assert claim not in readme
    for i in range(4):  # 160x224 → stage maps 40x56, 20x28, 10x14, 5x7
        assert f"- output `features.{i}` FP32 [N, {96 << i}, {40 >> i}, {56 >> i}]: stage {i + 1}, stride {4 << i}\n" \
            in readme
    assert ("resized (bilinear, aspect ratio kept) by the smallest factor that makes it at least 182.9 × 256 (H × W: "
            "160 × 224 enlarged by 256/224), and the centre 160 × 224 cropped") in readme
    assert "--model swin_t_features_160x224 --save-dir maps photo.jpg" in readme
    assert "VARIANT=<VARIANT> PRECISION=fp16 FEATURES=1 IMG_SIZE=160x224 BACKEND=tensorrt" in readme  # no recipe
    for photo in write_photos(tmp_path / "photos"):  # the words are what the client does, to the float
        np.testing.assert_allclose(triton_client.preprocess(photo, (160, 224)),
                                   imagenet_crop_as_the_readme_says(photo, (160, 224)), rtol=0, atol=1e-6)


def test_readme_of_a_classifier_promises_top5(tmp_path: Path, plugin: Path) -> None:
    record = write_model_repository([fake_engine(tmp_path / "e", plugin)], tmp_path / "triton", model_name="swin_t")
    readme = (tmp_path / "triton/README.md").read_text()
    assert record.kind == "classifier"
    assert "output `logits` FP32 [N, 1000], the logits" in readme and "top-5 classes" in readme
    assert "so that the shorter side is 256, and the centre 224 × 224 cropped (224/256 of the shorter side)" in readme
    assert "backbone" not in readme and "--save-dir" not in readme


def test_engines_for_several_compute_capabilities(tmp_path: Path, plugin: Path) -> None:
    engines = [fake_engine(tmp_path / f"sm{sm}", plugin, sm=sm) for sm in (86, 120, 89)]
    write_model_repository(engines, tmp_path / "triton", model_name="swin_t")
    config = parse_config(tmp_path / "triton")
    assert dict(config.cc_model_filenames) == {"8.6": "model.sm86.plan", "12.0": "model.sm120.plan",
                                               "8.9": "model.sm89.plan"}
    assert config.default_model_filename == "model.sm86.plan"
    for engine, file in zip(engines, ("model.sm86.plan", "model.sm120.plan", "model.sm89.plan"), strict=True):
        assert (tmp_path / "triton/swin_t/1" / file).read_bytes() == engine.read_bytes()
    assert not (tmp_path / "triton/swin_t/1/model.plan").exists()


def test_embedded_plugin_ships_no_library(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin, embedded=True)
    plugin.unlink()  # embedded: the file on disk no longer matters
    record = write_model_repository([engine], tmp_path / "triton", model_name="swin_t")
    assert record.plugin_library is None and not list((tmp_path / "triton").rglob("*.so"))
    readme = (tmp_path / "triton/README.md").read_text()
    assert "--backend-config=tensorrt,version-compatible=true" in readme and "plugins=" not in readme


@pytest.mark.parametrize(("change", "message"), [
    ({"sm": 86}, "same compute capability"),
    ({"onnx_sha256": "1" * 64}, "differ in their ONNX graph"),
    ({"batch": (1, 8, 16)}, "differ in their batch profile"),
    ({"tensors": BACKBONE}, "differ in their inputs"),
])
def test_engines_of_another_model_are_refused(tmp_path: Path, plugin: Path, change: dict, message: str) -> None:
    first = fake_engine(tmp_path / "a", plugin, sm=86)
    second = fake_engine(tmp_path / "b", plugin, **{"sm": 89, **change})
    with pytest.raises(PipelineError, match=message):
        write_model_repository([first, second], tmp_path / "triton", model_name="swin_t")
    assert not (tmp_path / "triton").exists()


def test_batch_profile_must_start_at_one(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin, batch=(2, 8, 32))
    with pytest.raises(PipelineError, match=r"starts at 2.*BATCH=1,8,32"):
        write_model_repository([engine], tmp_path / "triton", model_name="swin_t")


def test_plugin_must_register_with_the_engines_tensorrt(tmp_path: Path, plugin: Path) -> None:
    """A TensorRT 11 engine with a plugin built against TensorRT 10's headers would not load in Triton."""
    engine = fake_engine(tmp_path / "e", plugin, backend=BuiltWith("tensorrt", "11.0.0.12"))
    with pytest.raises(PipelineError, match=r"only with TensorRT 10 .*Rebuild the plugin against TensorRT 11"):
        write_model_repository([engine], tmp_path / "triton", model_name="swin_t")
    ten = fake_engine(tmp_path / "f", plugin, backend=BuiltWith("tensorrt", "10.13.3.9"))
    readme = (write_model_repository([ten], tmp_path / "triton", model_name="swin_t").repository / "README.md")
    assert "Not servable" not in readme.read_text()


def test_rerun_replaces_our_repository(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin)
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t")
    (repository / "stale.txt").write_text("from an earlier run")
    write_model_repository([engine], repository, model_name="swin_t", instances=3)
    assert parse_config(repository).instance_group[0].count == 3
    assert not (repository / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "plugin", "triton"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_model_repository([engine], empty, model_name="swin_t")  # an empty folder is fine too
    assert (empty / "swin_t/1/model.plan").is_file()


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_make_triton_command(tmp_path: Path, plugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_engine(tmp_path / "swin_t", plugin)
    out = tmp_path / "triton"
    code, err = run_main(["triton", "--variant", "T", "--precision", "fp16", "--engine-dir",
                          str(tmp_path / "swin_t"), "--out", str(out), "--instances", "2"], capsys)
    assert code == 0, err
    assert parse_config(out).instance_group[0].count == 2


@pytest.mark.parametrize(("case", "message"), [
    ("no engine", "no fp16 engine of Swin-T at {dir}/swin_t_fp16.engine ({dir} has no engine); build it first "
                  "with `make engine VARIANT=T PRECISION=fp16 BUILD_DIR={dir}`"),
    ("precision without an engine", "no int8 engine of Swin-T at {dir}/swin_t_int8.engine ({dir} holds "
                                    "swin_t_fp16.engine); build it first with `make engine VARIANT=T PRECISION=int8"),
    ("folder that is not a repository", "exists and is not a Triton repository written by `python -m pipeline "
                                        "triton`"),
    ("corrupt engine", "is corrupt"),
    ("unknown variant", "unknown Swin variant 'Q'"),
])
def test_bad_input_is_one_error_line(tmp_path: Path, plugin: Path, capsys: pytest.CaptureFixture[str], case: str,
                                     message: str) -> None:
    engine_dir, out = tmp_path / "swin_t", tmp_path / "triton"
    engine_dir.mkdir()
    precision, variant = "fp16", "T"
    if case != "no engine":
        engine = fake_engine(engine_dir, plugin)
    if case == "precision without an engine":
        precision = "int8"
    elif case == "folder that is not a repository":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "corrupt engine":
        engine.write_bytes(engine.read_bytes()[:-1] + b"!")
    elif case == "unknown variant":
        variant = "Q"
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_main(["triton", "--variant", variant, "--precision", precision, "--engine-dir", str(engine_dir),
                          "--out", str(out)], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message.format(dir=engine_dir) in errors[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created, no temporary folder left
    if case == "folder that is not a repository":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]


def make_dry_run(target: str, variables: list[str]) -> list[str]:
    """The ``python -m pipeline`` arguments ``make -n <target> <variables>`` would run (skips without make)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    dry = subprocess.run([make, "-n", target, *variables, "PY=python"], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout.replace("\\\n", " ")  # the recipes' continued lines
    [command] = [line for line in dry.splitlines() if f"-m pipeline {target}" in line]
    words = shlex.split(command)
    return words[words.index("pipeline") + 1:]


def test_make_triton_serves_a_backbone_from_its_default_folder(tmp_path: Path, plugin: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`make triton FEATURES=1 IMG_SIZE=160x224 PRECISION=fp32` finds what `make engine` with the same variables
    wrote (build/swin_t_features_160x224/swin_t_features_160x224_fp32.engine) and serves it under that name."""
    args = make_dry_run("triton", ["FEATURES=1", "IMG_SIZE=160x224", "PRECISION=fp32"])
    monkeypatch.chdir(tmp_path)
    folder = Path("build/swin_t_features_160x224")
    fake_engine(folder, plugin, precision="fp32", tag="t_features_160x224", tensors=BACKBONE)
    code, err = run_main(args, capsys)
    assert code == 0, err
    repository = tmp_path / "build/triton"
    assert parse_config(repository, "swin_t_features_160x224").name == "swin_t_features_160x224"
    record = json.loads((repository / MARKER).read_text())
    assert record["engines"][0]["source"] == "build/swin_t_features_160x224/swin_t_features_160x224_fp32.engine"
    assert record["kind"] == "backbone"
    readme = (repository / "README.md").read_text()  # the stand-in engine is TensorRT-RTX's: rebuild commands
    assert "`make engine VARIANT=T PRECISION=fp32 FEATURES=1 IMG_SIZE=160x224 BACKEND=tensorrt`" in readme
    assert "`make triton VARIANT=T PRECISION=fp32 FEATURES=1 IMG_SIZE=160x224`" in readme


@pytest.mark.parametrize(("recipe", "engine_dir", "engine", "make"), [
    (EngineRecipe(features_only=True, img_size=(800, 1333)), None,
     "build/swin_t_features_800x1333/swin_t_features_800x1333_fp16.engine",
     "VARIANT=T PRECISION=fp16 FEATURES=1 IMG_SIZE=800x1333"),
    (EngineRecipe(variant="b384", precision="int8", attention="tensorrt"), None,
     "build/swin_b384_trtattn/swin_b384_int8.engine", "VARIANT=B384 PRECISION=int8 ATTENTION=tensorrt"),
    (EngineRecipe(img_size=(256, 320)), "elsewhere", "elsewhere/swin_t_256x320_fp16.engine",
     "VARIANT=T PRECISION=fp16 IMG_SIZE=256x320 BUILD_DIR=elsewhere"),
], ids=["backbone", "trtattn", "build-dir"])
def test_a_missing_engine_names_the_make_command_that_builds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                recipe: EngineRecipe, engine_dir: str | None,
                                                                engine: str, make: str) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PipelineError) as error:
        find_engine(recipe, None if engine_dir is None else Path(engine_dir))
    assert f" at {engine} (" in str(error.value)
    assert str(error.value).endswith(f"build it first with `make engine {make}`")
    args = build_parser().parse_args(make_dry_run("engine", make.split()))  # what that command would write
    built = recipe_from_args(args, args.groups, precision=args.precision, images=args.images)
    assert EngineFiles(args.out_dir or built.default_out_dir, built.model_tag, built.precision).engine == Path(engine)


def test_engines_must_be_the_model_the_options_describe(tmp_path: Path, plugin: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """--engines given by path: a classifier is not served under a backbone's name."""
    engine = fake_engine(tmp_path / "e", plugin)
    code, err = run_main(["triton", "--features-only", "--img-size", "160x224", "--engines", str(engine), "--out",
                          str(tmp_path / "triton")], capsys)
    assert (code, err) == (2, f"error: {engine} is a classifier for 224x224 images, but the model options ask for a "
                              "backbone for 160x224; pass the engine's own (--features-only / FEATURES=1, "
                              "--img-size / IMG_SIZE 224x224)\n")
    assert not (tmp_path / "triton").exists()


def test_bad_input_through_the_real_command_line(tmp_path: Path) -> None:
    """What `make triton` shows: exactly one line on stderr and exit status 2."""
    result = subprocess.run([sys.executable, "-m", "pipeline", "triton", "--variant", "T", "--engine-dir",
                             str(tmp_path / "none"), "--out", str(tmp_path / "triton")], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: no fp16 engine of Swin-T at {tmp_path}/none/swin_t_fp16.engine ({tmp_path}/none has no engine); "
        f"build it first with `make engine VARIANT=T PRECISION=fp16 BUILD_DIR={tmp_path}/none`"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# The client's request against config.pbtxt


def write_photos(folder: Path) -> list[Path]:
    """Generated photos of awkward sizes and modes (grayscale, RGBA, palette, small ones that get upscaled)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    photos = []
    for i, (size, mode) in enumerate([((500, 375), "RGB"), ((180, 260), "L"), ((333, 333), "RGBA"),
                                      ((120, 90), "RGB"), ((640, 200), "P")]):
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        pixels[:, : size[0] // 2] //= 2  # some structure, so a shifted crop would not pass unnoticed
        image = Image.fromarray(pixels).convert(mode)
        photos.append(folder / f"{i}.png")
        image.save(photos[-1])
    return photos


@pytest.mark.parametrize("tensors", [CLASSIFIER, BACKBONE], ids=["classifier", "backbone-160x224"])
def test_request_follows_config_and_runtime_preprocessing(tmp_path: Path, plugin: Path,
                                                          tensors: tuple[tuple[TensorSpec, ...], ...]) -> None:
    engine = fake_engine(tmp_path / "e", plugin, tensors=tensors)
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t")
    photos = write_photos(tmp_path / "photos")
    spec = EngineMetadata.read(engine).inputs[0]
    expected = load_image_set(tmp_path / "photos", count=len(photos), img_size=spec.shape[2:])

    for client in (triton_client, load_client(repository / "client.py")):
        config = client.read_config(repository / "swin_t/config.pbtxt")
        name, datatype, batch = client.build_request(expected.files_used, config)
        assert (name, datatype) == (config["input"][0]["name"], "FP32") == (spec.name, "FP32")
        assert batch.dtype == np.float32 and batch.shape == (len(photos), *spec.shape[1:])
        assert np.array_equal(batch, expected.images)  # bit for bit what calibration and verification feed
        assert np.array_equal(batch, np.stack([runtime_preprocess(p, spec.shape[2:]) for p in expected.files_used]))
        with pytest.raises(client.ClientError, match="1 to 32 images"):
            client.build_request(expected.files_used * 7, config)


def test_client_ranks_as_the_runtime_does() -> None:
    logits = np.random.default_rng(0).normal(size=(4, 1000)).astype(np.float32)
    logits[1, 10] = logits[1, 20] = 9.0  # a tie: the lower class first
    assert triton_client.imagenet_transform.top_k(logits) == runtime_top_k(logits)


def test_client_refuses_what_it_cannot_feed() -> None:
    config = {"name": "m", "max_batch_size": 4, "input": [{"name": "x", "data_type": "TYPE_INT64", "dims": [7]}]}
    with pytest.raises(triton_client.ClientError, match="TYPE_INT64"):
        triton_client.input_spec(config)
    config["input"][0] |= {"data_type": "TYPE_FP32", "dims": ["3", "64", "64"]}  # gRPC's JSON: int64 as strings
    assert triton_client.input_spec({"config": config}).dims == (3, 64, 64)
    assert triton_client.imagenet_transform.top_k(np.array([[0.0, 2.0, 1.0]]), 2)[0] == [
        (1, pytest.approx(np.exp(2) / np.exp([0, 1, 2]).sum())), (2, pytest.approx(np.e / np.exp([0, 1, 2]).sum()))]


#: What a stand-in server answers to one request: (the batch it received, images received before it) → outputs.
Answer = Callable[[np.ndarray, int], dict[str, np.ndarray]]


@contextmanager
def stand_in_server(config: model_config_pb2.ModelConfig, answer: Answer, received: list[np.ndarray]
                    ) -> Iterator[int]:
    """A gRPC server on a free port that answers as Triton does from ``config``: the model configuration, and each
    request's outputs from ``answer`` (every batch received is appended to ``received``). Yields the port."""
    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    class Server(service_pb2_grpc.GRPCInferenceServiceServicer):
        def ModelConfig(self, request, context):  # the service's method names
            assert request.name == config.name
            return service_pb2.ModelConfigResponse(config=config)

        def ModelInfer(self, request, context):
            (tensor,) = request.inputs
            assert (tensor.name, tensor.datatype) == (config.input[0].name, "FP32")
            batch = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(tuple(tensor.shape))
            outputs = answer(batch, sum(map(len, received)))
            received.append(batch)
            assert [o.name for o in request.outputs] == list(outputs)  # the client asks for every output
            return service_pb2.ModelInferResponse(
                model_name=config.name, raw_output_contents=[array.tobytes() for array in outputs.values()],
                outputs=[service_pb2.ModelInferResponse.InferOutputTensor(name=name, datatype="FP32",
                                                                          shape=list(array.shape))
                         for name, array in outputs.items()])

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Server(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def test_grpc_client_against_a_stand_in_server(tmp_path: Path, plugin: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """client.py over real gRPC against a server that answers as Triton does from the repository's config.pbtxt:
    model configuration, requests split at max_batch_size, top-5 from the returned logits."""
    engine = fake_engine(tmp_path / "e", plugin, batch=(1, 2, 2))
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t")
    photos = write_photos(tmp_path / "photos")[:3]
    received: list[np.ndarray] = []

    def answer(batch: np.ndarray, before: int) -> dict[str, np.ndarray]:
        logits = np.zeros((len(batch), 1000), np.float32)
        for i in range(len(batch)):  # image k of the whole run: class 100 + k first, 200 + k second
            logits[i, 100 + before + i], logits[i, 200 + before + i] = 5.0, 4.0
        return {"logits": logits}

    client = load_client(repository / "client.py")
    with stand_in_server(parse_config(repository), answer, received) as port:
        code = client.main(["--url", f"127.0.0.1:{port}", "--protocol", "grpc", *map(str, photos)])  # model: beside
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert [len(batch) for batch in received] == [2, 1]  # max_batch_size 2
    config_json = client.read_config(repository / "swin_t/config.pbtxt")
    expected = [client.build_request(photos[:2], config_json)[2], client.build_request(photos[2:], config_json)[2]]
    assert all(np.array_equal(got, sent) for got, sent in zip(received, expected, strict=True))
    assert [line.split(": ")[0] for line in out] == list(map(str, photos))
    for k, line in enumerate(out):
        classes = [int(entry.split()[0]) for entry in line.split(": ")[1].split(", ")]
        assert len(classes) == 5 and classes[:2] == [100 + k, 200 + k]


def test_backbone_client_prints_and_saves_the_maps(tmp_path: Path, plugin: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A backbone's repository: client.py prints each image's four maps (shape and statistics, no classes) and
    --save-dir writes exactly the arrays the server returned, one .npz per image."""
    engine = fake_engine(tmp_path / "e", plugin, batch=(1, 2, 2), tensors=BACKBONE)
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t_features_160x224")
    photos = write_photos(tmp_path / "photos")[:3]
    rng = np.random.default_rng(1)
    sent = {spec.name: rng.normal(size=(len(photos), *spec.shape[1:])).astype(np.float32)
            for spec in BACKBONE[1]}

    def answer(batch: np.ndarray, before: int) -> dict[str, np.ndarray]:
        return {name: maps[before:before + len(batch)] for name, maps in sent.items()}

    client = load_client(repository / "client.py")
    received: list[np.ndarray] = []
    with stand_in_server(parse_config(repository, "swin_t_features_160x224"), answer, received) as port:
        code = client.main(["--url", f"127.0.0.1:{port}", "--save-dir", str(tmp_path / "maps"), *map(str, photos)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and [len(batch) for batch in received] == [2, 1]
    expected = []
    for k, photo in enumerate(photos):
        expected.append(f"{photo}:")
        for name, maps in sent.items():
            m = maps[k].astype(np.float64)
            expected.append(f"  {name} {list(m.shape)} mean {m.mean():.4g} std {m.std():.4g} min {m.min():.4g} "
                            f"max {m.max():.4g}")
    assert out == expected
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [f"{p.stem}.npz" for p in photos]
    for k, photo in enumerate(photos):
        with np.load(tmp_path / "maps" / f"{photo.stem}.npz") as saved:
            assert list(saved) == list(sent)
            assert all(np.array_equal(saved[name], maps[k]) for name, maps in sent.items())


def test_client_outputs_decide_classifier_or_backbone() -> None:
    assert triton_client.is_classifier([(1000,)])
    assert not triton_client.is_classifier([(96, 40, 56), (192, 20, 28), (384, 10, 14), (768, 5, 7)])
    assert not triton_client.is_classifier([(768, 5, 7)])  # one map is still no logits
    config = {"config": {"output": [{"name": "logits", "dims": ["1000"]}]}}  # gRPC's JSON: int64 as strings
    assert triton_client.output_dims(config) == [(1000,)]


def test_save_dir_refuses_images_of_one_name_before_it_connects(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (64, 64)).save(tmp_path / folder / "photo.png")
    code = triton_client.main(["--url", "127.0.0.1:1", "--model", "m", "--save-dir", str(tmp_path / "maps"),
                               str(tmp_path / "a/photo.png"), str(tmp_path / "b/photo.png")])
    assert code == 2 and not (tmp_path / "maps").exists()
    assert capsys.readouterr().err == ("error: --save-dir names each file after its image, and several images are "
                                       "named photo; rename them or save each in its own run\n")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_without_a_server_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   protocol: str) -> None:
    pytest.importorskip("grpc" if protocol == "grpc" else "geventhttpclient")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(photo)
    code = triton_client.main(["--url", "127.0.0.1:1", "--protocol", protocol, "--model", "swin_t", str(photo)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: no Triton server answers {protocol} at 127.0.0.1:1 (")
    assert err.endswith("start tritonserver as the repository's README.md says, or pass the server's --url and "
                        "--protocol\n")


def test_client_checks_the_photos_before_it_connects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 64)).save(photo)
    code = triton_client.main(["--url", "127.0.0.1:1", "--model", "swin_t", str(photo), "missing.jpg", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err == f"error: no such image file: missing.jpg, {tmp_path}\n"


# ---------------------------------------------------------------------------------------------------------
# The plugin library under Triton's loader: dlopen only


STAND_IN_NVINFER = r"""
// libnvinfer.so.<N> as far as the plugin can tell: getPluginRegistry() with the IPluginRegistry ABI of the headers
// the plugin was compiled against, counting registered creators.
#include <NvInferRuntime.h>
#include <cstdio>
using namespace nvinfer1;
namespace {
int gRegistered = 0;
class Registry : public IPluginRegistry {
public:
    bool registerCreator(IPluginCreator&, AsciiChar const* const) noexcept override { return false; }
    IPluginCreator* const* getPluginCreatorList(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreator* getPluginCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const) noexcept
        override { return nullptr; }
    void setErrorRecorder(IErrorRecorder* const) noexcept override {}
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreator const&) noexcept override { return false; }
    bool isParentSearchEnabled() const override { return false; }
    void setParentSearchEnabled(bool const) override {}
    PluginLibraryHandle loadLibrary(AsciiChar const*) noexcept override { return nullptr; }
    void deregisterLibrary(PluginLibraryHandle) noexcept override {}
    bool registerCreator(IPluginCreatorInterface& creator, AsciiChar const* const ns) noexcept override {
        auto& v3 = static_cast<IPluginCreatorV3One&>(creator);
        std::printf("registered %s %s '%s'\n", v3.getPluginName(), v3.getPluginVersion(), ns);
        std::fflush(stdout);
        return ++gRegistered > 0;
    }
    IPluginCreatorInterface* const* getAllCreators(int32_t* const n) const noexcept override { *n = 0; return nullptr; }
    IPluginCreatorInterface* getCreator(AsciiChar const* const, AsciiChar const* const, AsciiChar const* const)
        noexcept override { return nullptr; }
    bool deregisterCreator(IPluginCreatorInterface const&) noexcept override { return --gRegistered >= 0; }
    IPluginResource* acquirePluginResource(AsciiChar const*, IPluginResource*) noexcept override { return nullptr; }
    int32_t releasePluginResource(AsciiChar const*) noexcept override { return 0; }
    IPluginCreatorInterface* const* getAllCreatorsRecursive(int32_t* const n) noexcept override {
        *n = 0; return nullptr; }
};
}  // namespace
extern "C" __attribute__((visibility("default"))) IPluginRegistry* getPluginRegistry() noexcept {
    static Registry registry;
    return &registry;
}
extern "C" __attribute__((visibility("default"))) int registered_creators() { return gRegistered; }
"""

#: Triton's TensorRT backend links libnvinfer, then dlopens each `plugins=` library (RTLD_NOW | RTLD_LOCAL).
LOADER = """
import ctypes, os, sys
plugin, nvinfer, order = sys.argv[1:]
if order == "plugin last":
    registry = ctypes.CDLL(nvinfer, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
    ctypes.CDLL(plugin, mode=os.RTLD_NOW | os.RTLD_LOCAL)
elif order == "plugin first":
    ctypes.CDLL(plugin, mode=os.RTLD_NOW | os.RTLD_LOCAL)
    registry = ctypes.CDLL(nvinfer, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
else:  # preloaded: the plugin was initialized before this process ran a line
    registry = ctypes.CDLL(nvinfer, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
print("count", registry.registered_creators())
"""


def test_plugin_registers_when_triton_dlopens_it(tmp_path: Path, plugin_library: Path) -> None:
    """The real plugin library against stand-ins of libnvinfer.so.<N>: Triton's `plugins=` (dlopen after libnvinfer)
    registers the creator with the TensorRT major of the plugin's headers only; LD_PRELOAD alone registers nothing,
    LD_PRELOAD with libnvinfer does."""
    cache = (plugin_library.parent / "CMakeCache.txt").read_text()
    headers = Path(re.search(r"^TENSORRT_INCLUDE_DIR:PATH=(.+)$", cache, re.M).group(1))
    major = int(re.search(r"#define (?:NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE) (\d+)",
                          (headers / "NvInferVersion.h").read_text()).group(1))
    assert plugin_registers_with(plugin_library) == major
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the stand-in libnvinfer")
    (tmp_path / "cuda").mkdir()  # the headers include it for the stream types only
    (tmp_path / "cuda/cuda_runtime_api.h").write_text("typedef struct CUstream_st* cudaStream_t;\n"
                                                      "typedef struct CUevent_st* cudaEvent_t;\n")
    (tmp_path / "nvinfer.cpp").write_text(STAND_IN_NVINFER)
    for soname in (f"libnvinfer.so.{major}", f"libnvinfer.so.{major + 1}"):
        subprocess.run([compiler, "-std=c++17", "-shared", "-fPIC", f"-I{headers}", f"-I{tmp_path / 'cuda'}",
                        "-Wno-deprecated-declarations", f"-Wl,-soname,{soname}", "-o", str(tmp_path / soname),
                        str(tmp_path / "nvinfer.cpp")], check=True, capture_output=True)

    def load(nvinfer: str, order: str, preload: str | None = None) -> list[str]:
        env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(tmp_path)} | ({"LD_PRELOAD": preload} if preload else {})
        result = subprocess.run([sys.executable, "-c", LOADER, str(plugin_library), str(tmp_path / nvinfer), order],
                                capture_output=True, text=True, env=env, timeout=60, check=True)
        return result.stdout.splitlines()

    ours, other = f"libnvinfer.so.{major}", f"libnvinfer.so.{major + 1}"
    # plugins=: both contract versions' creators
    both = ["registered SwinWindowAttention 1 ''", "registered SwinWindowAttention 2 ''", "count 2"]
    assert load(ours, "plugin last") == both
    assert load(other, "plugin last") == ["count 0"]  # a Triton on the next TensorRT major
    assert load(ours, "plugin first") == ["count 0"]  # no libnvinfer yet: nothing to register with
    assert load(ours, "preloaded", preload=str(plugin_library)) == ["count 0"]
    assert load(ours, "preloaded", preload=f"{ours} {plugin_library}") == both


def test_every_repository_record_field_is_json(tmp_path: Path, plugin: Path) -> None:
    record = write_model_repository([fake_engine(tmp_path / "e", plugin)], tmp_path / "triton", model_name="swin_t")
    marker = json.loads((tmp_path / "triton" / MARKER).read_text())
    assert set(marker) == {field.name for field in dataclasses.fields(record)}
    assert marker["repository"] == "." and marker["plugin_library"] == "swin_t/libswin_window_attention_plugin.so"


# ---------------------------------------------------------------------------------------------------------
# Engines taking a range of image sizes (--img-size min:opt:max, issue 21)


def test_config_of_a_dynamic_backbone_has_minus_one_for_h_and_w(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin, tensors=DYNAMIC_BACKBONE, sizes=SIZES)
    write_model_repository([engine], tmp_path / "triton", model_name="swin_t_features")
    config = parse_config(tmp_path / "triton", "swin_t_features")
    assert [(t.name, tuple(t.dims)) for t in config.input] == [("images", (3, -1, -1))]
    assert [(t.name, tuple(t.dims)) for t in config.output] == [(f"features.{i}", (96 << i, -1, -1))
                                                                for i in range(4)]
    assert config.max_batch_size == 32 and list(config.dynamic_batching.preferred_batch_size) == [8]
    text = (tmp_path / "triton/swin_t_features/config.pbtxt").read_text()
    assert "    dims: [ 3, -1, -1 ]\n" in text and "    dims: [ 768, -1, -1 ]\n" in text
    python = config_text("swin_t_features", [EngineMetadata.read(engine)], ["model.onnx"], max_queue_delay_us=100,
                         instances=1, python_path=["/site"])  # the CPU route's: the same tensors
    parsed = text_format.Parse(python, model_config_pb2.ModelConfig())
    assert parsed.backend == "python" and parsed.input == config.input and parsed.output == config.output


def test_config_of_a_fixed_classifier_is_unchanged(tmp_path: Path, plugin: Path) -> None:
    """Byte for byte what `make triton` wrote before engines could take a range of sizes."""
    write_model_repository([fake_engine(tmp_path / "e", plugin)], tmp_path / "triton", model_name="swin_t")
    assert (tmp_path / "triton/swin_t/config.pbtxt").read_text() == (
        "# Written by `python -m pipeline triton` from swin_t_fp16.engine (tensorrt_rtx 1.7.1.116, SM86, fp16).\n"
        "# Shapes, names and types are the engine's; dims leave out the batch dimension (max_batch_size).\n"
        'name: "swin_t"\nplatform: "tensorrt_plan"\nmax_batch_size: 32\n'
        'input [\n  {\n    name: "images"\n    data_type: TYPE_FP32\n    dims: [ 3, 224, 224 ]\n  }\n]\n'
        'output [\n  {\n    name: "logits"\n    data_type: TYPE_FP32\n    dims: [ 1000 ]\n  }\n]\n'
        "dynamic_batching {\n  preferred_batch_size: [ 8 ]\n  max_queue_delay_microseconds: 100\n}\n"
        "instance_group [\n  {\n    kind: KIND_GPU\n    count: 1\n  }\n]\n")


def test_readme_of_a_dynamic_backbone_gives_its_range(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin, tensors=DYNAMIC_BACKBONE, sizes=SIZES)
    record = write_model_repository([engine], tmp_path / "triton", model_name="swin_t_features")
    readme = (tmp_path / "triton/README.md").read_text()
    assert record.kind == "backbone" and record.inputs[0].shape == (-1, 3, -1, -1)
    assert ("input `images` FP32 [N, 3, H, W], any H x W from 320x320 to 1344x1344 (tuned for 800x1344; "
            "config.pbtxt has -1 for H and W)") in readme
    for i in range(4):
        assert f"- output `features.{i}` FP32 [N, {96 << i}, H/{4 << i}, W/{4 << i}]: stage {i + 1}, stride " \
               f"{4 << i}\n" in readme
    assert "kept at its own size (no resize, no crop)" in readme and "(H x W)" in readme
    assert "`client.py` sends one request per image size" in readme and "cropped" not in readme
    assert "FEATURES=1 IMG_SIZE=320x320:800x1344:1344x1344 BACKEND=tensorrt" in readme  # the rebuild command


@pytest.mark.parametrize(("options", "error"), [
    (["--features-only", "--img-size", "320x320:800x1344:1344x1344"], None),
    (["--features-only", "--img-size", "800x1344"], "is a backbone for 320x320 to 1344x1344 images, but the model "
                                                    "options ask for a backbone for 800x1344; pass the engine's own "
                                                    "(--features-only / FEATURES=1, --img-size / IMG_SIZE "
                                                    "320x320:800x1344:1344x1344)"),
    (["--features-only", "--img-size", "320x320:800x1344:1400x1400"], "is a backbone for 320x320 to 1344x1344 "
                                                                      "images, but the model options ask for a "
                                                                      "backbone for sizes 320x320:800x1344:1400x1400"),
    (["--img-size", "320x320:800x1344:1344x1344"], "is a backbone for 320x320 to 1344x1344 images, but the model "
                                                   "options ask for a classifier for sizes 320x320:800x1344:1344x1344"),
])
def test_a_dynamic_engine_serves_the_model_options_of_its_range(tmp_path: Path, plugin: Path,
                                                                capsys: pytest.CaptureFixture[str],
                                                                options: list[str], error: str | None) -> None:
    """The options name the engine's model (its Triton model's name): the range itself, not a size inside it."""
    engine = fake_engine(tmp_path / "e", plugin, tensors=DYNAMIC_BACKBONE, sizes=SIZES)
    code, err = run_main(["triton", *options, "--engines", str(engine), "--out", str(tmp_path / "triton")], capsys)
    if error is None:
        assert code == 0, err
        model = parse_config(tmp_path / "triton", "swin_t_features_320x320-1344x1344")
        assert model.input[0].dims == [3, -1, -1]
    else:
        assert code == 2 and err.startswith(f"error: {engine} {error}") and err.count("\n") == 1, err


def photos_of_sizes(folder: Path, sizes: list[tuple[int, int]]) -> list[Path]:
    """Lossless photos of these (H, W), distinct pixels each."""
    folder.mkdir()
    rng = np.random.default_rng(7)
    photos = []
    for i, (height, width) in enumerate(sizes):
        photos.append(folder / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos[-1])
    return photos


def normalized(photo: Path) -> np.ndarray:
    """The ImageNet normalization of a photo's own pixels, written out: [0, 1], minus the mean, over the std, CHW."""
    pixels = np.asarray(Image.open(photo).convert("RGB"), np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((pixels - mean) / std).transpose(2, 0, 1)


def test_request_groups_put_one_size_in_a_request() -> None:
    sizes = [(3, 320, 480), (3, 480, 320), (3, 320, 480), (3, 400, 400), (3, 320, 480), (3, 480, 320)]
    assert triton_client.request_groups(sizes, 2) == [[0, 2], [4], [1, 5], [3]]
    assert triton_client.request_groups(sizes, 8) == [[0, 2, 4], [1, 5], [3]]
    assert triton_client.request_groups([(3, 224, 224)] * 5, 2) == [[0, 1], [2, 3], [4]]  # a fixed size: in order
    assert triton_client.request_groups([], 4) == []
    with pytest.raises(ValueError, match="max_batch must be at least 1"):
        triton_client.request_groups(sizes, 0)


def test_client_sends_photos_of_a_dynamic_input_at_their_own_size(tmp_path: Path) -> None:
    config = {"name": "m", "max_batch_size": 4,
              "input": [{"name": "images", "data_type": "TYPE_FP32", "dims": ["3", "-1", "-1"]}]}
    spec = triton_client.input_spec(config)
    assert spec.dims == (3, -1, -1) and spec.size is None
    photos = photos_of_sizes(tmp_path / "photos", [(330, 500), (330, 500), (417, 350)])
    name, datatype, batch = triton_client.build_request(photos[:2], config)
    assert (name, datatype, batch.shape, batch.dtype) == ("images", "FP32", (2, 3, 330, 500), np.float32)
    np.testing.assert_allclose(batch, np.stack([normalized(p) for p in photos[:2]]), rtol=0, atol=1e-6)
    with pytest.raises(triton_client.ClientError, match=r"^a request holds images of one size, got 330x500, "
                                                        r"417x350 \(H x W\): send one request per size"):
        triton_client.build_request(photos, config)
    config["input"][0]["dims"] = [3, -1, 224]  # one dynamic dimension: no size to send a photo at
    with pytest.raises(triton_client.ClientError, match=r"has dims \[3, -1, 224\]"):
        triton_client.input_spec(config)


def test_client_against_a_dynamic_backbone(tmp_path: Path, plugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """client.py over gRPC: one request per size (at most max_batch_size), maps printed and saved per photo in the
    order given, each the size the server returned for its photo."""
    engine = fake_engine(tmp_path / "e", plugin, batch=(1, 2, 2), tensors=DYNAMIC_BACKBONE, sizes=SIZES)
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t_features")
    sizes = [(320, 480), (480, 320), (320, 480), (400, 400), (320, 480)]
    photos = photos_of_sizes(tmp_path / "photos", sizes)
    received: list[np.ndarray] = []

    def answer(batch: np.ndarray, before: int) -> dict[str, np.ndarray]:  # photo k's maps hold k's first pixel
        height, width = batch.shape[2:]
        return {f"features.{i}": np.broadcast_to(batch[:, :1, :1, :1], (len(batch), 96 << i, -(-height // (4 << i)),
                                                                     -(-width // (4 << i)))).copy()
                for i in range(4)}

    client = load_client(repository / "client.py")
    with stand_in_server(parse_config(repository, "swin_t_features"), answer, received) as port:
        code = client.main(["--url", f"127.0.0.1:{port}", "--save-dir", str(tmp_path / "maps"), *map(str, photos)])
        assert [batch.shape for batch in received] == [(2, 3, 320, 480), (1, 3, 320, 480), (1, 3, 480, 320),
                                                       (1, 3, 400, 400)]
        with pytest.raises(client.ClientError, match=r"output 'features.0' has shapes \[96, 100, 100\], "
                                                     r"\[96, 120, 80\], \[96, 80, 120\] .* use "
                                                     r"TritonModelClient.infer_each"):
            client.TritonModelClient(f"127.0.0.1:{port}", "grpc", "swin_t_features").infer(photos)
    out = capsys.readouterr().out
    assert code == 0
    np.testing.assert_allclose(received[0], np.stack([normalized(photos[0]), normalized(photos[2])]), atol=1e-6)
    assert [line[:-1] for line in out.splitlines() if not line.startswith(" ")] == list(map(str, photos))
    for photo, (height, width) in zip(photos, sizes, strict=True):
        first = normalized(photo)[0, 0, 0]
        with np.load(tmp_path / "maps" / f"{photo.stem}.npz") as saved:
            assert [saved[f"features.{i}"].shape for i in range(4)] == [
                (96 << i, -(-height // (4 << i)), -(-width // (4 << i))) for i in range(4)]
            assert saved["features.3"].min() == saved["features.3"].max() == pytest.approx(first, abs=1e-6)
        assert f"{photo}:\n  features.0 [96, {-(-height // 4)}, {-(-width // 4)}] mean {first:.4g}" in out


def test_client_ranks_a_dynamic_classifiers_photos_in_their_order(tmp_path: Path, plugin: Path) -> None:
    engine = fake_engine(tmp_path / "e", plugin, batch=(1, 4, 4), tensors=DYNAMIC_CLASSIFIER, sizes=SIZES)
    repository = tmp_path / "triton"
    write_model_repository([engine], repository, model_name="swin_t")
    assert parse_config(repository).input[0].dims == [3, -1, -1]
    sizes = [(352, 352), (320, 640), (352, 352)]
    photos = photos_of_sizes(tmp_path / "photos", sizes)
    firsts = [normalized(photo)[0, 0, 0] for photo in photos]
    received: list[np.ndarray] = []

    def answer(batch: np.ndarray, before: int) -> dict[str, np.ndarray]:  # class = which photo (its first pixel)
        logits = np.zeros((len(batch), 1000), np.float32)
        for row, image in enumerate(batch):
            logits[row, 100 + firsts.index(min(firsts, key=lambda f: abs(f - image[0, 0, 0])))] = 9.0
        return {"logits": logits}

    client = load_client(repository / "client.py")
    with stand_in_server(parse_config(repository), answer, received) as port:
        logits = client.TritonModelClient(f"127.0.0.1:{port}", "grpc", "swin_t").infer(photos)["logits"]
    assert [batch.shape for batch in received] == [(2, 3, 352, 352), (1, 3, 320, 640)]
    assert logits.shape == (3, 1000) and list(logits.argmax(axis=1)) == [100, 101, 102]
