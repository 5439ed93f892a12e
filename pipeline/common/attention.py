"""Which attention an engine runs: the ``SwinWindowAttention`` plugin, or TensorRT's own fused attention.

The ``tensorrt`` route writes each window-attention block as the ONNX ``Attention`` op (opset 23), which
TensorRT ≥ 10.14 and TensorRT-RTX parse into their fused attention layer (``IAttention``): no plugin library. What
that layer cannot build is refused here, before any stage runs (docs/design.md §2b). No heavy imports: the recipe
validates with it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeline.common.errors import PipelineError

#: ``--attention`` values: ``plugin`` (the default) and ``tensorrt``.
ATTENTION_ROUTES = ("plugin", "tensorrt")
#: The ONNX op the ``tensorrt`` route writes, and the opset that defines it.
ONNX_ATTENTION_OP = "Attention"
ATTENTION_OPSET = 23
#: Ends the name of the ``tensorrt`` route's build folder (``make engine ATTENTION=tensorrt``: build/swin_<v>_trtattn),
#: so the two routes never replace each other's files.
TRTATTN_SUFFIX = "_trtattn"


def check_route(attention: str, precision: str | None = None, *, embed_plugin: bool = False) -> None:
    """Raise PipelineError for an unknown route, or one TensorRT's attention cannot build (at ``precision``, or with
    an embedded plugin library)."""
    if attention not in ATTENTION_ROUTES:
        raise PipelineError(f"unknown attention {attention!r}: expected one of {', '.join(ATTENTION_ROUTES)}")
    if attention == "tensorrt" and embed_plugin:
        raise PipelineError("--attention tensorrt has no plugin library to embed; leave out --embed-plugin")
    if attention == "tensorrt" and precision == "fp32":
        raise PipelineError("--attention tensorrt cannot build FP32: TensorRT-RTX 1.7 has no fused attention kernel "
                            "for FP32 (its build fails 'not supported by a dedicated kernel'); use --precision fp16 "
                            "or int8, or --attention plugin")


def graph_attention(op_types: Iterable[str]) -> str:
    """The route a graph's ops were written for: ``tensorrt`` with ONNX ``Attention`` nodes, else ``plugin``."""
    return "tensorrt" if ONNX_ATTENTION_OP in set(op_types) else "plugin"
