"""Load official, timm and torchvision Swin checkpoints (``.pth``/``.pt`` or ``.safetensors``).

Names are mapped onto the official microsoft/Swin-Transformer layout (docs/design.md §6), then the
state dict must match the model exactly: a checkpoint of another variant, or one with missing or
unexpected keys, is rejected with the first offending keys and the variant it looks like.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.checkpoint_format import checkpoint_format
from pipeline.errors import PipelineError
from pipeline.variants import VARIANTS

# Buffers that official and torchvision checkpoints carry but that the model derives itself.
_DERIVED_BUFFERS = re.compile(r"(relative_position_index|attn_mask)$")
_WRAPPER_KEYS = ("model", "state_dict", "model_ema")
_PREFIXES = ("module.", "backbone.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``)."""
    path = Path(path)
    file_format = checkpoint_format(path)
    try:
        if file_format == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message for it advises an unsafe load: never pass that on
        unsupported = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        reason = (f"it pickles the Python object {unsupported[1]}, which a safe load refuses" if unsupported
                  else "it is not a torch checkpoint (or it is corrupt)")
        raise PipelineError(f"cannot read checkpoint {path}: {reason}; pass a .pth holding only tensors (e.g. its "
                            "'model' state dict saved alone with torch.save) or a .safetensors file") from None
    except Exception as exc:  # torch and safetensors raise many types for a corrupt file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot read checkpoint {path}: {first_line}; expected a torch state dict (.pth) "
                            "or a .safetensors file") from None
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise PipelineError(f"checkpoint {path} holds no state dict (a mapping of names to tensors, possibly "
                            f"under one of {list(_WRAPPER_KEYS)})")
    return dict(loaded)


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


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``official``, ``timm`` or ``torchvision``, from where patch merging and the patch embedding live."""
    keys = set(state_dict)
    if "features.0.0.weight" in keys:
        return "torchvision"
    if any(k.startswith("layers.3.downsample.") for k in keys):
        return "timm"
    if any(k.startswith("layers.0.downsample.") for k in keys):
        return "official"
    raise PipelineError("checkpoint is not a Swin Transformer state dict: found neither torchvision "
                        "'features.0.0.weight' nor official/timm 'layers.N.downsample.*' keys "
                        f"(first keys: {sorted(keys)[:5]})")


def to_official_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes, map to official names and drop buffers the model derives itself."""
    stripped = {}
    for name, tensor in state_dict.items():
        for prefix in _PREFIXES:
            name = name.removeprefix(prefix)
        stripped[name] = tensor
    layout = detect_layout(stripped)
    return {_official_name(n, layout): t for n, t in stripped.items() if not _DERIVED_BUFFERS.search(n)}


def describe_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The architecture a (mapped) state dict has, and the variant it matches if any, for error messages."""
    embed = state_dict.get("patch_embed.proj.weight")
    depths = [1 + max((int(m[1]) for k in state_dict if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.", k))),
                      default=-1) for i in range(4)]
    table = state_dict.get("layers.0.blocks.0.attn.relative_position_bias_table")
    window = None if table is None else (round(table.shape[0] ** 0.5) + 1) // 2
    embed_dim = None if embed is None else embed.shape[0]
    matches = [name for name, c in VARIANTS.items()
               if (c.embed_dim, c.depths, c.window_size) == (embed_dim, tuple(depths), window)]
    looks_like = f", i.e. Swin-{'/'.join(matches)}" if matches else ""
    return f"embed_dim={embed_dim}, depths={tuple(depths)}, window={window}{looks_like}"


def classifier_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """How many classes the state dict's classifier head has (official, timm or torchvision names), or None
    without a head: 1000 for ImageNet-1k weights, 21841 for ImageNet-22K ones, a fine-tuned model's own count."""
    head = to_official_names(state_dict).get("head.weight")
    return None if head is None or head.ndim != 2 else int(head.shape[0])


def load_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping[str, torch.Tensor], *,
                    source: str | None = None) -> nn.Module:
    """Load an official, timm or torchvision checkpoint (path or state dict) into ``model``, strictly.
    ``source`` names a state dict in errors (a path names itself)."""
    state_dict = read_state_dict(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    mapped = to_official_names(state_dict)
    if getattr(model, "features_only", False):  # a backbone has no classifier
        mapped = {n: t for n, t in mapped.items() if not n.startswith(("norm.", "head."))}

    expected = model.state_dict()
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    mismatched = [f"{k} {list(mapped[k].shape)} (model: {list(v.shape)})"
                  for k, v in expected.items() if k in mapped and mapped[k].shape != v.shape]
    if missing or unexpected or mismatched:
        variant = getattr(model, "variant", type(model).__name__)
        problems = "; ".join(f"{label} {len(items)}: {items[:3]}" for label, items in
                             (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                             if items)
        source = (f"checkpoint {checkpoint}" if isinstance(checkpoint, (str, Path))
                  else source or "the given state dict")
        raise PipelineError(f"{source} does not fit Swin-{variant} ({describe_checkpoint(expected)}); "
                            f"the checkpoint has {describe_checkpoint(mapped)}. {problems}. "
                            "Pick the variant the checkpoint was trained as.")
    model.load_state_dict(mapped, strict=True)
    return model
