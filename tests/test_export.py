"""ONNX export: structure, dynamic batch, onnxruntime vs PyTorch, and no artifact on failure."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from conftest import stage_resolutions

import pipeline.stages.export
from pipeline.common.compare import relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.onnx_io import ort_session
from pipeline.models import build_swin
from pipeline.stages.export import export_onnx


def test_structure_and_dynamic_batch(swin_t_onnx) -> None:
    model = onnx.load(str(swin_t_onnx[0]))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17
    ops = collections.Counter(n.op_type for n in model.graph.node)
    # 2 per block, patch embedding, 3 patch mergings, the final norm: one node each.
    assert ops["LayerNormalization"] == 2 * 12 + 1 + 3 + 1
    assert ops["Softmax"] == 12
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    props = {p.key: p.value for p in model.metadata_props}
    assert props["swin_trt.variant"] == "T" and props["swin_trt.max_batch"] == "4"


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(swin_t, swin_t_onnx, batch: int) -> None:
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        expected = swin_t(images).numpy()
    actual = ort_session(swin_t_onnx[0]).run(None, {"images": images.numpy()})[0]
    assert np.abs(actual - expected).max() <= 1e-4


def test_every_variant_matches_pytorch(variant_export) -> None:
    """Each variant (narrowed, features-only, padded in every stage, batch 1): structure and onnxruntime."""
    config, size = variant_export.config, variant_export.img_size
    model = onnx.load(str(variant_export.onnx_path))
    ops = collections.Counter(n.op_type for n in model.graph.node)
    blocks, stages = sum(config.depths), len(config.depths)
    assert ops["Softmax"] == blocks
    assert ops["LayerNormalization"] == 2 * blocks + 1 + (stages - 1)  # blocks, patch embedding, patch mergings
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert shapes == [[1, config.stage_dim(i), h, w] for i, (h, w) in enumerate(stage_resolutions(config, size))]
    actual = ort_session(variant_export.onnx_path).run(None, {"images": variant_export.images.numpy()})
    for expected, got in zip(variant_export.expected, actual, strict=True):
        assert expected.std() > 0.1  # not a comparison of near-constant maps
        assert relative_error(expected, got) <= 1e-4


def test_failed_check_leaves_no_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(pipeline.stages.export, "FP32_TOLERANCE", -1.0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    with pytest.raises(PipelineError, match="onnxruntime differs from PyTorch"):
        export_onnx(conv, tmp_path / "model.onnx", img_size=16, max_batch=2)
    assert list(tmp_path.iterdir()) == []


def test_rejects_old_opset(tmp_path) -> None:
    with pytest.raises(PipelineError, match="opset 16 is too old"):
        export_onnx(build_swin("T"), tmp_path / "model.onnx", opset=16)
