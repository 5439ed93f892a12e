"""INT8 calibration: threshold math on known distributions, Q/DQ structure on Swin-T, accuracy and the cache."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calib import CalibrationError
from calib.quantize import ROLES, default_exclusions, find_quantizable_layers
from calib.ranges import (
    ENTROPY_BINS,
    ENTROPY_LEVELS,
    HISTOGRAM_BINS,
    ActivationStatistics,
    amax_from_statistics,
    clip_divergence,
    collect_absmax,
    entropy_amax,
    histogram,
    percentile_amax,
)
from pipeline.common.errors import PipelineError
from pipeline.common.images import image_array
from pipeline.common.onnx_io import ort_session
from pipeline.kernels.reference import PLUGIN_OP
from pipeline.stages.int8 import ATTENTION_OPS, Int8Report, calibration_batch, calibration_session, quantize_int8

CALIB_SAMPLES = 16
#: Photo crops never used for calibration (a different generation seed).
EVAL_SEED = 7


def statistics_of(samples: np.ndarray) -> tuple[ActivationStatistics, float]:
    absmax = float(np.abs(samples).max())
    return ActivationStatistics({"x": absmax}, {"x": histogram(samples, absmax)}), absmax


# ---------------------------------------------------------------------------------------------- threshold math

def test_histogram_bins_absolute_values_over_zero_to_absmax() -> None:
    counts = histogram(np.array([0.0, -0.1, 0.24, 0.26, -1.0, 1.0]), 1.0, bins=4)
    np.testing.assert_array_equal(counts, [3, 1, 0, 2])
    assert histogram(np.zeros(5), 0.0, bins=4).tolist() == [5, 0, 0, 0]


def test_max_and_percentile_match_numpy_on_a_gaussian() -> None:
    samples = np.random.default_rng(0).standard_normal(1_000_000)
    stats, absmax = statistics_of(samples)
    assert amax_from_statistics(stats, "max")["x"] == absmax
    bin_width = absmax / HISTOGRAM_BINS
    for percentile in (90.0, 99.0, 99.99):
        expected = np.percentile(np.abs(samples), percentile)
        actual = amax_from_statistics(stats, "percentile", percentile)["x"]
        assert expected <= actual <= expected + bin_width, percentile
    assert percentile_amax(stats.histograms["x"], absmax, 100.0) == pytest.approx(absmax)


def reference_divergence(counts: np.ndarray, clip_bin: int, levels: int) -> float:
    """clip_divergence written out loop by loop, as the EntropyCalibrator2 algorithm is usually described."""
    p = [float(c) for c in counts[:clip_bin]]
    p[-1] += float(sum(counts[clip_bin:]))
    width = clip_bin // levels
    q = [0.0] * clip_bin
    for level in range(levels):
        start, stop = level * width, (clip_bin if level == levels - 1 else (level + 1) * width)
        nonempty = [i for i in range(start, stop) if p[i] > 0]
        for i in nonempty:
            q[i] = float(sum(counts[start:stop])) / len(nonempty)  # Q leaves the outliers out
    p_total, q_total = sum(p), sum(q)
    return sum(pi / p_total * np.log((pi / p_total) / (qi / q_total)) for pi, qi in zip(p, q, strict=True) if pi)


def test_clip_divergence_matches_a_loop_implementation() -> None:
    counts = np.random.default_rng(1).integers(0, 50, 600).astype(np.float64)
    counts[::7] = 0  # empty bins must stay empty in Q
    for clip_bin in (16, 37, 128, 300, 599):
        assert clip_divergence(counts, clip_bin, levels=16) == pytest.approx(
            reference_divergence(counts, clip_bin, 16), rel=1e-9, abs=1e-12)
    assert clip_divergence(counts, ENTROPY_LEVELS * 4, ENTROPY_LEVELS) >= 0


def test_entropy_clips_rare_outliers_but_not_a_bounded_distribution() -> None:
    rng = np.random.default_rng(0)
    # A Gaussian bulk plus 20 far outliers: the threshold drops the outliers and keeps the bulk past 2.5σ.
    spiky = np.concatenate([rng.standard_normal(1_000_000), np.full(10, 40.0), np.full(10, -40.0)])
    stats, absmax = statistics_of(spiky)
    assert 2.5 < entropy_amax(stats.histograms["x"], absmax) < 5.0
    # A heavy (Laplace) tail is clipped; a uniform distribution has nothing worth clipping.
    stats, absmax = statistics_of(rng.laplace(size=1_000_000))
    assert 0.5 * absmax < entropy_amax(stats.histograms["x"], absmax) < 0.95 * absmax
    stats, absmax = statistics_of(rng.uniform(-1, 1, 1_000_000))
    amax = entropy_amax(stats.histograms["x"], absmax)
    assert amax > 0.97 * absmax
    # The threshold is a whole number of the 2048 bins, never fewer than 128 of them.
    assert amax * ENTROPY_BINS / absmax == pytest.approx(round(amax * ENTROPY_BINS / absmax))
    assert amax >= ENTROPY_LEVELS * absmax / ENTROPY_BINS


def test_unknown_method_and_bad_percentile_are_errors() -> None:
    stats, absmax = statistics_of(np.linspace(-1, 1, 1000))
    with pytest.raises(CalibrationError, match="choose one of max, percentile, entropy"):
        amax_from_statistics(stats, "mse")
    with pytest.raises(CalibrationError, match="percentile"):
        percentile_amax(stats.histograms["x"], absmax, 0.0)


# ------------------------------------------------------------------------------------------- Swin-T Q/DQ graph

@pytest.fixture(scope="module")
def int8_swin_t(swin_t_onnx, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Int8Report, float]:
    """(FP32 surgered path, INT8 path, report, seconds) of a percentile calibration on generated crops."""
    _, swin_path, _ = swin_t_onnx
    out = tmp_path_factory.mktemp("int8") / "model.swin.int8.onnx"
    started = time.perf_counter()
    report = quantize_int8(swin_path, out, samples=CALIB_SAMPLES)
    return swin_path, out, report, time.perf_counter() - started


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in model.graph.node for out in node.output}


def test_report_lists_every_layer_with_its_role(int8_swin_t) -> None:
    _, _, report, _ = int8_swin_t
    roles = collections.Counter(layer.role for layer in report.quantized_layers)
    assert roles == {"patch_embed": 1, "qkv": 12, "proj": 12, "fc1": 12, "fc2": 12, "patch_merging": 3, "head": 1}
    names = [layer.name for layer in report.quantized_layers]
    assert names[:3] == ["patch_embed.proj", "layers.0.blocks.0.attn.qkv", "layers.0.blocks.0.attn.proj"]
    assert {"layers.2.blocks.5.mlp.fc2", "layers.2.downsample.reduction", "head"} <= set(names)
    assert report.excluded_layers == () and not report.cache_hit
    assert report.method == "percentile" and report.calibration.generated
    assert report.calibration.samples == CALIB_SAMPLES
    # What the precision stage records in stages.json and report.json, and reads back.
    recorded = report.to_json()
    assert list(recorded) == ["input", "output", "method", "percentile", "samples", "calibration", "cache",
                              "cache_hit", "exclude", "quantized_layers", "excluded_layers", "timing_s"]
    assert recorded["quantized_layers"][0] == {"name": "patch_embed.proj", "role": "patch_embed",
                                               "node": report.quantized_layers[0].node, "activation": "images",
                                               "weight": report.quantized_layers[0].weight, "weight_axis": 0}
    assert recorded["calibration"]["generated"] and recorded["percentile"] == 99.99
    assert Int8Report.from_json(recorded) == report


def test_qdq_structure_on_swin_t(int8_swin_t) -> None:
    swin_path, int8_path, report, _ = int8_swin_t
    fp32, int8 = onnx.load(str(swin_path)), onnx.load(str(int8_path))
    onnx.checker.check_model(int8)
    by_name = {n.name: n for n in int8.graph.node}
    produced_by = producers(int8)
    weights = {t.name: numpy_helper.to_array(t) for t in int8.graph.initializer}
    fp32_nodes = {n.name: n for n in fp32.graph.node}
    expected_axis = {"patch_embed": 0, "head": 0}  # Conv [O, I, kh, kw]; Gemm with transB=1 stores [N, K]
    for layer in report.quantized_layers:
        node, original = by_name[layer.node], fp32_nodes[layer.node]
        for index, per_channel in ((0, False), (1, True)):
            dequantize = produced_by[node.input[index]]
            quantize = produced_by[dequantize.input[0]]
            assert (dequantize.op_type, quantize.op_type) == ("DequantizeLinear", "QuantizeLinear"), layer.name
            assert quantize.input[0] == original.input[index], "Q/DQ must wrap the original tensor"
            scale, zero_point = weights[quantize.input[1]], weights[quantize.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any() and (scale > 0).all()
            axes = {a.name: a.i for a in quantize.attribute}
            if not per_channel:
                assert scale.shape == () and "axis" not in axes
                continue
            axis = expected_axis.get(layer.role, 1)  # MatMul weights are [K, N]
            weight = weights[original.input[1]]
            assert axes == {"axis": axis} and {a.name: a.i for a in dequantize.attribute} == {"axis": axis}
            other_axes = tuple(a for a in range(weight.ndim) if a != axis)
            np.testing.assert_allclose(scale, np.abs(weight).max(axis=other_axes) / 127, rtol=1e-6)
    ops = collections.Counter(n.op_type for n in int8.graph.node)
    assert ops["QuantizeLinear"] == ops["DequantizeLinear"] == 2 * 53
    # Attention, LayerNorm and the residual stream keep the FP32 tensors they had.
    for node in int8.graph.node:
        if node.op_type in (PLUGIN_OP, "LayerNormalization", "Add", "Softmax", "Erf"):
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear"
                       for i in node.input), node.name
    assert {op: n for op, n in ops.items() if op not in ("QuantizeLinear", "DequantizeLinear")} == collections.Counter(
        n.op_type for n in fp32.graph.node), "Q/DQ is all that is added"


def test_int8_logits_match_fp32_on_held_out_photos(int8_swin_t) -> None:
    swin_path, int8_path, _, _ = int8_swin_t
    images = image_array(None, 4, seed=EVAL_SEED)
    reference = ort_session(swin_path).run(None, {"images": images})[0]
    actual = ort_session(int8_path).run(None, {"images": images})[0]
    cosine = np.sum(reference * actual, 1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(actual, axis=1))
    assert cosine.min() >= 0.99, cosine


def test_int8_graph_verifies_on_held_out_photos_with_every_tolerance_and_polygraphy(int8_swin_t, swin_t,
                                                                                   tmp_path: Path) -> None:
    """What the verify stage does for INT8 on a machine without a GPU: the INT8+FP16 graph against PyTorch on
    crops calibration never saw, judged by SQNR, top-1, cosine and Polygraphy's (scaled) tolerance."""
    from pipeline.common.compare import TOLERANCES
    from pipeline.stages.precision import convert_fp16
    from pipeline.stages.verify import verify

    _, int8_path, _, _ = int8_swin_t
    typed = tmp_path / "model.swin.int8.onnx"
    convert_fp16(int8_path, typed)
    report = verify(swin_t, typed, "int8", images=image_array(None, 8, seed=EVAL_SEED), batch=4)
    assert report.passed and report.polygraphy_compare_accuracy_passed is True
    assert report.thresholds == TOLERANCES["int8"]
    logits = report.outputs["logits"]
    # Measured (benchmarks/results/int8_thresholds_swin_t.json, 64 calibration samples): 31.7 dB, max_rel 0.028.
    assert logits.sqnr_db > 28 and logits.max_rel < 0.06 and logits.top1_agreement >= 0.875


