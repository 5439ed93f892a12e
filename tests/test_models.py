"""The model against independent implementations: timm and torchvision, with weights copied across."""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from conftest import NARROWING, max_abs_diff, narrow_config, save_shaped_checkpoint, small_image_size, stage_resolutions
from safetensors.torch import save_file

from pipeline.common.checkpoint_format import checkpoint_format
from pipeline.common.checkpoint_layout import check_checkpoint
from pipeline.common.errors import PipelineError
from pipeline.common.variants import VARIANTS, SwinConfig
from pipeline.make import EngineRecipe
from pipeline.models import SwinTransformer, build_swin, load_checkpoint, perturb_weights_
from pipeline.models.checkpoint import read_state_dict

#: timm's model of each variant. A variant added to VARIANTS fails the tests below until it is named here.
TIMM_NAMES = {
    "T": "swin_tiny_patch4_window7_224",
    "S": "swin_small_patch4_window7_224",
    "B": "swin_base_patch4_window7_224",
    "L": "swin_large_patch4_window7_224",
    "B384": "swin_base_patch4_window12_384",
    "L384": "swin_large_patch4_window12_384",
}


def timm_name(variant: str) -> str:
    assert variant in TIMM_NAMES, f"name timm's model of Swin-{variant} in TIMM_NAMES"
    return TIMM_NAMES[variant]


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_parameter_count(config: SwinConfig, features_only: bool = False) -> int:
    """The parameters the paper's architecture has, counted layer by layer from the config alone."""
    c, p = config.embed_dim, config.patch_size
    count = 3 * p * p * c + c + 2 * c  # patch embedding: conv and LayerNorm
    for stage, (depth, heads) in enumerate(zip(config.depths, config.num_heads, strict=True)):
        c, m = config.stage_dim(stage), config.window_size
        hidden = int(c * config.mlp_ratio)
        attention = (3 * c * c + 3 * c) + (c * c + c) + (2 * m - 1) ** 2 * heads  # qkv, proj, bias table
        mlp = (c * hidden + hidden) + (hidden * c + c)
        count += depth * (2 * c + attention + 2 * c + mlp)  # norm1, norm2
        if stage < len(config.depths) - 1:
            count += 2 * 4 * c + 4 * c * 2 * c  # patch merging: LayerNorm(4C), Linear(4C → 2C) without bias
    if not features_only:
        count += 2 * c + c * config.num_classes + config.num_classes  # final LayerNorm, head
    return count


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_architecture_matches_config_and_timm(variant: str) -> None:
    """Built on the meta device (no weights, no compute): layer by layer against the config and timm's model, and
    timm's state dict loads (names mapped, every shape checked)."""
    config = VARIANTS[variant]
    size = small_image_size(config)
    with torch.device("meta"):
        reference = timm.create_model(timm_name(variant))
        model = build_swin(variant, checkpoint=reference.state_dict())
        backbone = build_swin(variant, features_only=True)
        features = backbone(torch.empty(1, 3, *size))
    assert parameter_count(model) == expected_parameter_count(config) == parameter_count(reference)
    assert parameter_count(backbone) == expected_parameter_count(config, features_only=True)
    assert [tuple(f.shape) for f in features] == [
        (1, config.stage_dim(i), h, w) for i, (h, w) in enumerate(stage_resolutions(config, size))]
    assert len(model.layers) == len(reference.layers) == len(config.depths)
    m = config.window_size
    for stage, (ours, theirs) in enumerate(zip(model.layers, reference.layers, strict=True)):
        assert len(ours.blocks) == len(theirs.blocks) == config.depths[stage]
        assert (ours.downsample is None) == (stage == len(config.depths) - 1)
        for j, (block, timm_block) in enumerate(zip(ours.blocks, theirs.blocks, strict=True)):
            heads, dim = config.num_heads[stage], config.stage_dim(stage)
            assert block.attn.num_heads == timm_block.attn.num_heads == heads
            assert block.attn.qkv.in_features == timm_block.attn.qkv.in_features == dim
            assert block.attn.relative_position_bias_table.shape == ((2 * m - 1) ** 2, heads)
            assert block.window_size == m and timm_block.window_size == (m, m)
            assert block.shift_size == (m // 2 if j % 2 else 0)
    assert model.head.out_features == reference.num_classes == config.num_classes


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_timm(variant: str) -> None:
    """timm's model of the variant at 1/NARROWING width (timm's own depths, heads, window and image size; full width
    costs ~10 s a variant on 2 cores, and the architecture test checks it), its weights loaded into ours."""
    config = narrow_config(variant)
    reference = perturb_weights_(timm.create_model(timm_name(variant), embed_dim=config.embed_dim))
    model = load_checkpoint(SwinTransformer(config).eval(), reference.state_dict())
    assert config.embed_dim * NARROWING == VARIANTS[variant].embed_dim
    size = config.img_size
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


def test_official_checkpoint_file_with_derived_buffers(tmp_path, caplog) -> None:
    """Official .pth files wrap the state dict in {'model': ...} and carry index/mask buffers."""
    source = perturb_weights_(build_swin("T"))
    state = dict(source.state_dict())
    state["layers.0.blocks.1.attn_mask"] = torch.zeros(64, 49, 49)
    state["layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    torch.save({"model": state, "epoch": 300}, tmp_path / "swin_tiny.pth")
    caplog.set_level(logging.INFO, logger="pipeline.models.checkpoint")
    loaded = build_swin("T", checkpoint=str(tmp_path / "swin_tiny.pth"))
    assert caplog.messages == [f"checkpoint: official Swin format, {len(list(source.parameters()))} tensors loaded "
                               f"from {tmp_path / 'swin_tiny.pth'} (Swin-T)"]
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


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_a_fine_tuned_checkpoints_head_sets_the_number_of_classes(source: str, tmp_path, caplog) -> None:
    """A model fine-tuned on its own classes (the usual thing to deploy) or an ImageNet-22K one used to be refused
    as 'does not fit Swin-T' for its head's shape alone."""
    if source == "timm":
        reference = timm.create_model("swin_tiny_patch4_window7_224", num_classes=10)
    else:
        reference = torchvision.models.swin_t(num_classes=37)
    reference = perturb_weights_(reference).eval()
    torch.save(reference.state_dict(), tmp_path / "fine_tuned.pth")
    caplog.set_level(logging.INFO, logger="pipeline.models.checkpoint")
    model = build_swin("T", checkpoint=tmp_path / "fine_tuned.pth")
    # Every parameter of the reference is one tensor loaded; its derived buffers are not.
    assert (f"checkpoint: {source} format, {len(list(reference.parameters()))} tensors loaded from "
            f"{tmp_path / 'fine_tuned.pth'} (Swin-T)") in caplog.messages
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        logits = model(images)
        assert logits.shape == (2, 10 if source == "timm" else 37)
        assert max_abs_diff(logits, reference(images)) <= 1e-4
    # A backbone takes the same checkpoint without its head and final norm.
    assert build_swin("T", checkpoint=reference.state_dict(), features_only=True).head is None
    assert (f"checkpoint: {source} format, {len(list(reference.parameters())) - 4} tensors loaded from a state dict "
            "(Swin-T, features only)") == caplog.messages[-1]


def test_checkpoint_of_another_variant_is_named_in_one_short_line(tmp_path) -> None:
    """From the file's shapes alone (what validation runs, before any stage) and again when a state dict loads."""
    path = save_shaped_checkpoint("S", tmp_path / "swin_s.pth")
    with pytest.raises(PipelineError) as error:
        check_checkpoint(path, "t")
    assert str(error.value) == (f"checkpoint {path} holds Swin-S weights (embed 96, depths 2-2-18-2, heads 3-6-12-24, "
                                "window 7), not Swin-T's; pass VARIANT=S (--variant S) or a Swin-T checkpoint")
    assert len(str(error.value).replace(str(path), "swin_small_patch4_window7_224.pth")) < 200  # the official name
    with torch.device("meta"):
        small = timm.create_model("swin_small_patch4_window7_224").state_dict()  # timm's names
    with pytest.raises(PipelineError, match=r"^the given state dict holds Swin-S weights .* not Swin-T's; pass "):
        build_swin("T", checkpoint=small)


def test_the_window_not_the_image_size_decides_the_variant(tmp_path) -> None:
    """A 384 checkpoint (window 12) is Swin-B384 at any image size; a backbone takes a checkpoint with or without
    its classifier."""
    path = save_shaped_checkpoint("B384", tmp_path / "swin_b384.pth")
    with pytest.raises(PipelineError, match=r"Swin-B384 weights \(.* window 12\), not Swin-B's; pass VARIANT=B384"):
        EngineRecipe(variant="B", img_size=(384, 384), checkpoint=path).validate(until="export")
    EngineRecipe(variant="B384", img_size=(224, 224), checkpoint=path, features_only=True).validate(until="export")
    headless = {k: v for k, v in torch.load(path, weights_only=True)["model"].items()
                if not k.startswith(("head.", "norm."))}
    torch.save(headless, tmp_path / "backbone.pth")
    EngineRecipe(variant="B384", checkpoint=tmp_path / "backbone.pth", features_only=True).validate(until="export")
    narrow = SwinTransformer(narrow_config("T")).state_dict()
    with pytest.raises(PipelineError, match=r"holds weights of no Swin variant \(embed 24, depths 2-2-6-2, heads "
                                            r"3-6-12-24, window 7; variants: T, S, .*\); pass a Swin-T checkpoint"):
        build_swin("T", checkpoint=narrow)


def test_checkpoint_with_missing_keys_names_them() -> None:
    state = build_swin("T").state_dict()
    del state["head.weight"]
    with pytest.raises(PipelineError, match=r"missing 1: \['head\.weight'\]"):
        load_checkpoint(build_swin("T"), state)


def test_a_state_dict_of_the_right_variant_with_a_wrong_shape_names_the_tensor() -> None:
    state = build_swin("T").state_dict()
    state["layers.1.blocks.0.mlp.fc1.weight"] = torch.zeros(384, 100)
    with pytest.raises(PipelineError, match=r"shape mismatch 1: \[.layers\.1\.blocks\.0\.mlp\.fc1\.weight \[384,"):
        build_swin("T", checkpoint=state)


def test_unreadable_checkpoint(tmp_path) -> None:
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"cannot read checkpoint .*not a torch checkpoint or a \.safetensors"):
        build_swin("T", checkpoint=str(bad))
    with pytest.raises(PipelineError, match="does not exist"):
        build_swin("T", checkpoint=str(tmp_path / "missing.pth"))


def test_checkpoint_format_is_read_from_the_content_and_truncation_is_caught(tmp_path) -> None:
    state = {"a": torch.randn(3, 4), "b": torch.zeros(2, dtype=torch.long)}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, tmp_path / "renamed.pth")  # a safetensors file under a .pth name still loads as safetensors
    save_file(state, tmp_path / "w.safetensors")
    formats = {path.name: checkpoint_format(path) for path in sorted(tmp_path.iterdir())}
    assert formats == {"legacy.pth": "torch", "renamed.pth": "safetensors", "w.safetensors": "safetensors",
                       "zip.pth": "torch"}
    for name in formats:
        loaded = read_state_dict(tmp_path / name)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    # An interrupted download: the zip loses its central directory, the safetensors file its last tensor's bytes.
    for name, kind in (("zip.pth", "torch \\(zip\\)"), ("w.safetensors", ".safetensors")):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[:-4])
        with pytest.raises(PipelineError, match=f"{cut}: it is a truncated or corrupt {kind} file"):
            checkpoint_format(cut)
    for content in (b"", b"{}", (50).to_bytes(8, "little") + b"{}", b"root:x:0:0:root:/root:/bin/bash\n"):
        (tmp_path / "other").write_bytes(content)
        with pytest.raises(PipelineError, match=r"not a torch checkpoint or a \.safetensors file"):
            checkpoint_format(tmp_path / "other")


