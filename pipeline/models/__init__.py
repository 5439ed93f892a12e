"""Swin Transformer models: ``build_swin`` and checkpoint loading."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.common.variants import VARIANTS, SwinConfig, variant_config
from pipeline.models.checkpoint import classifier_classes, load_checkpoint, read_state_dict
from pipeline.models.random_weights import perturb_weights_
from pipeline.models.swin import SwinTransformer

__all__ = ["VARIANTS", "SwinConfig", "SwinTransformer", "build_swin", "load_checkpoint", "perturb_weights_",
           "variant_config"]


log = logging.getLogger(__name__)


def build_swin(variant: str, checkpoint: str | Path | Mapping[str, torch.Tensor] | None = None,
               img_size: int | None = None, features_only: bool = False, fused_attention: bool = False) -> nn.Module:
    """Build Swin-``variant`` (T, S, B, L, B384, L384) in eval mode, optionally loading a checkpoint.

    ``img_size`` only records the resolution the model is meant for (export uses it); the model
    itself accepts any input size. ``fused_attention``: each block runs LN → qkv Linear →
    ``torch.ops.swin.window_attention`` → proj Linear (the surgered graph's data flow; ``pipeline.kernels.ops``), with
    the same parameter names, so the same checkpoints and state dicts load; its ONNX export holds
    ``SwinWindowAttention`` nodes directly. A checkpoint's classifier head sets the number of classes (a fine-tuned
    model's, or ImageNet-22K's 21841); without a checkpoint it is ImageNet-1k's 1000.
    """
    config = variant_config(variant)
    if img_size is not None:
        config = dataclasses.replace(config, img_size=img_size)
    state_dict = read_state_dict(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    classes = None if state_dict is None or features_only else classifier_classes(state_dict)
    if classes is not None and classes != config.num_classes:
        log.info("Swin-%s with %d classes, as the checkpoint's classifier head has", variant.upper(), classes)
        config = dataclasses.replace(config, num_classes=classes)
    model = SwinTransformer(config, features_only=features_only, fused_attention=fused_attention)
    model.variant = variant.upper()
    if state_dict is not None:
        load_checkpoint(model, state_dict,
                        source=str(checkpoint) if isinstance(checkpoint, (str, Path)) else None)
    return model.eval()
