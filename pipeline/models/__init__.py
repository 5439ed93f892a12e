"""Swin Transformer models: ``build_swin`` and checkpoint loading."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from pipeline.models.checkpoint import load_checkpoint
from pipeline.models.random_weights import perturb_weights_
from pipeline.models.swin import SwinTransformer
from pipeline.variants import VARIANTS, SwinConfig, variant_config

__all__ = ["VARIANTS", "SwinConfig", "SwinTransformer", "build_swin", "load_checkpoint", "perturb_weights_",
           "variant_config"]


def build_swin(variant: str, checkpoint: str | Path | None = None, img_size: int | None = None,
               features_only: bool = False, fused_attention: bool = False) -> nn.Module:
    """Build Swin-``variant`` (T, S, B, L, B384, L384) in eval mode, optionally loading a checkpoint.

    ``img_size`` only records the resolution the model is meant for (export uses it); the model
    itself accepts any input size. ``fused_attention``: each block runs LN → qkv Linear →
    ``torch.ops.swin.window_attention`` → proj Linear (the surgered graph's data flow; ``pipeline.ops``), with the
    same parameter names, so the same checkpoints and state dicts load; its ONNX export holds ``SwinWindowAttention``
    nodes directly.
    """
    config = variant_config(variant)
    if img_size is not None:
        config = SwinConfig(**{**config.__dict__, "img_size": img_size})
    model = SwinTransformer(config, features_only=features_only, fused_attention=fused_attention)
    model.variant = variant.upper()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
