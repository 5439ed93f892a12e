"""Issue 21 on the CPU: an engine built for a range of image sizes (``--img-size 320x320:800x1344:1344x1344``) as its
metadata, ``check-engine`` and :class:`pipeline.runtime.SwinEngine` see it. No TensorRT runs here: the engines are
files with metadata written through EngineMetadata, SwinEngine's size check is the pure function it calls before
TensorRT sees a batch, and its output buffers are checked against a stand-in execution context."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from pipeline.common.artifacts import write_json
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.runtime import SwinEngine, check_input_shape, input_shape
from pipeline.tensorrt.metadata import (
    BatchProfile,
    BuiltWith,
    EngineCheck,
    EngineMetadata,
    OnnxSource,
    Target,
    TensorSpec,
    metadata_path,
)

ENGINE = Path("build/swin_t_features/swin_t_features_fp16.engine")
WIDER = "resize or pad it into the range, or build an engine with a wider --img-size range"
DYNAMIC_PROFILE = BatchProfile("images", (1, 3, 320, 320), (8, 3, 800, 1344), (32, 3, 1344, 1344))
FIXED_PROFILE = BatchProfile("images", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))
DYNAMIC_INPUT = TensorSpec("images", "float32", (-1, 3, -1, -1))
FIXED_INPUT = TensorSpec("images", "float32", (-1, 3, 224, 224))
FEATURES = tuple(TensorSpec(f"features.{i}", "float32", (-1, 96 << i, -1, -1)) for i in range(4))


def metadata(engine: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
             profile: BatchProfile) -> EngineMetadata:
    """A TensorRT-RTX fp16 engine's metadata without a plugin (TensorRT's own attention)."""
    return EngineMetadata(
        engine=engine, precision="fp16", onnx=OnnxSource("model.swin.fp16.onnx", "0" * 64), plugin=None,
        backend=BuiltWith("tensorrt_rtx", "1.7.1.116"), target=Target(86, None, True), inputs=inputs,
        outputs=outputs, profile=profile, builder_optimization_level=3, profiling_verbosity="default",
        timing_cache=None, layers=200, plugin_layers=0, plugin_layer_names=(), parse_seconds=0.5, build_seconds=30.0,
        engine_bytes=0, engine_sha256="0" * 64, built_at="2026-12-06T00:00:00+00:00", attention="tensorrt")


DYNAMIC = metadata("swin_t_features_fp16.engine", (DYNAMIC_INPUT,), FEATURES, DYNAMIC_PROFILE)
FIXED = metadata("swin_t_fp16.engine", (FIXED_INPUT,), (TensorSpec("logits", "float32", (-1, 1000)),),
                 FIXED_PROFILE)


def engine_files(folder: Path, meta: EngineMetadata) -> Path:
    """An engine file and its metadata JSON beside it, size and SHA-256 right (check_engine_compatible's checks)."""
    engine = folder / meta.engine
    engine.write_bytes(b"stand-in engine " * 64)
    data = engine.read_bytes()
    meta = dataclasses.replace(meta, engine_bytes=len(data), engine_sha256=hashlib.sha256(data).hexdigest())
    write_json(metadata_path(engine), meta.to_json())
    return engine


# ---------------------------------------------------------------------------------------------------------
# Metadata and check-engine


def test_image_range_reads_back_from_the_json(tmp_path: Path) -> None:
    engine = engine_files(tmp_path, DYNAMIC)
    read = EngineMetadata.read(engine)
    assert read.inputs == (DYNAMIC_INPUT,) and read.outputs[3].shape == (-1, 768, -1, -1)
    assert read.profile.image_range == SizeRange((320, 320), (800, 1344), (1344, 1344))
    assert read.dynamic_size and read.profile.image_range.dynamic
    assert read.profile.image_range.text() == "320x320 to 1344x1344"
    fixed = EngineMetadata.read(engine_files(tmp_path, FIXED))
    assert fixed.profile.image_range == SizeRange((224, 224), (224, 224), (224, 224))
    assert not fixed.dynamic_size and not fixed.profile.image_range.dynamic
    assert fixed.profile.image_range.text() == "224x224"


@pytest.mark.parametrize(("size", "inside"), [
    ((320, 320), True), ((1344, 1344), True), ((800, 1344), True), ((1344, 320), True), ((319, 800), False),
    ((800, 1345), False), ((1400, 800), False),
])
def test_image_range_contains_each_dimension_in_its_bounds(size: tuple[int, int], inside: bool) -> None:
    assert DYNAMIC_PROFILE.image_range.contains(size) is inside


def test_check_engine_text_of_a_dynamic_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    engine = engine_files(tmp_path, DYNAMIC)
    monkeypatch.setattr("pipeline.tensorrt.load.installed_runtimes", lambda: [])
    assert main(["check-engine", str(engine)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:3] == [
        "  built with tensorrt_rtx 1.7.1.116 for SM86, fp16, batch 1..32, attention tensorrt",
        "  inputs images float32 [1..32, 3, 320..1344, 320..1344] (opt 8x3x800x1344); 4 output(s)"]


def test_check_engine_text_of_a_fixed_engine_is_unchanged() -> None:
    assert EngineCheck(FIXED, None, None).verdict().splitlines() == [
        "swin_t_fp16.engine: files OK: size, sha256 and plugin library match the build's record; no TensorRT runtime "
        "here, so loading it was not checked",
        "  built with tensorrt_rtx 1.7.1.116 for SM86, fp16, batch 1..32, attention tensorrt",
        "  inputs images float32 [-1, 3, 224, 224]; 1 output(s)",
        "  plugin library: none needed", "  (--json prints everything checked)"]


def test_check_engine_text_of_one_dynamic_dimension() -> None:
    """Exported with dynamic H, W but built for one height: that dimension is a number, the other a range."""
    profile = BatchProfile("images", (1, 3, 512, 320), (4, 3, 512, 640), (8, 3, 512, 1024))
    meta = dataclasses.replace(DYNAMIC, profile=profile)
    assert "  inputs images float32 [1..8, 3, 512, 320..1024] (opt 4x3x512x640); 4 output(s)" in \
        EngineCheck(meta, None, None).verdict().splitlines()


# ---------------------------------------------------------------------------------------------------------
# SwinEngine's size check, before TensorRT sees a batch


@pytest.mark.parametrize("shape", [(1, 3, 800, 1344), (1, 3, 320, 320), (32, 3, 1344, 1344), (40, 3, 320, 1344),
                                   (2, 3, 1344, 800), (1, 3, 577, 931)],
                         ids=["opt", "min", "max", "batch-above-profile", "transposed", "odd"])
def test_sizes_inside_the_range_pass(shape: tuple[int, ...]) -> None:
    check_input_shape(ENGINE, DYNAMIC_INPUT, DYNAMIC_PROFILE, shape)


@pytest.mark.parametrize(("shape", "got"), [((1, 3, 1400, 800), "1400x800"), ((2, 3, 800, 1345), "800x1345"),
                                            ((1, 3, 319, 640), "319x640"), ((1, 3, 640, 224), "640x224")],
                         ids=["H-above", "W-above", "H-below", "W-below"])
def test_sizes_outside_the_range_are_one_line(shape: tuple[int, ...], got: str) -> None:
    with pytest.raises(PipelineError) as error:
        check_input_shape(ENGINE, DYNAMIC_INPUT, DYNAMIC_PROFILE, shape)
    assert str(error.value) == (f"{ENGINE} takes images of 320x320 to 1344x1344 (H x W) as 'images'; got {got}: "
                                f"{WIDER}")


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 4, 800, 800), "takes 'images' as [N, 3, H, W], got shape [1, 4, 800, 800]"),
    ((3, 800, 800), "takes 'images' as [N, 3, H, W], got shape [3, 800, 800]"),
    ((0, 3, 800, 800), ": no images to run (batch of 0)"),
])
def test_a_dynamic_engine_refuses_other_layouts_by_their_dims(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(PipelineError) as error:
        check_input_shape(ENGINE, DYNAMIC_INPUT, DYNAMIC_PROFILE, shape)
    assert str(error.value) == f"{ENGINE}{'' if message.startswith(':') else ' '}{message}"


@pytest.mark.parametrize(("shape", "message"), [
    ((2, 3, 256, 256), "takes 'images' as [N, 3, 224, 224], got shape [2, 3, 256, 256]"),
    ((2, 3, 224), "takes 'images' as [N, 3, 224, 224], got shape [2, 3, 224]"),
    ((0, 3, 224, 224), ": no images to run (batch of 0)"),
])
def test_fixed_engine_messages_are_unchanged(shape: tuple[int, ...], message: str) -> None:
    check_input_shape(ENGINE, FIXED_INPUT, FIXED_PROFILE, (64, 3, 224, 224))
    with pytest.raises(PipelineError) as error:
        check_input_shape(ENGINE, FIXED_INPUT, FIXED_PROFILE, shape)
    assert str(error.value) == f"{ENGINE}{'' if message.startswith(':') else ' '}{message}"


def test_a_one_size_range_names_that_size() -> None:
    profile = BatchProfile("images", (1, 3, 512, 512), (4, 3, 512, 512), (8, 3, 512, 512))
    check_input_shape(ENGINE, DYNAMIC_INPUT, profile, (3, 3, 512, 512))
    with pytest.raises(PipelineError, match=r"takes images of 512x512 \(H x W\) as 'images'; got 512x640: resize"):
        check_input_shape(ENGINE, DYNAMIC_INPUT, profile, (3, 3, 512, 640))


def test_input_shape_defaults_to_the_optimum_of_a_range() -> None:
    assert input_shape(DYNAMIC_INPUT, DYNAMIC_PROFILE, 4) == (4, 3, 800, 1344)
    assert input_shape(DYNAMIC_INPUT, DYNAMIC_PROFILE, 2, (1344, 320)) == (2, 3, 1344, 320)
    assert input_shape(FIXED_INPUT, FIXED_PROFILE, 16) == (16, 3, 224, 224)
    tokens = TensorSpec("tokens", "float32", (-1, 130, 64))  # not an image: its own dims
    assert input_shape(tokens, BatchProfile("tokens", (2, 130, 64), (3, 130, 64), (4, 130, 64)), 4) == (4, 130, 64)


# ---------------------------------------------------------------------------------------------------------
# Output buffers when H and W change between calls


class StandInContext:
    """What SwinEngine._set_batch asks of an execution context: the input shape it is given decides the output
    shapes, as TensorRT derives a backbone's maps (stride 4·2^i, rounded up); addresses are recorded."""

    def __init__(self) -> None:
        self.shape: tuple[int, ...] = ()
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        self.shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        stage = int(name.rsplit(".", 1)[1])
        batch, _, height, width = self.shape
        return (batch, 96 << stage, math.ceil(height / (4 << stage)), math.ceil(width / (4 << stage)))

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address


def stand_in_engine() -> SwinEngine:
    """A SwinEngine over :class:`StandInContext` with CPU tensors: only what _set_batch reads."""
    engine = object.__new__(SwinEngine)
    engine.path, engine.metadata, engine.input = ENGINE, DYNAMIC, DYNAMIC_INPUT
    engine.output_names = tuple(spec.name for spec in FEATURES)
    engine.context, engine._torch, engine._cuda = StandInContext(), torch, torch.device("cpu")
    engine._dtypes = dict.fromkeys((DYNAMIC_INPUT.name, *engine.output_names), torch.float32)
    return engine


def test_output_buffers_follow_the_size_and_are_reused_only_when_it_stays() -> None:
    engine = stand_in_engine()
    first_images = torch.zeros(2, 3, 800, 1344)
    first = engine._set_batch(first_images)
    assert [tuple(t.shape) for t in first.values()] == [(2, 96, 200, 336), (2, 192, 100, 168), (2, 384, 50, 84),
                                                        (2, 768, 25, 42)]
    same = engine._set_batch(torch.zeros(2, 3, 800, 1344), reuse=first)
    assert all(same[name] is first[name] for name in first)  # one size: the buffers are kept
    other = engine._set_batch(torch.zeros(2, 3, 1344, 800), reuse=same)  # transposed: every map changes shape
    assert [tuple(t.shape) for t in other.values()] == [(2, 96, 336, 200), (2, 192, 168, 100), (2, 384, 84, 50),
                                                        (2, 768, 42, 25)]
    assert not any(other[name] is same[name] for name in same)
    assert engine.context.addresses == {"images": engine.context.addresses["images"],
                                        **{name: t.data_ptr() for name, t in other.items()}}
    odd = engine._set_batch(torch.zeros(1, 3, 321, 330), reuse=other)  # rounded up, as the model pads
    assert [tuple(t.shape)[2:] for t in odd.values()] == [(81, 83), (41, 42), (21, 21), (11, 11)]
