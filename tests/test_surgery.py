"""Window-attention surgery on our, timm and torchvision exports, checked end to end with the reference op."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch
from conftest import assert_matches_pytorch, expected_blocks, stage_resolutions, tiny_timm_swin, tiny_torchvision_swin

from pipeline.common.compare import relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.onnx_io import ort_session
from pipeline.kernels.reference import PLUGIN_DOMAIN, PLUGIN_OP
from pipeline.stages.export import export_onnx
from pipeline.stages.surgery import SurgeryReport, replace_window_attention

#: Ops that only the replaced regions contain in these exports: roll, window partition, padding, mask.
REGION_OPS = {"Softmax", "Pad", "Slice", "Concat", "Squeeze", "Unsqueeze", "Gather", "Split"}


def plugin_nodes(path: Path) -> list[onnx.NodeProto]:
    return [n for n in onnx.load(str(path)).graph.node if n.op_type == PLUGIN_OP]


def export_and_surger(model: torch.nn.Module, folder: Path, size, max_batch: int) -> tuple[Path, SurgeryReport]:
    onnx_path = export_onnx(model, folder / "model.onnx", img_size=size, max_batch=max_batch)
    report = replace_window_attention(onnx_path, folder / "model.swin.onnx")
    return folder / "model.swin.onnx", report


def test_swin_t_report_and_structure(swin_t_onnx) -> None:
    _, swin_path, report = swin_t_onnx
    assert (report.blocks_found, report.blocks_replaced, report.blocks_shifted) == (12, 12, 5)
    assert [(s.resolution, s.num_heads, s.blocks, s.shifted) for s in report.stages] == [
        ((56, 56), 3, 2, 1), ((28, 28), 6, 2, 1), ((14, 14), 12, 6, 3), ((7, 7), 24, 2, 0)]
    assert report.max_rel_error < 1e-5
    ops = collections.Counter(n.op_type for n in onnx.load(str(swin_path)).graph.node)
    assert ops[PLUGIN_OP] == 12
    assert not REGION_OPS & set(ops), f"left over from the replaced regions: {REGION_OPS & set(ops)}"
    assert report.nodes_after == dict(sorted(ops.items()))
    first = plugin_nodes(swin_path)[1]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in first.attribute}
    assert first.domain == PLUGIN_DOMAIN and len(first.input) == 3
    assert attrs["height"] == attrs["width"] == 56 and attrs["shift_size"] == 3 and attrs["num_heads"] == 3
    assert attrs["window_size"] == 7 and abs(attrs["scale"] - 32**-0.5) < 1e-7
    assert attrs["plugin_version"] == b"1"


def test_swin_t_surgered_matches_pytorch(swin_t, swin_t_onnx) -> None:
    assert_matches_pytorch(swin_t, swin_t_onnx[1], (224, 224), (1, 3))


def test_running_twice_changes_nothing(swin_t_onnx, tmp_path) -> None:
    report = replace_window_attention(swin_t_onnx[1], tmp_path / "again.onnx")
    assert (report.blocks_replaced, report.blocks_already_replaced) == (0, 12)
    assert (tmp_path / "again.onnx").read_bytes() == swin_t_onnx[1].read_bytes()


def test_every_variant(variant_export, tmp_path) -> None:
    """Each variant's export (narrowed, padded in every stage, batch 1): every block replaced with the parameters
    the config gives, and onnxruntime still computes what the export and PyTorch compute."""
    config, size = variant_export.config, variant_export.img_size
    report = replace_window_attention(variant_export.onnx_path, tmp_path / "model.swin.onnx")
    expected = expected_blocks(config, size)
    assert report.blocks_found == report.blocks_replaced == len(expected) == sum(config.depths)
    assert report.blocks_shifted == sum(b["shift_size"] > 0 for b in expected)
    fields = ("height", "width", "channels", "num_heads", "window_size", "shift_size")
    assert [{f: getattr(b, f) for f in fields} for b in report.blocks] == expected
    m = config.window_size
    assert [(s.resolution, s.channels, s.blocks, s.shifted, s.padded) for s in report.stages] == [
        ((h, w), config.stage_dim(i), depth, depth // 2 if min(h, w) > m else 0, bool(h % m or w % m))
        for i, ((h, w), depth) in enumerate(zip(stage_resolutions(config, size), config.depths, strict=True))]
    assert report.max_rel_error <= 1e-4

    # Pad and Slice stay: patch embedding and patch merging pad at this size.
    nodes = onnx.load(str(tmp_path / "model.swin.onnx")).graph.node
    assert not any(n.op_type == "Softmax" for n in nodes)
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes if n.op_type == PLUGIN_OP]
    assert [{f: a[f] for f in fields if f != "channels"} for a in attrs] == [
        {f: b[f] for f in fields if f != "channels"} for b in expected]
    head_dims = [b["channels"] // b["num_heads"] for b in expected]
    assert all(abs(a["scale"] - d**-0.5) < 1e-7 for a, d in zip(attrs, head_dims, strict=True))

    feeds = {"images": variant_export.images.numpy()}
    surgered = ort_session(tmp_path / "model.swin.onnx").run(None, feeds)
    original = ort_session(variant_export.onnx_path).run(None, feeds)
    for torch_out, before, after in zip(variant_export.expected, original, surgered, strict=True):
        assert relative_error(before, after) <= 1e-4
        assert relative_error(torch_out, after) <= 1e-4


def test_timm_export_with_dynamic_batch(tmp_path) -> None:
    """(A static batch is what every test_every_variant export has.)"""
    model = tiny_timm_swin()
    swin_path, report = export_and_surger(model, tmp_path, 112, max_batch=4)
    # The last stage is one window: timm (like official Swin) does not shift there.
    assert (report.blocks_replaced, report.blocks_shifted) == (6, 2)
    assert_matches_pytorch(model, swin_path, (112, 112), (1, 3))


def test_torchvision_padded_export_after_constant_folding(tmp_path) -> None:
    """torchvision computes the shift mask at run time; surgery folds it first. 128×144 pads every stage (32×36,
    16×18, 8×9 → 35×42, 21×21, 14×14) and the batch is dynamic."""
    model = tiny_torchvision_swin()
    swin_path, report = export_and_surger(model, tmp_path, (128, 144), max_batch=3)
    assert (report.blocks_replaced, report.blocks_shifted) == (6, 3)
    assert [s.padded for s in report.stages] == [True, True, True]
    assert report.nodes_before["Softmax"] == 6
    assert_matches_pytorch(model, swin_path, (128, 144), (1, 3))


def test_unmatched_region_fails_naming_the_node(swin_t_onnx, tmp_path) -> None:
    """Halve the shift mask of one block: it looks like window attention but no longer is."""
    graph = gs.import_onnx(onnx.load(str(swin_t_onnx[0])))
    unsqueeze = next(n for n in graph.nodes if n.op == "Unsqueeze" and isinstance(n.inputs[0], gs.Constant)
                     and n.inputs[0].values.ndim == 3)
    unsqueeze.inputs[0] = gs.Constant("halved_mask", unsqueeze.inputs[0].values * 0.5)
    broken = tmp_path / "broken.onnx"
    onnx.save(gs.export_onnx(graph), str(broken))
    with pytest.raises(PipelineError, match=r"Softmax node 'node_softmax_\d+' .* not a relative-position bias plus "
                                            r"a Swin shift mask for 56x56"):
        replace_window_attention(broken, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_timm_roll_before_pad_is_refused(tmp_path) -> None:
    """timm shifts before padding; the plugin (official order) would compute something else, so surgery refuses."""
    model = tiny_timm_swin((80, 96), (2, 2))
    onnx_path = export_onnx(model, tmp_path / "model.onnx", img_size=(80, 96), max_batch=1)
    with pytest.raises(PipelineError, match=r"would change its output by .* timm shifts before padding"):
        replace_window_attention(onnx_path, tmp_path / "out.onnx")


def test_graph_without_swin_blocks(tmp_path) -> None:
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    onnx_path = export_onnx(conv, tmp_path / "conv.onnx", img_size=16, max_batch=2)
    with pytest.raises(PipelineError, match="contains no Swin window-attention blocks"):
        replace_window_attention(onnx_path, tmp_path / "out.onnx")


def test_missing_and_unreadable_input(tmp_path) -> None:
    with pytest.raises(PipelineError, match="does not exist; run the export stage first"):
        replace_window_attention(tmp_path / "nope.onnx", tmp_path / "out.onnx")
    (tmp_path / "junk.onnx").write_text("hello")
    with pytest.raises(PipelineError, match=r"cannot read .*junk\.onnx as ONNX"):
        replace_window_attention(tmp_path / "junk.onnx", tmp_path / "out.onnx")


def swin_blocks(model: torch.nn.Module) -> int:
    """How many Swin blocks the PyTorch model has (timm and torchvision both name the class SwinTransformerBlock)."""
    return sum(type(m).__name__ == "SwinTransformerBlock" for m in model.modules())


def test_torchscript_export(torchscript_export, tmp_path) -> None:
    """The TorchScript exporter computes every reshape target at run time from Shape ops on the activations; once
    folded, every block is rewritten with the model's own resolutions and shifts, and the graph computes what
    PyTorch computes (at batches 1 and 3 when the batch is dynamic)."""
    export, out = torchscript_export, tmp_path / "model.swin.onnx"
    report = replace_window_attention(export.onnx_path, out)
    assert report.blocks_found == report.blocks_replaced == swin_blocks(export.model) == len(export.blocks)
    assert [(b.height, b.width, b.shift_size) for b in report.blocks] == export.blocks
    assert report.max_rel_error <= 1e-5
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert (ops[PLUGIN_OP], ops["Softmax"]) == (len(export.blocks), 0)
    assert_matches_pytorch(export.model, out, export.img_size, export.batches)


@pytest.mark.parametrize("torchscript_export", [("timm", False)], indirect=True)
def test_softmax_that_is_not_attention_is_kept(torchscript_export, tmp_path) -> None:
    """A Softmax on the logits (no Q·Kᵀ MatMul before it) is no attention block: surgery keeps it."""
    graph = gs.import_onnx(onnx.load(str(torchscript_export.onnx_path)))
    logits = graph.outputs[0]
    probs = gs.Variable("probs", np.float32, logits.shape)
    graph.nodes.append(gs.Node("Softmax", "", {"axis": -1}, [logits], [probs]))
    graph.outputs = [probs]
    onnx.save(gs.export_onnx(graph), str(tmp_path / "probs.onnx"))
    report = replace_window_attention(tmp_path / "probs.onnx", tmp_path / "out.onnx")
    assert report.blocks_found == report.blocks_replaced == len(torchscript_export.blocks)
    assert collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node)["Softmax"] == 1


def test_softmax_without_attention_names_it(tmp_path) -> None:
    """Relu → Softmax with unnamed nodes: no window attention, said so in one line naming the node by its output."""
    nodes = [onnx.helper.make_node("Relu", ["x"], ["r"]), onnx.helper.make_node("Softmax", ["r"], ["y"])]
    io = [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [1, 8]) for name in "xy"]
    model = onnx.helper.make_model(onnx.helper.make_graph(nodes, "relu_softmax", io[:1], io[1:]),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "tiny.onnx"))
    with pytest.raises(PipelineError) as info:
        replace_window_attention(tmp_path / "tiny.onnx", tmp_path / "out.onnx")
    message = str(info.value)
    assert "contains no Swin window-attention blocks (1 Softmax node(s), none between a Q·Kᵀ MatMul" in message
    assert "unnamed Softmax node (output 'y')" in message and "python -m pipeline export" in message
    assert "looks like" not in message and "''" not in message and "\n" not in message


def test_torchscript_opset_13_names_the_remedy(tmp_path) -> None:
    """Below opset 14 ONNX shape inference cannot resolve a reshape target computed from a dynamic batch (a static
    batch works): the one-line error says which exports work instead."""
    model = tiny_timm_swin(56, (2,)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, 56, 56), str(tmp_path / "model.onnx"), dynamo=False,
                          opset_version=13, input_names=["images"], dynamic_axes={"images": {0: "batch"}})
    with pytest.raises(PipelineError) as info:
        replace_window_attention(tmp_path / "model.onnx", tmp_path / "out.onnx")
    message = str(info.value)
    assert "is not Swin window attention as surgery knows it" in message and "no static shape" in message
    assert "torch.onnx.export(dynamo=True), or with dynamo=False at opset_version 14 or later" in message
    assert "\n" not in message and not (tmp_path / "out.onnx").exists()
