"""Shared fixtures: one perturbed random-weight Swin-T, exported and surgered once per session, and one small export
of every variant in ``pipeline.common.variants.VARIANTS`` shared by the export and surgery tests."""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

# Triton decides whether to interpret kernels when it is imported (pipeline.kernels.ops imports it): without a GPU the
# Triton kernel's tests run under its interpreter, on CPU tensors; with one they run it compiled.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pipeline.common.variants import VARIANTS, SwinConfig
from pipeline.models import SwinTransformer, build_swin, perturb_weights_

if TYPE_CHECKING:
    from pipeline.stages.surgery import SurgeryReport

# The native build fixtures (native_libs, plugin_library) live with the ctypes binding they serve.
pytest_plugins = ("plugin_build",)

#: Width divisor of the per-variant exports (head dim 32 → 8; depths, heads and window stay the variant's). Export
#: and surgery time grows with the number of blocks and with the bytes of weights (serialization, checker,
#: onnxruntime sessions), hardly with the image: on a shared 2-core machine Swin-L took ~95 s to export, surger and
#: compare at full width (197M parameters), ~30 s at a quarter.
NARROWING = 4


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def assert_matches_pytorch(model: torch.nn.Module, onnx_path: Path, size: tuple[int, int],
                           batches: tuple[int, ...]) -> None:
    """onnxruntime (``SwinWindowAttention`` through the reference op) computes what ``model`` does, within 1e-4
    (pipeline.common.compare.relative_error), at each batch size."""
    from pipeline.common.compare import relative_error
    from pipeline.common.onnx_io import ort_session

    session = ort_session(onnx_path)
    for batch in batches:
        images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected = model(images)
        expected = [expected] if isinstance(expected, torch.Tensor) else expected
        actual = session.run(None, {"images": images.numpy()})
        for e, a in zip(expected, actual, strict=True):
            assert relative_error(e.numpy(), a) <= 1e-4


