"""The model against independent implementations: timm and torchvision, with weights copied across."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from conftest import max_abs_diff
from safetensors.torch import save_file

from pipeline.errors import PipelineError
from pipeline.models import build_swin, load_checkpoint, perturb_weights_

TIMM_MODELS = [
    ("T", "swin_tiny_patch4_window7_224"),
    ("S", "swin_small_patch4_window7_224"),
    ("B", "swin_base_patch4_window7_224"),
    ("L", "swin_large_patch4_window7_224"),
    ("B384", "swin_base_patch4_window12_384"),
    ("L384", "swin_large_patch4_window12_384"),
]


@pytest.mark.parametrize(("variant", "timm_name"), TIMM_MODELS)
def test_matches_timm(variant: str, timm_name: str) -> None:
    reference = perturb_weights_(timm.create_model(timm_name, pretrained=False))
    model = build_swin(variant, checkpoint=reference.state_dict())
    size = model.config.img_size
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = reference(images), model(images)
    assert actual.shape == (2, 1000)
    assert expected.std() > 0.05  # the comparison is not between two near-constant outputs
    assert max_abs_diff(actual, expected) <= 1e-4


def test_matches_torchvision_swin_t() -> None:
    reference = perturb_weights_(torchvision.models.swin_t())
    model = build_swin("T", checkpoint=reference.state_dict())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert max_abs_diff(model(images), reference(images)) <= 1e-4


def test_padded_backbone_matches_torchvision() -> None:
    """256×320 pads every stage (64×80 → 70×84 ...): torchvision pads after norm1 and before the shift, like us."""
    reference = perturb_weights_(torchvision.models.swin_t())
    backbone = build_swin("T", checkpoint=reference.state_dict(), features_only=True)
    images = torch.randn(1, 3, 256, 320, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        features = backbone(images)
        expected = reference.features(images).permute(0, 3, 1, 2)
    assert [tuple(f.shape) for f in features] == [(1, 96, 64, 80), (1, 192, 32, 40), (1, 384, 16, 20),
                                                  (1, 768, 8, 10)]
    assert max_abs_diff(features[-1], expected) <= 1e-4


def test_features_match_timm_stage_outputs() -> None:
    reference = perturb_weights_(timm.create_model("swin_tiny_patch4_window7_224"))
    backbone = build_swin("T", checkpoint=reference.state_dict(), features_only=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = reference.forward_intermediates(images, intermediates_only=True)  # NCHW stage outputs
        for ours, theirs in zip(backbone(images), expected, strict=True):
            assert ours.shape == theirs.shape
            assert max_abs_diff(ours, theirs) <= 1e-4


def test_shift_disabled_where_resolution_fits_one_window() -> None:
    model = build_swin("T")
    assert [b.effective_shift(7, 7) for b in model.layers[3].blocks] == [0, 0]
    assert [b.effective_shift(14, 14) for b in model.layers[2].blocks[:2]] == [0, 3]


def test_official_checkpoint_file_with_derived_buffers(tmp_path) -> None:
    """Official .pth files wrap the state dict in {'model': ...} and carry index/mask buffers."""
    source = perturb_weights_(build_swin("T"))
    state = dict(source.state_dict())
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    torch.save({"model": state, "epoch": 300}, tmp_path / "swin_tiny.pth")
    loaded = build_swin("T", checkpoint=str(tmp_path / "swin_tiny.pth"))
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_abs_diff(loaded(images), source(images)) == 0.0


def test_safetensors_checkpoint(tmp_path) -> None:
    source = perturb_weights_(torchvision.models.swin_t())
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, tmp_path / "swin_t.safetensors")
    model = build_swin("T", checkpoint=tmp_path / "swin_t.safetensors")
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert max_abs_diff(model(images), source(images)) <= 1e-4


def test_checkpoint_of_another_variant_is_rejected() -> None:
    small = timm.create_model("swin_small_patch4_window7_224").state_dict()
    expected = r"Swin-T .*depths=\(2, 2, 18, 2\), window=7, i\.e\. Swin-S\. unexpected 156: \['layers\.2\.blocks\.6\."
    with pytest.raises(PipelineError, match=expected):
        build_swin("T", checkpoint=small)


def test_checkpoint_with_missing_keys_names_them() -> None:
    state = build_swin("T").state_dict()
    del state["head.weight"]
    with pytest.raises(PipelineError, match=r"missing 1: \['head\.weight'\]"):
        load_checkpoint(build_swin("T"), state)


def test_window12_checkpoint_into_window7_model_is_a_shape_mismatch() -> None:
    with pytest.raises(PipelineError, match=r"shape mismatch .*relative_position_bias_table \[529, 4\]"):
        build_swin("B", checkpoint=build_swin("B384").state_dict())


def test_unreadable_checkpoint(tmp_path) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match="cannot read checkpoint"):
        build_swin("T", checkpoint=str(bad))
    with pytest.raises(PipelineError, match="does not exist"):
        build_swin("T", checkpoint=str(tmp_path / "missing.pth"))


def test_unknown_variant() -> None:
    with pytest.raises(PipelineError, match=r"unknown Swin variant 'X'.*T, S, B, L, B384, L384"):
        build_swin("X")
