"""One graph for every image size (issue 21): size ranges in the recipe, the export with dynamic H and W, the
version-2 nodes on onnxruntime against the unfused PyTorch model at sizes the export never saw, the build's profile
and verification at each size of the range."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from plugin_build import plugin_library_for

from pipeline import cli
from pipeline.common.compare import relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.common.onnx_io import graph_input, ort_session
from pipeline.common.variants import SwinConfig
from pipeline.kernels.reference import MAP_VERSION, PLUGIN_OP
from pipeline.models import SwinTransformer, perturb_weights_
from pipeline.recipe import EngineRecipe
from pipeline.stages.export import export_onnx
from pipeline.stages.int8 import quantize_int8
from pipeline.stages.precision import convert_fp16
from pipeline.stages.verify import verify
from pipeline.tensorrt.backends import cuda_device
from pipeline.tensorrt.build import build_engine, profile_shapes

DEVICE = cuda_device()

#: Window 4 (shift 2), head dim 8: over 40..160 pixels stage 4 is 2..5 tokens, so its shift is dropped at the small
#: sizes and applied (over a padded map) at the large ones, decided by the node at run time.
TINY = SwinConfig(16, (2, 2, 2, 2), (2, 4, 8, 16), window_size=4, num_classes=10)
TINY_RANGE = SizeRange.parse("40x40:100x132:160x160")
#: Sizes the export never ran at: odd, non-square both ways, each stage padded, stage 4 with and without its shift.
UNSEEN = [(41, 157), (157, 41), (77, 77), (40, 160), (123, 96)]


def has_dynamic_size(model: onnx.ModelProto, path: Path) -> bool:
    """Whether the graph's image input ``[B, 3, H, W]`` has a symbolic H or W."""
    return None in graph_input(model, None, path, dynamic_size=True)[1][2:]


