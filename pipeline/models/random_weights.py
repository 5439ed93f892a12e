"""Random weights that behave like distinct trained tensors, for testing the pipeline without downloads."""

from __future__ import annotations

import torch
from torch import nn


def perturb_weights_(model: nn.Module, seed: int = 0, std: float = 0.02) -> nn.Module:
    """Add N(0, std) to every floating-point tensor of ``model`` in place; return it in eval mode.

    Fresh initializations repeat tensors (LayerNorm ones/zeros, identical biases) and exporters merge identical
    initializers, which would hide name-mapping and graph-matching mistakes (docs/design.md §5b).
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.randn(tensor.shape, generator=generator) * std)
    return model.eval()