class RunsCode:
    """What a malicious checkpoint pickles: loading it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_pickles_that_torch_save_did_not_write_or_that_run_code_are_named_not_run(tmp_path) -> None:
    """Validation (shapes only) and loading alike, with no warning; a plain pickle of data is told from one that
    imports a callable, which is named."""
    marker, tensors = tmp_path / "ran", {"a": torch.randn(2, 3)}
    for name, content, protocol in (("payload.pkl", {"model": tensors, "x": RunsCode(marker)}, None),
                                    ("payload_v2.pkl", RunsCode(marker), 2), ("tensors.pkl", tensors, None),
                                    ("arrays.pkl", {k: v.numpy() for k, v in tensors.items()}, 2)):
        (tmp_path / name).write_bytes(pickle.dumps(content, protocol=protocol))
    torch.save({"model": tensors, "hook": RunsCode(marker)}, tmp_path / "payload.pth")
    code = (f": refused, loading it would run code (it imports {os.system.__module__}.system), which a safe load never "
            "does; re-save only the state dict with torch.save(model.state_dict()) or safetensors")
    plain = (": it is a plain pickle (pickle.dump), not torch.save's format; re-save the state dict with "
             "torch.save(state_dict) or safetensors' save_file")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, reason in (("payload.pkl", code), ("payload_v2.pkl", code), ("payload.pth", code),
                             ("tensors.pkl", plain), ("arrays.pkl", plain)):
            for check in (lambda path: check_checkpoint(path, "T"), read_state_dict):
                with pytest.raises(PipelineError) as error:
                    check(tmp_path / name)
                assert str(error.value) == f"cannot read checkpoint {tmp_path / name}{reason}"
    assert not marker.exists() and caught == []


def test_unknown_variant() -> None:
    with pytest.raises(PipelineError, match=r"unknown Swin variant 'X'.*T, S, B, L, B384, L384"):
        build_swin("X")