def narrow_config(variant: str) -> SwinConfig:
    """Swin-``variant`` (depths, heads, window, patch, MLP ratio) at 1/NARROWING of its width."""
    config = VARIANTS[variant]
    narrow = dataclasses.replace(config, embed_dim=config.embed_dim // NARROWING)
    assert all(narrow.stage_dim(i) % heads == 0 for i, heads in enumerate(narrow.num_heads)), (
        f"Swin-{variant} at 1/{NARROWING} width has channels that its heads do not divide; change NARROWING")
    return narrow


def export_config(variant: str) -> SwinConfig:
    """What the per-variant export tests export: :func:`narrow_config` with at most two blocks a stage (one W-MSA,
    one SW-MSA). The variant's window, heads, head dim ratio and stage layout stay; the 18 blocks of stage 3 of
    S/B/L repeat one pattern that two blocks already exercise, at a third of the export and surgery time."""
    config = narrow_config(variant)
    return dataclasses.replace(config, depths=tuple(min(depth, 2) for depth in config.depths))


def small_image_size(config: SwinConfig) -> tuple[int, int]:
    """A small non-square size at which every stage is padded to the window, the first three are shifted and the
    last one fits in one window (so it is not), the width is no multiple of the patch (patch embedding pads) and
    the first stages' widths are odd (patch merging pads): window 7 128×146 (stages 32×37, 16×19, 8×10, 4×5),
    window 12 208×226 (52×57, 26×29, 13×15, 7×8). Export time hardly depends on it; surgery's does."""
    m, p = config.window_size, config.patch_size
    return p * 4 * (m + 1), p * (4 * (m + 2) + 1) - p // 2


def stage_resolutions(config: SwinConfig, size: tuple[int, int]) -> list[tuple[int, int]]:
    """Each stage's (H, W): the patch embedding and every patch merging round up."""
    height, width = -(-size[0] // config.patch_size), -(-size[1] // config.patch_size)
    resolutions = []
    for _ in config.depths:
        resolutions.append((height, width))
        height, width = -(-height // 2), -(-width // 2)
    return resolutions


def expected_blocks(config: SwinConfig, size: tuple[int, int]) -> list[dict[str, int]]:
    """Every block's attention parameters by the paper's rule: odd blocks shift by window//2, unless the stage fits
    in one window (min(H, W) ≤ window: official Swin drops the shift there)."""
    m = config.window_size
    return [{"height": h, "width": w, "channels": config.stage_dim(stage), "num_heads": heads, "window_size": m,
             "shift_size": m // 2 if j % 2 and min(h, w) > m else 0}
            for stage, ((h, w), depth, heads) in enumerate(zip(stage_resolutions(config, size), config.depths,
                                                                config.num_heads, strict=True))
            for j in range(depth)]


def save_shaped_checkpoint(variant: str, path: Path) -> Path:
    """Swin-``variant``'s state dict (official names) in a torch.save file of a few kilobytes: every tensor a view of
    one zero, which torch.save stores as one element and the view's shape. For what only shapes decide."""
    with torch.device("meta"):
        shapes = {name: tensor.shape for name, tensor in build_swin(variant).state_dict().items()}
    zero = torch.zeros(1)
    torch.save({"model": {name: zero.expand(shape) for name, shape in shapes.items()}}, path)
    return path


@pytest.fixture(scope="session")
def swin_t() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_weights_(build_swin("T"))


@pytest.fixture(scope="session")
def swin_t_onnx(swin_t: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SurgeryReport]:
    """(model.onnx, model.swin.onnx, surgery report) of Swin-T with a dynamic batch up to 4."""
    # Imported here so that the GPU kernel tests also run where onnx-graphsurgeon is not installed.
    from pipeline.stages.export import export_onnx
    from pipeline.stages.surgery import replace_window_attention

    folder = tmp_path_factory.mktemp("swin_t")
    onnx_path = export_onnx(swin_t, folder / "model.onnx", max_batch=4)
    report = replace_window_attention(onnx_path, folder / "model.swin.onnx")
    return onnx_path, folder / "model.swin.onnx", report


@dataclasses.dataclass(frozen=True)
class VariantExport:
    variant: str
    config: SwinConfig  #: of the exported model: the variant's, narrowed and shallow (export_config)
    img_size: tuple[int, int]
    model: torch.nn.Module  #: features-only backbone
    onnx_path: Path  #: batch 1 (static)
    images: torch.Tensor  #: [1, 3, H, W]
    expected: list[np.ndarray]  #: PyTorch's four stage maps for ``images``


@pytest.fixture(scope="session", params=list(VARIANTS))
def variant_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> VariantExport:
    """Every variant exported once: narrowed, features-only, at small_image_size, batch 1.

    Session-scoped and parametrized, so pytest runs the export and surgery tests of one variant together and keeps
    one variant's model alive at a time.
    """
    from pipeline.stages.export import export_onnx

    variant = request.param
    config = export_config(variant)
    size = small_image_size(config)
    torch.manual_seed(0)
    model = perturb_weights_(SwinTransformer(config, features_only=True))
    onnx_path = export_onnx(model, tmp_path_factory.mktemp(f"variant_{variant}") / "model.onnx", img_size=size,
                            max_batch=1)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = [f.numpy() for f in model(images)]
    return VariantExport(variant, config, size, model, onnx_path, images, expected)


def tiny_timm_swin(img_size: int | tuple[int, int] = 112, depths: tuple[int, ...] = (2, 2, 2)) -> torch.nn.Module:
    """timm's Swin code, narrow (embed dim 32, heads 2, 4, 8 by stage), window 7, 10 classes, perturbed weights."""
    import timm

    return perturb_weights_(timm.models.swin_transformer.SwinTransformer(
        img_size=img_size, embed_dim=32, depths=depths, num_heads=(2, 4, 8)[:len(depths)], window_size=7,
        num_classes=10))


def tiny_torchvision_swin(depths: tuple[int, ...] = (2, 2, 2)) -> torch.nn.Module:
    """torchvision's Swin code at the same size as :func:`tiny_timm_swin` (any image size)."""
    import torchvision

    return perturb_weights_(torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=32, depths=list(depths), num_heads=[2, 4, 8][:len(depths)], window_size=[7, 7],
        num_classes=10))


@dataclasses.dataclass(frozen=True)
class TorchScriptExport:
    library: str
    dynamic_batch: bool
    model: torch.nn.Module
    img_size: tuple[int, int]
    onnx_path: Path  #: torch.onnx.export(dynamo=False, opset_version=17), what most tutorials still run
    blocks: list[tuple[int, int, int]]  #: every block's (height, width, shift) as the model computes it

    @property
    def batches(self) -> tuple[int, ...]:
        return (1, 3) if self.dynamic_batch else (1,)


#: Two stages of two blocks (W-MSA then SW-MSA). timm at 112×168 (stages 28×42 and 14×21: multiples of the window,
#: which timm needs); torchvision at 84×112, whose first stage (21×28) is a multiple of the window and whose second
#: (11×14, patch merging rounds up) is padded to 14×14 and still shifted.
TORCHSCRIPT_MODELS = {
    "timm": ((112, 168), [(28, 42, 0), (28, 42, 3), (14, 21, 0), (14, 21, 3)]),
    "torchvision": ((84, 112), [(21, 28, 0), (21, 28, 3), (11, 14, 0), (11, 14, 3)]),
}


@pytest.fixture(scope="session", params=[(lib, dynamic) for lib in TORCHSCRIPT_MODELS for dynamic in (False, True)],
                ids=lambda p: f"{p[0]}-{'dynamic' if p[1] else 'static'}")
def torchscript_export(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TorchScriptExport:
    """A small timm or torchvision Swin exported by the TorchScript exporter at opset 17, batch static (1) or
    dynamic (``dynamic_axes``); shared by the surgery tests of both attention routes."""
    library, dynamic = request.param
    size, blocks = TORCHSCRIPT_MODELS[library]
    torch.manual_seed(0)
    model = (tiny_timm_swin(size, (2, 2)) if library == "timm" else tiny_torchvision_swin((2, 2))).eval()
    path = tmp_path_factory.mktemp(f"torchscript_{library}") / "model.onnx"
    axes = {"images": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated and says so
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, *size), str(path), dynamo=False, opset_version=17,
                          input_names=["images"], output_names=["logits"], dynamic_axes=axes)
    return TorchScriptExport(library, dynamic, model, size, path, blocks)
