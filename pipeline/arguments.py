"""Command-line argument groups shared by ``python -m pipeline`` and the benchmarks.

Each group adds its options to a parser and turns the parsed options into :class:`pipeline.make.EngineRecipe`
fields, so a tool is its groups plus a few lines (the pattern of Polygraphy's argument groups):

    groups = (ModelArguments(), BuildArguments(), PluginArguments())
    for group in groups:
        group.add_to(parser)
    recipe = recipe_from_args(parser.parse_args(), groups, precision="fp16")
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from pipeline.common.attention import ATTENTION_ROUTES
from pipeline.common.image_sizes import Size, SizeRange, parse_size
from pipeline.common.variants import VARIANTS
from pipeline.make import CALIB_METHODS, DEFAULT_PLUGIN, PRECISIONS, EngineRecipe


def batch_list(text: str) -> tuple[int, ...]:
    """``1,8,32`` → (1, 8, 32), in the given order."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated batch sizes like 1,8,32, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"batch sizes must be >= 1, got {text!r}")
    return values


def image_size(text: str) -> Size | SizeRange:
    """``224`` → (224, 224); ``256x320`` → (256, 320); ``320x320:800x1344:1344x1344`` → a SizeRange (min:opt:max)."""
    try:
        return SizeRange.parse(text) if ":" in text else parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def size_range(text: str) -> SizeRange:
    """``320x320:800x1344:1344x1344`` → a SizeRange (min:opt:max)."""
    try:
        return SizeRange.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _image_size_fields(value: Size | SizeRange | None) -> dict[str, Any]:
    """``--img-size`` as the recipe's field: ``img_range`` for a range, else ``img_size``."""
    return {"img_range": value} if isinstance(value, SizeRange) else {"img_size": value}


def parse_batch_profile(text: str) -> tuple[int, int, int]:
    """``1,8,32`` → (min 1, opt 8, max 32); one value fixes the batch, two are min and max (opt = max)."""
    values = batch_list(text)
    if len(values) > 3 or list(values) != sorted(values):
        raise argparse.ArgumentTypeError(f"expected min[,opt],max in increasing order like 1,8,32, got {text!r}")
    return (values[0], values[len(values) // 2] if len(values) == 3 else values[-1], values[-1])


def precision_list(text: str) -> tuple[str, ...]:
    """``fp16,int8`` → ("fp16", "int8"), each one of :data:`pipeline.make.PRECISIONS`."""
    values = tuple(dict.fromkeys(v.strip().lower() for v in text.split(",")))
    unknown = [v for v in values if v not in PRECISIONS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown precision {', '.join(unknown)}: expected {', '.join(PRECISIONS)}")
    return values


def negative_values_joined(argv: list[str]) -> list[str]:
    """``--img-size -1x-1`` → ``--img-size=-1x-1``: argparse takes a value that starts with '-' for an option (and
    says "expected one argument") unless it is a plain number; joined, the option's own check answers. No option
    of ours starts with '-' and a digit, so such a token is always a value."""
    joined: list[str] = []
    for token in argv:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and re.match(r"-\d", token):
            joined[-1] += f"={token}"
        else:
            joined.append(token)
    return joined


def _optional_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


class ArgumentGroup:
    """Options that belong together, and the recipe fields they set."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        raise NotImplementedError

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        raise NotImplementedError


class ModelArguments(ArgumentGroup):
    """Which model: variant, weights, input size, classifier or backbone. ``weights=False`` leaves out
    ``--checkpoint``, for tools that serve an engine already built (its weights are in it)."""

    def __init__(self, *, weights: bool = True) -> None:
        self.weights = weights

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--variant", default="T", help=f"Swin variant: {', '.join(VARIANTS)} (default T)")
        if self.weights:
            parser.add_argument("--checkpoint", help="official, timm or torchvision checkpoint (.pth or "
                                                     ".safetensors); without one the weights are random (seed 0)")
        parser.add_argument("--img-size", type=image_size, help="input size, e.g. 224 or 256x320 (default: the "
                                                                "variant's), or a range min:opt:max of sizes one "
                                                                "engine takes, e.g. 320x320:800x1344:1344x1344")
        parser.add_argument("--features-only", action="store_true", help="export the backbone's four stage maps")

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"variant": args.variant, "checkpoint": _optional_path(args.checkpoint) if self.weights else None,
                "features_only": args.features_only, **_image_size_fields(args.img_size)}


class CalibrationArguments(ArgumentGroup):
    """INT8 calibration."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--calib-dir", help="calibration images (INT8); default: a generated folder of photos")
        parser.add_argument("--calib-samples", type=int, default=256, help="calibration images to use (INT8)")
        parser.add_argument("--calib-method", choices=CALIB_METHODS, default="percentile")
        parser.add_argument("--calib-exclude", nargs="*", help="layers kept out of INT8: roles (fc2, patch_merging, "
                                                               "head ...), globs (layers.3.*) or node names; "
                                                               "default: the variant's safe list; no value: "
                                                               "quantize all")

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"calib_dir": _optional_path(args.calib_dir), "calib_samples": args.calib_samples,
                "calib_method": args.calib_method,
                "calib_exclude": None if args.calib_exclude is None else tuple(args.calib_exclude)}


class BuildArguments(ArgumentGroup):
    """The engine: batch profile, backend and target, builder options."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch", type=parse_batch_profile, default=(1, 8, 32),
                            help="optimization profile min,opt,max (default 1,8,32)")
        parser.add_argument("--backend", choices=("auto", "tensorrt", "rtx"), default="auto")
        parser.add_argument("--sm", type=int, default=86, help="compute capability for TensorRT-RTX (default 86)")
        parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0-5")
        parser.add_argument("--embed-plugin", action="store_true", help="store the plugin library inside the engine")
        parser.add_argument("--detailed-profile", action="store_true",
                            help="ProfilingVerbosity.DETAILED, so `make profile` can describe every layer")

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"batch": args.batch, "backend": args.backend, "sm": args.sm, "opt_level": args.opt_level,
                "embed_plugin": args.embed_plugin, "detailed_profile": args.detailed_profile}


class PluginArguments(ArgumentGroup):
    """The SwinWindowAttention plugin library."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--plugin", type=Path, default=DEFAULT_PLUGIN,
                            help=f"plugin library (default {DEFAULT_PLUGIN}, which `make plugin` builds)")

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"plugin_library": args.plugin}


class AttentionArguments(ArgumentGroup):
    """Which attention the engine runs: the plugin, or TensorRT's own (no plugin library)."""

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--attention", choices=ATTENTION_ROUTES, default="plugin",
                            help="window attention as the SwinWindowAttention plugin (default) or as TensorRT's own "
                                 "fused attention (the ONNX Attention op; no plugin library)")

    def recipe_fields(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"attention": args.attention}


def add_groups(parser: argparse.ArgumentParser, *groups: ArgumentGroup) -> tuple[ArgumentGroup, ...]:
    for group in groups:
        group.add_to(parser)
    return groups


def recipe_from_args(args: argparse.Namespace, groups: tuple[ArgumentGroup, ...], **fields: Any) -> EngineRecipe:
    """The recipe the groups' options describe; ``fields`` set what no group covers (e.g. the precision)."""
    for group in groups:
        fields |= group.recipe_fields(args)
    return EngineRecipe(**fields)