def test_exclusions_by_role_glob_and_node_name(int8_swin_t, tmp_path: Path) -> None:
    swin_path, _, first, _ = int8_swin_t
    fc1_node = first.quantized_layers[3].node
    report = quantize_int8(swin_path, tmp_path / "int8.onnx", samples=CALIB_SAMPLES,
                           exclude=["fc2", "layers.3.*", fc1_node], cache_path=first.cache)
    assert report.cache_hit, "a subset of the calibrated tensors needs no new calibration"
    excluded = {layer.name for layer in report.excluded_layers}
    assert {f"layers.{s}.blocks.{b}.mlp.fc2" for s, b in ((0, 0), (1, 1), (2, 5))} <= excluded
    assert {"layers.3.blocks.1.attn.qkv", "layers.0.blocks.0.mlp.fc1"} <= excluded
    assert "layers.0.blocks.1.mlp.fc1" not in excluded
    assert len(excluded) + len(report.quantized_layers) == 53
    int8 = onnx.load(str(tmp_path / "int8.onnx"))
    produced_by = producers(int8)
    for node in (n for n in int8.graph.node if n.name == fc1_node):
        assert all(i not in produced_by or produced_by[i].op_type != "DequantizeLinear" for i in node.input)
    with pytest.raises(PipelineError, match=f"'stage4' matches no quantizable layer.*{'.*'.join(ROLES)}"):
        quantize_int8(swin_path, tmp_path / "never.onnx", exclude=["stage4"])
    assert not (tmp_path / "never.onnx").exists()


