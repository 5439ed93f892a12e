"""torch.ops.swin.window_attention and build_swin(..., fused_attention=True): the operator against the reference, the
fused model against the unfused one, torch.compile, and its ONNX export against what graph surgery writes."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from plugin_build import native_libs_for

import pipeline.kernels.ops
from pipeline.common.onnx_io import ort_session
from pipeline.common.variants import SwinConfig
from pipeline.kernels.reference import (
    MAP_ATTRIBUTES,
    MAP_VERSION,
    PLUGIN_DOMAIN,
    PLUGIN_OP,
    launch_params,
    window_attention_reference,
)
from pipeline.models import SwinTransformer, build_swin, perturb_weights_
from pipeline.stages.export import export_onnx
from pipeline.stages.surgery import replace_window_attention

CASES = [  # (batch, height, width, channels, heads, window, shift)
    (2, 14, 14, 96, 3, 7, 3),    # shifted, no padding
    (2, 10, 13, 64, 2, 7, 3),    # padded to 14x14, shifted
    (1, 30, 17, 128, 4, 12, 6),  # window 12, padded both ways, shifted
    (3, 9, 9, 64, 2, 7, 0),      # padded, unshifted: padded keys carry the qkv bias
]
CASE_IDS = ["shifted", "padded-shifted", "window12-padded", "padded-unshifted"]


def random_inputs(batch: int, height: int, width: int, channels: int, heads: int, window: int,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = window * window
    return (rng.standard_normal((batch, height * width, 3 * channels), np.float32),
            rng.standard_normal((heads, n, n), np.float32), rng.standard_normal(3 * channels, np.float32))


def op_args(arrays, height, width, heads, window, shift, dtype=torch.float32) -> tuple:
    qkv, rel_bias, qkv_bias = (torch.from_numpy(a).to(dtype) for a in arrays)
    scale = (qkv.shape[-1] // 3 // heads) ** -0.5
    return qkv, rel_bias, qkv_bias, height, width, window, shift, heads, scale


def reference(args: tuple) -> np.ndarray:
    qkv, rel_bias, qkv_bias, height, width, window, shift, heads, scale = args
    return window_attention_reference(qkv.float().numpy(), rel_bias.float().numpy(), qkv_bias.float().numpy(),
                                      height=height, width=width, window_size=window, shift_size=shift,
                                      num_heads=heads, scale=scale)


# ---------------------------------------------------------------------------------------------------------
# The operator


@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), CASES, ids=CASE_IDS)
def test_op_matches_reference(batch, height, width, channels, heads, window, shift) -> None:
    args = op_args(random_inputs(batch, height, width, channels, heads, window), height, width, heads, window, shift)
    out = torch.ops.swin.window_attention(*args)
    assert out.shape == (batch, height * width, channels) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference(args), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_op_low_precision_input_computes_in_float32(dtype: torch.dtype) -> None:
    """FP16 in, FP16 out: the reference of the FP16 values in float32, rounded once at the end."""
    args = op_args(random_inputs(2, 10, 13, 64, 2, 7), 10, 13, 2, 7, 3, dtype=dtype)
    out = torch.ops.swin.window_attention(*args)
    assert out.dtype == dtype
    expected = reference(args)
    rounding = torch.finfo(dtype).eps / 2 * np.abs(expected)  # half an ulp of the output, relative
    assert np.all(np.abs(out.float().numpy() - expected) <= 1e-5 + rounding)


def test_opcheck_and_fake_shapes() -> None:
    """torch.library.opcheck: schema, fake (meta) implementation and the CPU one agree, also under AOT dispatch."""
    args = op_args(random_inputs(2, 10, 13, 64, 2, 7), 10, 13, 2, 7, 3)
    torch.library.opcheck(torch.ops.swin.window_attention.default, args)
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in op_args(
        random_inputs(5, 10, 13, 64, 2, 7), 10, 13, 2, 7, 3, dtype=torch.float16)]
    out = torch.ops.swin.window_attention(*meta)
    assert (out.shape, out.dtype, out.device.type) == ((5, 130, 64), torch.float16, "meta")


def test_op_rejects_inputs_outside_the_contract() -> None:
    qkv, rel_bias, qkv_bias, *attributes = op_args(random_inputs(1, 10, 13, 64, 2, 7), 10, 13, 2, 7, 3)
    with pytest.raises(ValueError, match=r"qkv_bias must be \[192\]"):
        torch.ops.swin.window_attention(qkv, rel_bias, qkv_bias[:64], *attributes)
    with pytest.raises(ValueError, match="qkv has 130 tokens but height\\*width = 10\\*14"):
        torch.ops.swin.window_attention(qkv, rel_bias, qkv_bias, 10, 14, *attributes[2:])
    with pytest.raises(ValueError, match=r"rel_bias must be \[2, 49, 49\]"):
        torch.ops.swin.window_attention(qkv, rel_bias[:1], qkv_bias, *attributes)


def test_cuda_library_is_not_loaded_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing pipeline.kernels.ops needs no CUDA and no library; asking for a missing one says how to build it, also
    on the first CUDA call (the loader registered for the CUDA key, called here directly)."""
    assert pipeline.kernels.ops._cuda_library is None
    with pytest.raises(RuntimeError, match="does not exist: build it with `make plugin`"):
        pipeline.kernels.ops.enable_cuda(tmp_path / "libswin_window_attention_cuda.so")
    monkeypatch.setenv(pipeline.kernels.ops.CUDA_LIBRARY_ENV, str(tmp_path / "elsewhere.so"))
    assert pipeline.kernels.ops.cuda_library_path() == tmp_path / "elsewhere.so"
    args = op_args(random_inputs(1, 7, 7, 16, 2, 7), 7, 7, 2, 7, 0)
    with pytest.raises(RuntimeError, match=r"elsewhere\.so does not exist"):
        pipeline.kernels.ops._window_attention_cuda_first_call(*args)
    assert pipeline.kernels.ops._cuda_library is None


