"""Which Swin a state dict is, from its names and shapes alone (no torch): official, timm and torchvision names
mapped onto the official microsoft/Swin-Transformer layout (docs/design.md §6), and the architecture the shapes
have, so a checkpoint of another variant is named before any stage runs."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Generic, TypeVar

from pipeline.common.checkpoint_format import checkpoint_shapes
from pipeline.common.errors import PipelineError
from pipeline.common.variants import VARIANTS, SwinConfig, variant_config

T = TypeVar("T")

#: How the log names each layout.
LAYOUT_NAMES = {"official": "official Swin", "timm": "timm", "torchvision": "torchvision"}
# Buffers that official and torchvision checkpoints carry but that the model derives itself.
_DERIVED_BUFFERS = re.compile(r"(relative_position_index|attn_mask)$")
_PREFIXES = ("module.", "backbone.")


@dataclasses.dataclass(frozen=True)
class OfficialNames(Generic[T]):
    """A state dict (of tensors or of shapes) under official names, and the layout it came in."""

    layout: str
    state_dict: dict[str, T]


def _official_name(name: str, layout: str) -> str:
    if layout == "torchvision":
        name = re.sub(r"^features\.0\.0\.", "patch_embed.proj.", name)
        name = re.sub(r"^features\.0\.2\.", "patch_embed.norm.", name)
        name = re.sub(r"^features\.(\d+)\.(\d+)\.",
                      lambda m: f"layers.{(int(m[1]) - 1) // 2}.blocks.{m[2]}.", name)
        name = re.sub(r"^features\.(\d+)\.", lambda m: f"layers.{int(m[1]) // 2 - 1}.downsample.", name)
        name = re.sub(r"\.mlp\.0\.", ".mlp.fc1.", name)
        name = re.sub(r"\.mlp\.3\.", ".mlp.fc2.", name)
    elif layout == "timm":
        name = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", name)
        name = re.sub(r"^head\.fc\.", "head.", name)
    return name


def detect_layout(names: Mapping[str, object]) -> str:
    """``official``, ``timm`` or ``torchvision``, from where patch merging and the patch embedding live."""
    keys = set(names)
    if "features.0.0.weight" in keys:
        return "torchvision"
    if any(k.startswith("layers.3.downsample.") for k in keys):
        return "timm"
    if any(k.startswith("layers.0.downsample.") for k in keys):
        return "official"
    raise PipelineError("checkpoint is not a Swin Transformer state dict: found neither torchvision "
                        "'features.0.0.weight' nor official/timm 'layers.N.downsample.*' keys "
                        f"(first keys: {sorted(keys)[:5]})")


def to_official_names(state_dict: Mapping[str, T]) -> OfficialNames[T]:
    """Strip wrapper prefixes, map to official names and drop buffers the model derives itself."""
    stripped = {}
    for name, value in state_dict.items():
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        stripped[name] = value
    layout = detect_layout(stripped)
    return OfficialNames(layout, {_official_name(n, layout): v for n, v in stripped.items()
                                  if not _DERIVED_BUFFERS.search(n)})


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What a Swin state dict's shapes fix: not the image size (relative position tables fix the window only)."""

    embed_dim: int | None
    depths: tuple[int, ...]
    num_heads: tuple[int | None, ...]
    window_size: int | None

    @classmethod
    def of(cls, shapes: Mapping[str, tuple[int, ...] | None]) -> Architecture:
        """From a state dict's shapes under official names (None where a shape is unknown)."""
        depths = tuple(1 + max((int(m[1]) for k in shapes if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.", k))),
                               default=-1) for i in range(4))
        tables = [shapes.get(f"layers.{i}.blocks.0.attn.relative_position_bias_table") for i in range(4)]
        embed = shapes.get("patch_embed.proj.weight")
        return cls(embed_dim=embed[0] if embed else None, depths=depths,
                   num_heads=tuple(table[1] if table else None for table in tables),
                   window_size=(math.isqrt(tables[0][0]) + 1) // 2 if tables[0] else None)

    @classmethod
    def of_config(cls, config: SwinConfig) -> Architecture:
        return cls(config.embed_dim, config.depths, config.num_heads, config.window_size)

    @property
    def known(self) -> bool:
        return None not in (self.embed_dim, self.window_size, *self.num_heads)

    def variants(self) -> list[str]:
        """The variants (:data:`pipeline.common.variants.VARIANTS`) with this architecture."""
        return [name for name, config in VARIANTS.items() if Architecture.of_config(config) == self]

    def __str__(self) -> str:
        return (f"embed {self.embed_dim}, depths {'-'.join(map(str, self.depths))}, heads "
                f"{'-'.join(map(str, self.num_heads))}, window {self.window_size}")


def check_fits(found: Architecture, wanted: Architecture, wanted_name: str, source: str) -> None:
    """A one-line PipelineError unless ``found`` (a checkpoint's) is ``wanted`` or unknown: which variant the
    checkpoint is, and what to pass instead."""
    if found == wanted or not found.known:
        return
    matches = found.variants()
    if matches:
        raise PipelineError(f"{source} holds Swin-{'/'.join(matches)} weights ({found}), not {wanted_name}'s; pass "
                            f"VARIANT={matches[0]} (--variant {matches[0]}) or a {wanted_name} checkpoint")
    raise PipelineError(f"{source} holds weights of no Swin variant ({found}; variants: {', '.join(VARIANTS)}); "
                        f"pass a {wanted_name} checkpoint")


def check_checkpoint(path: str | Path, variant: str) -> None:
    """What validation runs: the file is a readable, safe checkpoint of Swin-``variant``, judged from the tensors'
    names and shapes alone (no torch import, no tensor read)."""
    mapped = to_official_names(checkpoint_shapes(path))
    check_fits(Architecture.of(mapped.state_dict), Architecture.of_config(variant_config(variant)),
               f"Swin-{variant.upper()}", f"checkpoint {path}")
