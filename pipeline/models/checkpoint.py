"""Load official, timm and torchvision Swin checkpoints (``.pth``/``.pt`` or ``.safetensors``).

Names are mapped onto the official microsoft/Swin-Transformer layout (``pipeline.common.checkpoint_layout``), then the
state dict must match the model exactly: a checkpoint of another variant is rejected naming the variant it is, one
with missing or unexpected keys with the first offending keys.
"""

from __future__ import annotations

import logging
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pipeline.common.checkpoint_format import checkpoint_format, checkpoint_shapes, refused_message, unwrap_state_dict
from pipeline.common.checkpoint_layout import LAYOUT_NAMES, Architecture, check_fits, to_official_names
from pipeline.common.errors import PipelineError

log = logging.getLogger(__name__)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors from a ``.safetensors`` file or a torch checkpoint (``weights_only=True``)."""
    path = Path(path)
    checkpoint_shapes(path)  # refuses a file of another kind, or a pickle that would run code, naming what it is
    try:
        if checkpoint_format(path) == "safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        with warnings.catch_warnings():  # e.g. a legacy file's pickle protocol: the error below says what matters
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's message for it advises an unsafe load: never pass that on
        # A global the stubbed read above let pass as torch's own, but torch.load's allowlist has not.
        unsupported = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(exc))
        if unsupported:
            raise PipelineError(refused_message(path, unsupported[1])) from None
        raise PipelineError(f"cannot read checkpoint {path}: it is not a torch checkpoint (or it is corrupt); pass "
                            "a .pth written by torch.save or a .safetensors file") from None
    except Exception as exc:  # torch and safetensors raise many types for a corrupt file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PipelineError(f"cannot read checkpoint {path}: {first_line}; expected a torch state dict (.pth) "
                            "or a .safetensors file") from None
    return dict(unwrap_state_dict(loaded, lambda value: isinstance(value, torch.Tensor), f"checkpoint {path}"))


def _shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in state_dict.items()}


def classifier_classes(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """How many classes the state dict's classifier head has (official, timm or torchvision names), or None
    without a head: 1000 for ImageNet-1k weights, 21841 for ImageNet-22K ones, a fine-tuned model's own count."""
    head = to_official_names(state_dict).state_dict.get("head.weight")
    return None if head is None or head.ndim != 2 else int(head.shape[0])


def load_checkpoint(model: nn.Module, checkpoint: str | Path | Mapping[str, torch.Tensor], *,
                    source: str | None = None) -> nn.Module:
    """Load an official, timm or torchvision checkpoint (path or state dict) into ``model``, strictly, and log its
    layout and tensor count. ``source`` names a state dict (its file) in messages; a path names itself."""
    state_dict = read_state_dict(checkpoint) if isinstance(checkpoint, (str, Path)) else checkpoint
    origin = str(checkpoint) if isinstance(checkpoint, (str, Path)) else source
    named = f"checkpoint {origin}" if origin else "the given state dict"
    official = to_official_names(state_dict)
    mapped = official.state_dict
    if getattr(model, "features_only", False):  # a backbone has no classifier
        mapped = {n: t for n, t in mapped.items() if not n.startswith(("norm.", "head."))}

    expected = model.state_dict()
    wanted = Architecture.of(_shapes(expected))
    model_name = f"Swin-{model.variant}" if hasattr(model, "variant") else "the model"
    check_fits(Architecture.of(_shapes(mapped)), wanted, model_name, named)
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    mismatched = [f"{k} {list(mapped[k].shape)} (model: {list(v.shape)})"
                  for k, v in expected.items() if k in mapped and mapped[k].shape != v.shape]
    if missing or unexpected or mismatched:
        problems = "; ".join(f"{label} {len(items)}: {items[:3]}" for label, items in
                             (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                             if items)
        raise PipelineError(f"{named} does not fit {model_name} ({wanted}): {problems}; pass a complete state "
                            "dict of that variant")
    model.load_state_dict(mapped, strict=True)
    log.info("checkpoint: %s format, %d tensors loaded from %s (%s%s)", LAYOUT_NAMES[official.layout], len(mapped),
             origin or "a state dict", model_name, ", features only" if getattr(model, "features_only", False) else "")
    return model