# ---------------------------------------------------------------------------------------------------------
# The fused model


@pytest.fixture(scope="module")
def swin_t_fused(swin_t: torch.nn.Module) -> torch.nn.Module:
    fused = build_swin("T", fused_attention=True)
    fused.load_state_dict(swin_t.state_dict())  # strict: the same parameter and buffer names
    return fused


@pytest.mark.parametrize("size", [(224, 224), (100, 146)], ids=["224", "padded-non-square"])
def test_fused_swin_t_matches_unfused(swin_t: torch.nn.Module, swin_t_fused: torch.nn.Module,
                                      size: tuple[int, int]) -> None:
    """100×146: stages 25×37, 13×19, 7×10, 4×5, all padded to the window; the first two shifted."""
    assert swin_t.state_dict().keys() == swin_t_fused.state_dict().keys()
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = swin_t(images), swin_t_fused(images)
    assert float((actual - expected).abs().max()) <= 1e-5


def tiny_config() -> SwinConfig:
    """Six blocks: stage 1 and 2 shifted; heads 2 and 4 (4·49² elements of bias exceed the exporter's own folding)."""
    return SwinConfig(16, (2, 2, 1, 1), (2, 2, 4, 4), num_classes=10)


def test_torch_compile_traces_the_op_without_graph_breaks() -> None:
    """fullgraph=True fails on any graph break; the AOT graph holds one op per block (its fake implementation)."""
    torch.manual_seed(0)
    model = perturb_weights_(SwinTransformer(tiny_config(), features_only=True, fused_attention=True))
    targets: list = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        from torch._dynamo.backends.common import aot_autograd

        def record(graph: torch.fx.GraphModule, inputs: list) -> object:
            targets.extend(n.target for n in graph.graph.nodes if n.op == "call_function")
            return graph.forward

        return aot_autograd(fw_compiler=record)(gm, example_inputs)

    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    images = torch.randn(1, 3, 100, 132)
    with torch.no_grad():
        expected, actual = model(images), compiled(images)
    assert targets.count(torch.ops.swin.window_attention_map.default) == sum(tiny_config().depths)
    for e, a in zip(expected, actual, strict=True):
        assert float((a - e).abs().max()) <= 1e-5
    torch._dynamo.reset()


def plugin_nodes(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, dict, list[np.ndarray | None]]]:
    """Each SwinWindowAttention node with its attributes and its initializer inputs (None: computed)."""
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return [(n, {a.name: helper.get_attribute_value(a) for a in n.attribute}, [initializers.get(i) for i in n.input])
            for n in model.graph.node if n.op_type == PLUGIN_OP]


