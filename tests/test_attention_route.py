"""The ``tensorrt`` attention route (issue 19): window attention as the ONNX Attention op, an engine without a plugin.

The rewrite is checked against onnxruntime running the export and against PyTorch; the engine is built ahead of time
with TensorRT-RTX for SM86 and verified against PyTorch (on onnxruntime without a GPU), never with a mock.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
from conftest import assert_matches_pytorch, expected_blocks

from calib.quantize import find_quantizable_layers
from pipeline.common.attention import ATTENTION_OPSET, ONNX_ATTENTION_OP
from pipeline.common.compare import relative_error
from pipeline.common.onnx_io import ort_session
from pipeline.kernels.reference import PLUGIN_OP
from pipeline.serving.triton import write_model_repository
from pipeline.stages.check import compare_onnx
from pipeline.stages.int8 import ATTENTION_OPS
from pipeline.stages.precision import convert_fp16
from pipeline.stages.surgery import replace_window_attention
from pipeline.stages.verify import verify
from pipeline.tensorrt.build import build_engine
from pipeline.tensorrt.load import check_engine_compatible


def attention_masks(path: Path) -> list[tuple[int, ...]]:
    """The shape of each Attention node's constant mask, in graph order."""
    model = onnx.load(str(path))
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [shapes[n.input[3]] for n in model.graph.node if n.op_type == ONNX_ATTENTION_OP]


@pytest.mark.parametrize("variant_export", ["T", "B384"], indirect=True)
def test_rewrite_matches_onnxruntime_and_pytorch(variant_export, tmp_path) -> None:
    """Narrowed T (window 7) and B384 (window 12), every stage padded, the first three shifted: each block becomes
    one Attention node whose mask covers nW·heads windows, and the graph still computes what PyTorch computes."""
    config, size = variant_export.config, variant_export.img_size
    out = tmp_path / "model.attention.onnx"
    report = replace_window_attention(variant_export.onnx_path, out, attention="tensorrt")
    expected = expected_blocks(config, size)
    assert report.attention == "tensorrt" and report.blocks_replaced == len(expected)
    assert report.blocks_shifted == sum(b["shift_size"] > 0 for b in expected)
    assert report.max_rel_error <= 1e-5
    model = onnx.load(str(out))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert (ops[ONNX_ATTENTION_OP], ops["Softmax"], ops[PLUGIN_OP]) == (len(expected), 0, 0)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", ATTENTION_OPSET)}
    m = config.window_size
    assert attention_masks(out) == [
        (1, -(-b["height"] // m) * -(-b["width"] // m) * b["num_heads"], m * m, m * m) for b in expected]

    feeds = {"images": variant_export.images.numpy()}
    rewritten = ort_session(out).run(None, feeds)
    original = ort_session(variant_export.onnx_path).run(None, feeds)
    for torch_out, before, after in zip(variant_export.expected, original, rewritten, strict=True):
        assert relative_error(before, after) <= 1e-5
        assert relative_error(torch_out, after) <= 1e-4


def test_torchscript_export(torchscript_export, tmp_path) -> None:
    """TorchScript exports (opset 17, batch static or dynamic) take the route too: the version converter raises them
    to the Attention op's opset (timm's ReduceMean takes its axes as an input from 18 on), every block becomes one
    Attention node and the graph still computes what PyTorch computes."""
    export, out = torchscript_export, tmp_path / "model.attention.onnx"
    report = replace_window_attention(export.onnx_path, out, attention="tensorrt")
    assert report.blocks_replaced == len(export.blocks) and report.max_rel_error <= 1e-5
    model = onnx.load(str(out))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert (ops[ONNX_ATTENTION_OP], ops["Softmax"]) == (len(export.blocks), 0)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", ATTENTION_OPSET)}
    heads = [b.num_heads for b in report.blocks]
    assert attention_masks(out) == [(1, -(-h // 7) * -(-w // 7) * n, 49, 49)
                                    for (h, w, _), n in zip(export.blocks, heads, strict=True)]
    assert heads == [2, 2, 4, 4]
    assert_matches_pytorch(export.model, out, export.img_size, export.batches)


def test_swin_t_engine_without_plugin_library(swin_t, swin_t_onnx, tmp_path) -> None:
    """Swin-T (dynamic batch) through check, FP16, a TensorRT-RTX build for SM86 and verification against PyTorch:
    no plugin layer, no plugin library anywhere, and a Triton repository without one."""
    rewritten, typed, engine = (tmp_path / name for name in ("model.swin.onnx", "model.swin.fp16.onnx",
                                                              "swin_t_fp16.engine"))
    replace_window_attention(swin_t_onnx[0], rewritten, attention="tensorrt")
    assert compare_onnx(swin_t_onnx[0], rewritten, (1, 3)).raise_if_failed().worst <= 1e-5
    # INT8 calibration finds the projections around each Attention node as it does around the plugin.
    layers = find_quantizable_layers(onnx.load(str(rewritten)), ATTENTION_OPS)
    roles = collections.Counter(layer.role for layer in layers)
    assert roles == {"patch_embed": 1, "qkv": 12, "proj": 12, "fc1": 12, "fc2": 12, "patch_merging": 3, "head": 1}
    convert_fp16(rewritten, typed)
    metadata = build_engine(typed, engine, plugin_library=None, batch=(1, 2, 4), backend="rtx", sm=86)
    assert (metadata.attention, metadata.plugin, metadata.plugin_layers) == ("tensorrt", None, 0)
    assert metadata.precision == "fp16" and metadata.profile.max[0] == 4
    assert check_engine_compatible(engine, runtimes=[]).plugin_library is None

    report = verify(swin_t, engine, "fp16", onnx_path=typed, image_count=8, batch=4)
    assert report.passed and report.outputs["logits"].cosine_min >= 0.9999

    record = write_model_repository([engine], tmp_path / "triton", model_name="swin_t")
    assert record.plugin_library is None
    assert not list((tmp_path / "triton").rglob("*.so"))
    assert "plugins=" not in (tmp_path / "triton" / "README.md").read_text()