def test_swin_l_default_keeps_fc2_and_patch_merging_in_higher_precision(swin_t_onnx) -> None:
    model = onnx.load(swin_t_onnx[1], load_external_data=False)
    assert default_exclusions(model) == ()
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    weight = next(t for t in model.graph.initializer if t.name == conv.input[1])
    weight.dims[0] = 192  # only the embed dim is read: Swin-L's
    assert default_exclusions(model) == ("fc2", "patch_merging")
    assert len(find_quantizable_layers(model, ATTENTION_OPS)) == 53


def test_larger_images_go_fewer_to_a_run_and_the_ranges_do_not_depend_on_it(swin_t_onnx) -> None:
    """A fixed batch of 8 took more than 23 GB for a detection backbone at 800×1333 (each run returns every
    quantized layer's input: ~2.8 GB an image there); the batch only sets memory, never the ranges."""
    assert [calibration_batch(size) for size in (224, 384, (800, 1333), 64)] == [8, 2, 1, 98]
    model = onnx.load(str(swin_t_onnx[1]))
    tensors = list(dict.fromkeys(layer.activation for layer in find_quantizable_layers(model, ATTENTION_OPS)))
    images = image_array(None, 3, img_size=224)
    progress: list[tuple[int, int, str]] = []
    one_run = collect_absmax(model, images, tensors, 3, new_session=calibration_session)
    three_runs = collect_absmax(model, images, tensors, 1, new_session=calibration_session,
                                progress=lambda *line: progress.append(line))
    assert one_run == pytest.approx(three_runs, rel=1e-5)
    assert progress == [(done, 3, "images (calibration: absmax)") for done in (1, 2, 3)]
    with pytest.raises(CalibrationError, match="batch size must be >= 1, got 0"):
        collect_absmax(model, images, tensors, 0, new_session=calibration_session)


