"""Stage 2: PyTorch module → ONNX through torch.export, checked before it is written.

The graph has a dynamic batch dimension (declared maximum ``max_batch``), opset ≥ 17 so every
LayerNorm is one ``LayerNormalization`` node, and it is accepted only if ``onnx.checker`` passes
and onnxruntime reproduces PyTorch at two batch sizes.

``torch.ops.swin.window_attention`` (``pipeline.kernels.ops``: a ``build_swin(..., fused_attention=True)`` model) is
exported as the ``SwinWindowAttention`` node itself, the node graph surgery writes; onnxruntime then checks it
with the reference op (``pipeline.common.onnx_io.ort_session``).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from torch import nn

from pipeline.common.artifacts import check_writable
from pipeline.common.compare import FP32_TOLERANCE, relative_error
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange, format_size
from pipeline.common.interrupts import interrupts_deferred
from pipeline.common.onnx_io import ort_session, write_onnx
from pipeline.common.records import JsonRecord
from pipeline.kernels.ops import fold_plugin_inputs, onnx_translation_table
from pipeline.kernels.reference import PLUGIN_OP
from pipeline.models import build_swin
from pipeline.recipe import ModelRecord

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob, EngineRecipe

log = logging.getLogger(__name__)

INPUT_NAME = "images"
DEFAULT_OPSET = 18


def _output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = model(example)
    if isinstance(out, torch.Tensor):
        return ["logits"]
    return [f"features.{i}" for i in range(len(out))]


def _torch_outputs(model: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(images)
    outs = [out] if isinstance(out, torch.Tensor) else list(out)
    return [o.float().numpy() for o in outs]


def check_against_torch(model: nn.Module, onnx_path: str | Path, shapes: tuple[tuple[int, int, int], ...]) -> float:
    """Run the ONNX file in onnxruntime (``SwinWindowAttention`` nodes through the reference op) and PyTorch at each
    ``(batch, H, W)``; return the worst relative error."""
    session = ort_session(onnx_path)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for batch, *img_size in shapes:
        images = torch.randn(batch, 3, *img_size, generator=generator)
        expected = _torch_outputs(model, images)
        actual = session.run(None, {INPUT_NAME: images.numpy()})
        for name, e, a in zip((o.name for o in session.get_outputs()), expected, actual, strict=True):
            if e.shape != a.shape:
                raise PipelineError(f"export check: output {name} has shape {a.shape} in onnxruntime but "
                                    f"{e.shape} in PyTorch at batch {batch}, {format_size(img_size)}")
            error = relative_error(e, a)
            worst = max(worst, error)
            if error > FP32_TOLERANCE:
                raise PipelineError(f"export check: onnxruntime differs from PyTorch by {error:.2e} (relative) on "
                                    f"output {name} at batch {batch}, {format_size(img_size)}, above "
                                    f"{FP32_TOLERANCE:.0e}; the exported "
                                    "graph is wrong, so nothing was written")
    return worst


def _check_shapes(sizes: SizeRange | None, size: tuple[int, int], max_batch: int) -> tuple[tuple[int, int, int], ...]:
    """Where the export is checked: batch 1 and 3 (or ``max_batch``) at the size; for a range at its min, and at its
    max and its opt at batch 1 (verification covers more sizes)."""
    batches = sorted({1, min(3, max_batch)})
    if sizes is None:
        return tuple((b, *size) for b in batches)
    return (*((b, *sizes.min) for b in batches), *dict.fromkeys([(1, *sizes.max), (1, *sizes.opt)]))


def export_onnx(model: nn.Module, path: str | Path, img_size: int | tuple[int, int] = 224, max_batch: int = 32,
                opset: int = DEFAULT_OPSET, sizes: SizeRange | None = None) -> Path:
    """Export ``model`` to ``path`` with a dynamic batch in ``[1, max_batch]`` and verify it.

    Works for our Swin models and for timm/torchvision ones. The file is written only after it
    passes ``onnx.checker`` and matches PyTorch in onnxruntime at batch 1 and 3 (or ``max_batch``).
    ``torch.ops.swin.window_attention`` becomes a ``SwinWindowAttention`` node
    (:func:`pipeline.kernels.ops.onnx_translation_table`). ``sizes``: H and W are dynamic over this range too
    (``img_size`` is ignored; the model must be one whose graph does not depend on the size: a fused Swin).
    """
    if opset < 17:
        raise PipelineError(f"opset {opset} is too old: LayerNormalization needs opset 17 or newer")
    if max_batch < 1:
        raise PipelineError(f"max_batch must be at least 1, got {max_batch}")
    check_writable(path)
    size = sizes.opt if sizes is not None else (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    model = model.eval()
    # torch.export specializes a batch of 1; torchvision's classifier head needs an example batch >= 2.
    example = torch.randn(min(2, max_batch) if max_batch > 1 else 1, 3, *size)
    names = _output_names(model, example)
    # torch.export calls Python back from C++: a Ctrl-C raised there aborts the process (pipeline.common.interrupts).
    with warnings.catch_warnings(), interrupts_deferred("torch.onnx.export"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME], output_names=names,
            dynamic_shapes=_dynamic_shapes(max_batch, sizes), verbose=False,
            custom_translation_table=onnx_translation_table(),
        )
    plugin_nodes = sum(n.op_type == PLUGIN_OP for n in program.model.graph)
    if plugin_nodes and (computed := fold_plugin_inputs(program.model)):
        raise PipelineError(f"export: {computed} constant inputs of {PLUGIN_OP} nodes are still computed in the graph "
                            "after constant folding; TensorRT's plugin and graph surgery expect initializers")
    proto = program.model_proto
    variant = getattr(model, "variant", None)
    onnx.helper.set_model_props(proto, {
        "swin_trt.stage": "export",
        "swin_trt.img_size": format_size(size) if sizes is None else str(sizes),
        "swin_trt.max_batch": str(max_batch),
        **({"swin_trt.variant": variant} if variant else {}),
    })

    def matches_torch(written: Path) -> None:
        worst = check_against_torch(model, written, _check_shapes(sizes, size, max_batch))
        log.info("exported %s%s: onnxruntime matches PyTorch to %.1e", path,
                 f" with {plugin_nodes} {PLUGIN_OP} nodes (reference op)" if plugin_nodes else "", worst)

    return write_onnx(proto, path, full_check=True, verify=matches_torch)


def _dynamic_shapes(max_batch: int, sizes: SizeRange | None) -> tuple[dict[int, Any]] | None:
    """torch.export's dims of the image input: the batch (unless it is 1), and H and W over a size range."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=max_batch)} if max_batch > 1 else {}
    if sizes is not None:
        dims |= {axis: torch.export.Dim(name, min=sizes.min[i], max=sizes.max[i])
                 for i, (axis, name) in enumerate(((2, "height"), (3, "width")))}
    return (dims,) if dims else None


@dataclasses.dataclass(frozen=True)
class ExportReport(JsonRecord):
    """The export stage's result: the ONNX file and the model it holds (a later run reads the folder's model here)."""

    onnx: Path
    model: ModelRecord


def export_recipe(recipe: EngineRecipe, model: nn.Module, path: str | Path) -> Path:
    """``model`` (the recipe's) to ``path`` at the recipe's size; for a size range, the same weights in the fused
    model, whose version-2 nodes take H and W at run time (surgery then has nothing to rewrite)."""
    if recipe.img_range is not None:
        model = build_swin(recipe.variant, model.state_dict(), features_only=recipe.features_only,
                           fused_attention=True)
    return export_onnx(model, path, img_size=recipe.image_size, max_batch=recipe.max_batch, sizes=recipe.img_range)


def run(job: EngineJob) -> ExportReport:
    """make_engine's export stage: the job's model to ``model.onnx`` (:func:`export_recipe`)."""
    return ExportReport(onnx=export_recipe(job.recipe, job.model(), job.files.onnx), model=job.model_record)