def test_fused_export_is_what_surgery_writes(tmp_path: Path) -> None:
    """A second, independent route to model.swin.onnx: the fused model's export holds, as contract version 2 nodes,
    the nodes surgery writes for the unfused export (same ops but the two Reshapes around each node; each node's
    height, width and applied shift are launch_params of its version-2 twin; same rel_bias and qkv_bias
    initializers), and runs in onnxruntime (reference op) as PyTorch does. 100×132 pads every stage; the batch is
    dynamic."""
    torch.manual_seed(0)
    unfused = perturb_weights_(SwinTransformer(tiny_config(), features_only=True))
    fused = SwinTransformer(tiny_config(), features_only=True, fused_attention=True).eval()
    fused.load_state_dict(unfused.state_dict())
    size = (100, 132)

    surgered_path = tmp_path / "model.swin.onnx"
    report = replace_window_attention(export_onnx(unfused, tmp_path / "model.onnx", img_size=size, max_batch=2),
                                      surgered_path)
    assert (report.blocks_replaced, report.blocks_shifted) == (6, 2) and all(s.padded for s in report.stages)
    fused_path = export_onnx(fused, tmp_path / "fused.onnx", img_size=size, max_batch=2)  # checked there too

    surgered, exported = onnx.load(str(surgered_path)), onnx.load(str(fused_path))
    without_node_reshapes = collections.Counter(n.op_type for n in surgered.graph.node)
    without_node_reshapes["Reshape"] -= 2 * 6
    assert collections.Counter(n.op_type for n in exported.graph.node) == without_node_reshapes
    assert {(o.domain, o.version) for o in exported.opset_import} >= {(PLUGIN_DOMAIN, 1)}
    expected_nodes, actual_nodes = plugin_nodes(surgered), plugin_nodes(exported)
    assert len(actual_nodes) == len(expected_nodes) == 6
    for (expected, v1, expected_inputs), (actual, v2, actual_inputs) in zip(expected_nodes, actual_nodes, strict=True):
        assert actual.domain == expected.domain == PLUGIN_DOMAIN and len(actual.input) == 3
        assert (v1["plugin_version"], v2["plugin_version"]) == (b"1", MAP_VERSION.encode())
        assert set(v2) == set(MAP_ATTRIBUTES) | {"plugin_version", "plugin_namespace"}
        params = launch_params(MAP_VERSION, (1, v1["height"], v1["width"], 3 * 8), window_size=v2["window_size"],
                               shift_size=v2["shift_size"], num_heads=v2["num_heads"], scale=v2["scale"])
        assert (params.shift_size, params.window_size, params.num_heads) == (
            v1["shift_size"], v1["window_size"], v1["num_heads"])
        assert abs(v2["scale"] - v1["scale"]) <= 1e-7
        assert actual_inputs[0] is None  # qkv: the activations
        for e, a in zip(expected_inputs[1:], actual_inputs[1:], strict=True):  # rel_bias, qkv_bias: initializers
            assert a is not None and e is not None
            np.testing.assert_array_equal(a, e)
    assert [v2["shift_size"] for _, v2, _ in actual_nodes] == [0, 3, 0, 3, 0, 0]

    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected_maps = [f.numpy() for f in fused(images)]
    actual_maps = ort_session(fused_path).run(None, {"images": images.numpy()})
    surgered_maps = ort_session(surgered_path).run(None, {"images": images.numpy()})
    for e, a, s in zip(expected_maps, actual_maps, surgered_maps, strict=True):
        assert a.shape == e.shape
        assert np.abs(a - e).max() <= 1e-4
        assert np.abs(a - s).max() <= 1e-4


# ---------------------------------------------------------------------------------------------------------
# CUDA (the kernel through the op): needs a GPU, nvcc and cmake


@pytest.fixture(scope="module")
def cuda_op() -> Path:
    major, minor = torch.cuda.get_device_capability()
    return pipeline.kernels.ops.enable_cuda(native_libs_for(f"{major}{minor}").cuda)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize(("batch", "height", "width", "channels", "heads", "window", "shift"), CASES, ids=CASE_IDS)
def test_cuda_op_matches_cpu_op(cuda_op, dtype, batch, height, width, channels, heads, window, shift) -> None:
    args = op_args(random_inputs(batch, height, width, channels, heads, window), height, width, heads, window, shift,
                   dtype=dtype)
    expected = reference(args)
    cuda_args = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())  # the inputs were copied on the default stream
    with torch.cuda.stream(stream):  # the kernel runs on the current stream, not the default one
        out = torch.ops.swin.window_attention(*cuda_args)
    stream.synchronize()
    assert out.dtype == dtype and out.is_cuda
    tolerance = 1e-5 if dtype == torch.float32 else 2e-3 * max(1.0, float(np.abs(expected).max()))
    assert float(np.abs(out.float().cpu().numpy() - expected).max()) <= tolerance

    graph = torch.cuda.CUDAGraph()  # capturable: no host synchronization inside
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        captured = torch.ops.swin.window_attention(*cuda_args)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, out)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
def test_fused_swin_t_on_cuda(cuda_op, swin_t: torch.nn.Module, swin_t_fused: torch.nn.Module) -> None:
    images = torch.randn(2, 3, 100, 146, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = swin_t(images)
        model = build_swin("T", fused_attention=True).cuda()
        model.load_state_dict(swin_t_fused.state_dict())
        actual = model(images.cuda()).cpu()
        compiled = torch.compile(model, fullgraph=True)(images.cuda()).cpu()
    assert float((actual - expected).abs().max()) <= 1e-4
    assert float((compiled - expected).abs().max()) <= 1e-4