def tiny_models(features_only: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The unfused model (the reference) and the fused one (what is exported) with the same weights."""
    torch.manual_seed(0)
    unfused = perturb_weights_(SwinTransformer(TINY, features_only=features_only))
    fused = SwinTransformer(TINY, features_only=features_only, fused_attention=True).eval()
    fused.load_state_dict(unfused.state_dict())
    return unfused, fused


@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory) -> dict[bool, tuple[torch.nn.Module, Path]]:
    """``features_only`` → (unfused model, its dynamic export), each exported once for the module."""
    exports: dict[bool, tuple[torch.nn.Module, Path]] = {}
    for features_only in (True, False):
        unfused, fused = tiny_models(features_only)
        path = tmp_path_factory.mktemp("dynamic") / "model.onnx"
        exports[features_only] = unfused, export_onnx(fused, path, max_batch=4, sizes=TINY_RANGE)
    return exports


@pytest.fixture(params=[True, False], ids=["backbone", "classifier"])
def tiny_dynamic(request, tiny_exports) -> tuple[torch.nn.Module, Path]:
    """Both heads: what depends on the model's outputs runs for each."""
    return tiny_exports[request.param]


@pytest.fixture
def tiny_backbone(tiny_exports) -> tuple[torch.nn.Module, Path]:
    """The backbone alone: what exercises the stages (the classifier's engine runs are covered by make engine)."""
    return tiny_exports[True]


def test_size_range_parses_and_picks_verification_sizes() -> None:
    sizes = SizeRange.parse("320x320:800x1344:1344x1344")
    assert (sizes.min, sizes.opt, sizes.max, str(sizes)) == ((320, 320), (800, 1344), (1344, 1344),
                                                              "320x320:800x1344:1344x1344")
    assert sizes.verification_sizes() == ((320, 320), (800, 1344), (1344, 1344), (1344, 800))
    assert SizeRange.parse("224:288:384").verification_sizes() == ((224, 224), (288, 288), (384, 384), (384, 224))
    assert SizeRange.parse("224:384").opt == (384, 384)
    assert SizeRange.from_json(json.loads(json.dumps(sizes.to_json()))) == sizes
    with pytest.raises(ValueError, match="min:opt:max"):
        SizeRange.parse("224")


@pytest.mark.parametrize(("fields", "message"), [
    ({"img_range": SizeRange.parse("800:320:1344")}, "expected min <= opt <= max"),
    ({"img_range": SizeRange.parse("320:1400:1344")}, "expected min <= opt <= max"),
    ({"img_range": SizeRange.parse("320x800:800x320:1344")}, "expected min <= opt <= max"),
    ({"img_range": SizeRange.parse("16:224:384")}, "at least 32 pixels"),
    ({"img_range": SizeRange.parse("224:384"), "img_size": (224, 224)}, "give one"),
    ({"img_range": SizeRange.parse("224:384"), "attention": "tensorrt"}, "needs --attention plugin"),
])
def test_recipe_refuses_a_range_it_cannot_build(fields, message) -> None:
    with pytest.raises(PipelineError, match=message):
        EngineRecipe(**fields).validate("surgery")


@pytest.mark.parametrize(("command", "message"), [
    (["pipeline", "engine", "--features-only", "--img-size", "1344x1344:800x1344:320x320"],
     "error: --img-size 1344x1344:800x1344:320x320: expected min <= opt <= max in height and in width; reorder the "
     "sizes as min:opt:max"),
    (["benchmarks.bench", "--img-size", "224:288:384"],
     "error: make bench measures one image size, not the range 224x224:288x288:384x384: give one --img-size / "
     "IMG_SIZE, e.g. its opt 288x288"),
])
def test_a_range_refused_is_one_error_line_and_writes_nothing(tmp_path: Path, command, message) -> None:
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", *command, "--out-dir" if command[0] == "pipeline" else "--work-dir",
                             str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip().splitlines() == [message]


def test_recipe_names_a_ranged_model_apart() -> None:
    recipe = EngineRecipe(features_only=True, img_range=TINY_RANGE)
    assert recipe.model_tag == "t_features_40x40-160x160" and recipe.image_size == (100, 132)
    record = recipe.model_record()
    assert record.img_range == TINY_RANGE and "sizes 40x40:100x132:160x160" in record.describe()
    assert not record.same_model(EngineRecipe(features_only=True, img_size=(100, 132)).model_record())


def test_dynamic_export_holds_version_2_nodes_and_symbolic_sizes(tiny_dynamic) -> None:
    _, path = tiny_dynamic
    model = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"] and has_dynamic_size(model, path)
    nodes = [n for n in model.graph.node if n.op_type == PLUGIN_OP]
    assert len(nodes) == sum(TINY.depths)
    versions = {a.s.decode() for n in nodes for a in n.attribute if a.name == "plugin_version"}
    assert versions == {MAP_VERSION}
    assert {a.name for n in nodes for a in n.attribute}.isdisjoint({"height", "width"})


@pytest.mark.parametrize("size", UNSEEN, ids=[f"{h}x{w}" for h, w in UNSEEN])
def test_dynamic_graph_matches_pytorch_at_sizes_it_never_ran(tiny_dynamic, size) -> None:
    """onnxruntime (reference op at the node's launch params) against the unfused model, which pads, shifts and
    drops shifts in Python: within 1e-4 relative at every output."""
    unfused, path = tiny_dynamic
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        expected = unfused(images)
    expected = [expected] if isinstance(expected, torch.Tensor) else expected
    actual = ort_session(path).run(None, {"images": images.numpy()})
    for e, a in zip(expected, actual, strict=True):
        assert a.shape == tuple(e.shape)
        assert relative_error(e.numpy(), a) <= 1e-4


def test_check_command_runs_a_dynamic_graph_at_the_size_given(tiny_backbone, capsys) -> None:
    _, path = tiny_backbone
    command = ["check", str(path), str(path), "--batch", "1"]
    assert cli.main([*command, "--img-size", "77x61"]) == 0
    assert all(r["passed"] and r["relative_error"] == 0.0 for r in json.loads(capsys.readouterr().out)["results"])
    assert cli.main(command) == 2
    assert capsys.readouterr().err.strip().endswith(
        "a graph exported with dynamic height and width needs its sizes (--img-size)")


def test_build_profile_spans_the_range() -> None:
    assert profile_shapes((1, 2, 4), [None, 3, None, None], "images", TINY_RANGE) == {
        "min": [1, 3, 40, 40], "opt": [2, 3, 100, 132], "max": [4, 3, 160, 160]}
    with pytest.raises(PipelineError, match="dynamic in H and W: give the size range"):
        profile_shapes((1, 2, 4), [None, 3, None, None], "images")
    with pytest.raises(PipelineError, match="a fixed size: a size range"):
        profile_shapes((1, 2, 4), [None, 3, 224, 224], "images", TINY_RANGE)


def test_verify_judges_each_size(tiny_backbone, tmp_path: Path) -> None:
    unfused, path = tiny_backbone
    sizes = TINY_RANGE.verification_sizes()
    assert sizes == ((40, 40), (100, 132), (160, 160), (132, 100))
    out = tmp_path / "verify.json"
    report = verify(unfused, path, "fp32", sizes=sizes, image_count=4, batch=2, out_path=out)
    assert report.passed and [v.size for v in report.sizes] == list(sizes)
    assert all(v.passed and v.images.count == 4 for v in report.sizes) and report.images.count == 16
    written = json.loads(out.read_text())
    assert [tuple(s["size"]) for s in written["sizes"]] == list(sizes)
    for size in written["sizes"]:
        assert all(o["cosine_min"] > 0.99999 and o["passed"] for o in size["outputs"].values())
    with pytest.raises(PipelineError, match="give the sizes to verify at"):
        verify(unfused, path, "fp32", image_count=4)


def test_int8_calibrated_at_opt_verifies_at_every_size(tiny_backbone, tmp_path: Path) -> None:
    """Q/DQ placement is structural and the ranges come from the opt size's activations: the INT8 graph keeps its
    dynamic H and W and meets the INT8 thresholds (SQNR, cosine, top-1, Polygraphy) at each verification size."""
    unfused, path = tiny_backbone
    quantized = quantize_int8(path, tmp_path / "model.qdq.onnx", samples=8, img_size=TINY_RANGE.opt)
    # qkv, proj, fc1 and fc2 of each block, 3 patch mergings and the embedding
    assert len(quantized.quantized_layers) == 4 * sum(TINY.depths) + 3 + 1
    typed = tmp_path / "model.swin.int8.onnx"
    convert_fp16(tmp_path / "model.qdq.onnx", typed)
    assert has_dynamic_size(onnx.load(str(typed)), typed)
    report = verify(unfused, typed, "int8", sizes=TINY_RANGE.verification_sizes(), image_count=8, batch=4)
    assert report.passed and all(v.passed for v in report.sizes) and len(report.sizes) == 4


def test_one_engine_over_the_range_builds_ahead_of_time(tiny_backbone, plugin_library, tmp_path: Path) -> None:
    """TensorRT-RTX parses every version-2 node with symbolic H and W and builds one profile over batch × H × W."""
    _, path = tiny_backbone
    metadata = build_engine(path, tmp_path / "dynamic.engine", plugin_library=plugin_library, batch=(1, 2, 4),
                            backend="rtx", sm=86, sizes=TINY_RANGE)
    assert metadata.plugin_layers == sum(TINY.depths)
    assert metadata.inputs[0].shape == (-1, 3, -1, -1) and metadata.dynamic_size
    assert (metadata.profile.min, metadata.profile.opt, metadata.profile.max) == (
        (1, 3, 40, 40), (2, 3, 100, 132), (4, 3, 160, 160))
    assert metadata.profile.image_range == TINY_RANGE
    with pytest.raises(PipelineError, match="a graph exported with dynamic height and width needs its sizes"):
        build_engine(path, tmp_path / "no_range.engine", plugin_library=plugin_library, backend="rtx", sm=86)
    assert not (tmp_path / "no_range.engine").exists()


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE is None, reason="needs a CUDA device (no libcuda.so.1 or no visible GPU)")
@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="needs TensorRT 10/11 (pip tensorrt)")
def test_dynamic_engine_runs_every_size_on_a_gpu(tmp_path: Path) -> None:
    """One engine, three sizes through SwinEngine (plugin kernels at their launch params) against the unfused model;
    a size outside the range is refused before TensorRT sees it."""
    from pipeline.runtime import SwinEngine

    unfused, fused = tiny_models(True)
    path = export_onnx(fused, tmp_path / "model.onnx", max_batch=4, sizes=TINY_RANGE)
    engine_path = tmp_path / "dynamic.engine"
    build_engine(path, engine_path, plugin_library=plugin_library_for(str(DEVICE.sm)), batch=(1, 2, 4),
                 backend="tensorrt", sm=DEVICE.sm, sizes=TINY_RANGE)
    with SwinEngine(engine_path) as engine:
        for size in ((40, 40), (157, 41), (160, 160)):
            images = torch.randn(3, 3, *size, generator=torch.Generator().manual_seed(size[1]))
            with torch.no_grad():
                expected = unfused(images)
            outputs = engine.infer(images.numpy())
            for name, e in zip(engine.output_names, expected, strict=True):
                assert relative_error(e.numpy(), outputs[name]) <= 1e-4, (size, name)
        with pytest.raises(PipelineError, match="takes images of 40x40 to 160x160"):
            engine.infer(np.zeros((1, 3, 161, 100), np.float32))


def test_a_missing_ranged_engine_names_the_command_that_builds_it(tmp_path: Path) -> None:
    from pipeline.serving.triton import find_engine

    recipe = EngineRecipe(features_only=True, img_range=SizeRange.parse("320x320:800x1344:1344x1344"),
                          precision="fp32")
    with pytest.raises(PipelineError) as missing:
        find_engine(recipe, tmp_path)
    assert "no fp32 engine of the Swin-T backbone over sizes 320x320:800x1344:1344x1344" in str(missing.value)
    assert str(missing.value).endswith("`make engine VARIANT=T PRECISION=fp32 FEATURES=1 "
                                       f"IMG_SIZE=320x320:800x1344:1344x1344 BUILD_DIR={tmp_path}`")
