"""ONNX files and their execution on the CPU: what several stages share.

Reading (a missing or corrupt file becomes an actionable error), writing (atomically, only after ``onnx.checker``
and an optional check of the written file accept it), the image input of a graph, and onnxruntime sessions in which
``SwinWindowAttention`` nodes run through :func:`pipeline.kernels.reference.window_attention_reference`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from pipeline.common.artifacts import atomic_path
from pipeline.common.errors import PipelineError
from pipeline.common.interrupts import interrupts_deferred
from pipeline.kernels.node_contract import ATTRIBUTE_TYPES
from pipeline.kernels.reference import (
    ATTRIBUTES,
    MAP_ATTRIBUTES,
    MAP_VERSION,
    PLUGIN_OP,
    map_attention_reference,
    window_attention_reference,
)

#: The ops of an INT8 graph's explicit quantization.
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})

def read_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file, turning a missing or corrupt file into an actionable error."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"ONNX file {path} does not exist; run the export stage first "
                            "(python -m pipeline export or make onnx)")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise PipelineError(f"cannot read {path} as ONNX: {exc}") from exc


def write_onnx(model: onnx.ModelProto, path: str | Path, *, full_check: bool = False,
               verify: Callable[[Path], None] | None = None) -> Path:
    """Save ``model`` to ``path`` only if ``onnx.checker`` (and ``verify``, given the written file) accept it."""
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=full_check)
        if verify is not None:
            verify(tmp)
    return Path(path)


def graph_input(model: onnx.ModelProto, input_name: str | None, source: Path, *,
                dynamic_size: bool = False) -> tuple[str, list[int | None]]:
    """The image input's name and dims (None where symbolic); the batch dim may be symbolic, and with
    ``dynamic_size`` H and W too (``[B, 3, H, W]``), no other."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in initializers}
    if input_name is None:
        if len(inputs) != 1:
            raise PipelineError(f"{source} has {len(inputs)} inputs {sorted(inputs)}; name the image input")
        input_name = next(iter(inputs))
    if input_name not in inputs:
        raise PipelineError(f"{source} has no input {input_name!r}; its inputs are {sorted(inputs)}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[input_name].type.tensor_type.shape.dim]
    if dynamic_size and len(dims) == 4 and dims[1] is not None:
        return input_name, dims
    if not dims or None in dims[1:]:
        raise PipelineError(f"input {input_name!r} of {source} has shape {dims}: only the batch dimension may be "
                            "dynamic; export with a fixed image size"
                            + ("; a graph exported with dynamic height and width needs its sizes (--img-size)"
                               if not dynamic_size else ""))
    return input_name, dims




#: onnxruntime-extensions runs Python custom ops only from this domain.
ORT_CUSTOM_DOMAIN = "ai.onnx.contrib"
#: The op type version-2 nodes run as there: onnxruntime-extensions keys a Python op (and its attributes) by type.
ORT_MAP_OP = f"{PLUGIN_OP}Map"


#: Exceptions the reference raised inside an onnxruntime run. One cannot cross onnxruntime's C++ frames (the process
#: would abort, exit 134), so the op records it and returns a placeholder; InterruptibleSession.run raises it.
_op_errors: list[Exception] = []


@functools.cache
def _register_ort_custom_op() -> str:
    """Register the reference of both contract versions as onnxruntime-extensions ops once; return the library."""
    from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op
    from onnxruntime_extensions._ocos import _on_pyop_invocation

    kinds = {"int32": PyCustomOpDef.dt_int64, "float32": PyCustomOpDef.dt_float}
    strings = {"plugin_version": PyCustomOpDef.dt_string, "plugin_namespace": PyCustomOpDef.dt_string}
    ops: dict[int, Callable] = {}
    for op_type, names, reference in ((PLUGIN_OP, ATTRIBUTES, window_attention_reference),
                                      (ORT_MAP_OP, MAP_ATTRIBUTES, map_attention_reference)):
        def compute(qkv: np.ndarray, rel_bias: np.ndarray, qkv_bias: np.ndarray, *, _names: tuple[str, ...] = names,
                    _reference: Callable = reference, **attributes: int | float | str) -> np.ndarray:
            return _reference(qkv, rel_bias, qkv_bias, **{name: attributes[name] for name in _names})

        attrs = {name: kinds[ATTRIBUTE_TYPES[name]] for name in names} | strings
        op = onnx_op(op_type=op_type, inputs=[PyCustomOpDef.dt_float] * 3, outputs=[PyCustomOpDef.dt_float],
                     attrs=attrs)(compute)
        ops[id(op)] = op

    def invoke(op_id: int, inputs: list[np.ndarray], attributes: dict[str, str]) -> tuple:
        """onnxruntime-extensions' callback, returning the output as an array: the stock one returns ``tolist()``
        of it (~5 s per Swin-B-384 batch of 8 on 2 cores, four times the op itself), while its C++ side takes
        any array and copies its buffer (hence C-contiguous float32)."""
        op = ops.get(op_id)  # the ids onnx_op registered; other Python ops keep the stock path
        if op is None:
            return _on_pyop_invocation(op_id, inputs, attributes)
        try:
            out = op(*inputs, **op.cast_attributes(attributes))
        except Exception as error:  # e.g. a node whose attributes contradict its inputs
            _op_errors.append(error)
            qkv = inputs[0]
            out = np.zeros((*qkv.shape[:-1], qkv.shape[-1] // 3), np.float32)  # the run's outputs are discarded
        return op_id, out.shape, np.ascontiguousarray(out, np.float32)

    PyCustomOpDef.install_hooker(invoke)
    return get_library_path()


def _is_map_version(node: onnx.NodeProto) -> bool:
    return any(a.name == "plugin_version" and a.s.decode() == MAP_VERSION for a in node.attribute)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type the graph states (initializers, inputs, inferred values)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {t.name: t.data_type for t in model.graph.initializer}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        types.setdefault(info.name, info.type.tensor_type.elem_type)
    return types


def _run_plugin_nodes_in_float32(model: onnx.ModelProto) -> None:
    """Wrap FP16 ``SwinWindowAttention`` nodes in Casts: the Python custom op computes in float32 only.

    The plugin itself accumulates softmax in FP32 too, so this changes only the rounding of its inputs' GEMM
    accumulations, not what a typed FP16 graph means.
    """
    types = tensor_types(model)
    nodes = list(model.graph.node)
    del model.graph.node[:]
    for node in nodes:
        dtype = types.get(node.input[0], onnx.TensorProto.FLOAT) if node.op_type == PLUGIN_OP else None
        if dtype in (None, onnx.TensorProto.FLOAT):
            model.graph.node.append(node)
            continue
        for i, name in enumerate(node.input):
            model.graph.node.append(onnx.helper.make_node("Cast", [name], [f"{name}.as_float32"],
                                                          to=onnx.TensorProto.FLOAT))
            node.input[i] = f"{name}.as_float32"
        output = node.output[0]
        node.output[0] = f"{output}.float32"
        model.graph.node.append(node)
        model.graph.node.append(onnx.helper.make_node("Cast", [node.output[0]], [output], to=dtype))


class InterruptibleSession(ort.InferenceSession):
    """An onnxruntime session whose ``run`` raises, once onnxruntime has returned, what happened inside it.

    During a run, Python would raise a KeyboardInterrupt, or the reference op's own error, inside the Python custom
    op under onnxruntime's C++ frames and abort the process (:mod:`pipeline.common.interrupts`). So SIGINT only sets the
    run's terminate flag (onnxruntime stops before its next node) and ``run`` raises KeyboardInterrupt afterwards;
    an error of the op is recorded and raised as a PipelineError naming the node's problem.
    """

    def run(self, output_names: list[str] | None, input_feed: dict[str, Any],
            run_options: ort.RunOptions | None = None) -> list[Any]:
        options = run_options or ort.RunOptions()
        _op_errors.clear()
        try:
            with interrupts_deferred("the onnxruntime run", on_interrupt=lambda: setattr(options, "terminate", True)):
                outputs = super().run(output_names, input_feed, options)
        except Exception:
            if not _op_errors:  # else the placeholder output made a later node fail: the op's error is the cause
                raise
        finally:
            options.terminate = False  # the caller's options stay usable
        if _op_errors:
            error = _op_errors[0]
            _op_errors.clear()
            raise PipelineError(f"the {PLUGIN_OP} reference op failed: {error}") from error
        return outputs


def ort_session(model: str | Path | onnx.ModelProto, intra_op_threads: int = 0, *,
                memory_arena: bool = False) -> InterruptibleSession:
    """An onnxruntime CPU session for an original, surgered, FP16 or Q/DQ model (a path or a ModelProto).

    ``SwinWindowAttention`` nodes run through :func:`window_attention_reference` (an
    onnxruntime-extensions Python op, which needs float32 I/O and the ``ai.onnx.contrib`` domain,
    so the nodes are re-homed, and FP16 ones wrapped in Casts, in memory; the file is untouched).
    Ctrl-C during ``run`` raises KeyboardInterrupt after onnxruntime returns (:class:`InterruptibleSession`).
    ``memory_arena``: keep onnxruntime's CPU arena, which pays for many runs at one shape (calibration) and
    otherwise keeps the largest run's activations for nothing (the Swin-T backbone's check at 800×1333, batch 3:
    7.1 GB with it, 3.7 GB without, and faster; INT8 calibration of Swin-T: 76 s with it, 79 s without).
    """
    model = read_onnx(model) if isinstance(model, (str, Path)) else onnx.ModelProto.FromString(
        model.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.enable_cpu_mem_arena = memory_arena
    if any(n.op_type == PLUGIN_OP for n in model.graph.node):
        options.register_custom_ops_library(_register_ort_custom_op())
        # onnxruntime's idle workers would spin on the cores torch's threads need in the Python op (Swin-B-384
        # FP16, batch 8, 2 cores: 6.2 s a run instead of 8.5 s, of which the op 1.1 s instead of 2.2 s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        _run_plugin_nodes_in_float32(model)  # rebuilds graph.node, so re-home the nodes afterwards
        for node in model.graph.node:
            if node.op_type == PLUGIN_OP:
                node.domain = ORT_CUSTOM_DOMAIN
                node.op_type = ORT_MAP_OP if _is_map_version(node) else PLUGIN_OP
        model.opset_import.append(onnx.helper.make_opsetid(ORT_CUSTOM_DOMAIN, 1))
    return InterruptibleSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