def test_cache_is_reused_until_model_method_or_data_change(int8_swin_t, tmp_path: Path) -> None:
    swin_path, int8_path, first, first_s = int8_swin_t
    started = time.perf_counter()
    again = quantize_int8(swin_path, tmp_path / "again.onnx", samples=CALIB_SAMPLES, cache_path=first.cache)
    assert again.cache_hit and time.perf_counter() - started < first_s / 2
    assert again.timing_s.calibrate < 3
    scales = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(int8_path)).graph.initializer
              if t.name.endswith(".scale")}
    for t in onnx.load(str(tmp_path / "again.onnx")).graph.initializer:
        if t.name in scales:
            np.testing.assert_array_equal(numpy_helper.to_array(t), scales[t.name])

    small = {"samples": 8, "cache_path": tmp_path / "cache.json"}
    assert not quantize_int8(swin_path, tmp_path / "a.onnx", method="max", **small).cache_hit
    assert quantize_int8(swin_path, tmp_path / "a.onnx", method="max", **small).cache_hit
    assert not quantize_int8(swin_path, tmp_path / "a.onnx", method="max", seed=1, **small).cache_hit
    changed = onnx.load(str(swin_path))
    changed.graph.initializer[0].raw_data = bytes(len(changed.graph.initializer[0].raw_data))
    onnx.save(changed, str(tmp_path / "changed.swin.onnx"))
    assert not quantize_int8(tmp_path / "changed.swin.onnx", tmp_path / "a.onnx", method="max", seed=1,
                             **small).cache_hit
