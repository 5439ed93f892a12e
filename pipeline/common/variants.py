"""The Swin variants as data (paper Table 7 / official configs), with no dependency on torch.

Kept apart from the model so that checking a variant name, e.g. before any pipeline stage runs, stays instant.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.errors import PipelineError


@dataclass(frozen=True)
class SwinConfig:
    """Hyper-parameters of one Swin variant (paper Table 7 / official configs)."""

    embed_dim: int
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    window_size: int = 7
    img_size: int = 224
    patch_size: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 1000

    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage


VARIANTS: dict[str, SwinConfig] = {
    "T": SwinConfig(96, (2, 2, 6, 2), (3, 6, 12, 24)),
    "S": SwinConfig(96, (2, 2, 18, 2), (3, 6, 12, 24)),
    "B": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32)),
    "L": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48)),
    "B384": SwinConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), window_size=12, img_size=384),
    "L384": SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), window_size=12, img_size=384),
}


def variant_config(variant: str) -> SwinConfig:
    key = variant.upper()
    if key not in VARIANTS:
        raise PipelineError(f"unknown Swin variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]
