"""The verify stage on the CPU path: the surgered Swin-T ONNX (onnxruntime with the reference op) against the
PyTorch model it was exported from passes in FP32; a perturbed model fails with our error and still leaves
its report."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest

from pipeline.common.compare import TOLERANCES, Metrics, Tolerances
from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import plan_images
from pipeline.common.images import default_image_count
from pipeline.models import perturb_weights_
from pipeline.recipe import ModelRecord
from pipeline.stages.precision import convert_fp16
from pipeline.stages.verify import VerifyImages, VerifyReport, verify
from pipeline.tensorrt.build import build_engine

BATCH = 4  # swin_t_onnx is exported with a batch of at most 4


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    try:
        from pipeline.common.images import image_array
    except ImportError:  # calib/ lands in parallel; random images still exercise the comparison
        return np.random.default_rng(1).normal(size=(8, 3, 224, 224)).astype(np.float32)
    return image_array(None, 8, seed=1)


def test_fp32_onnx_matches_pytorch(swin_t, swin_t_onnx, images, tmp_path):
    out = tmp_path / "verify.json"
    report = verify(swin_t, swin_t_onnx[1], "fp32", images=images, batch=BATCH, out_path=out).to_json()
    assert json.loads(out.read_text()) == report
    assert report["passed"] and report["polygraphy_compare_accuracy_passed"]
    assert report["runners"] == ["pytorch-cpu", "onnxruntime-cpu"]
    assert report["executed"] == {"kind": "onnx", "path": str(swin_t_onnx[1]), "backend": "onnxruntime",
                                  "gpu": None, "instead_of": None,
                                  "attention_kernel": "reference (pipeline/kernels/reference.py)"}
    assert report["thresholds"] == TOLERANCES["fp32"].to_json()
    assert "sizes" not in report  # only an engine taking a range of sizes has them
    with pytest.raises(PipelineError, match="takes 224x224 images only"):
        verify(swin_t, swin_t_onnx[1], "fp32", sizes=((224, 224),))
    assert VerifyImages.from_json(report["images"]) == VerifyImages(source="given", count=8, batch=BATCH)
    logits = report["outputs"]["logits"]
    assert logits["max_abs"] < 1e-4 and logits["cosine_min"] > 0.99999 and logits["top1_agreement"] == 1.0
    assert logits["sqnr_db"] > 60


def test_fp16_onnx_within_fp16_thresholds(swin_t, swin_t_onnx, images, tmp_path):
    fp16_path = tmp_path / "model.swin.fp16.onnx"
    convert_fp16(swin_t_onnx[1], fp16_path)
    logits = verify(swin_t, fp16_path, "fp16", images=images, batch=BATCH).outputs["logits"].to_json()
    assert logits["max_abs"] <= TOLERANCES["fp16"].max_abs and logits["top1_agreement"] == 1.0


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx_bindings") is None,
                    reason="TensorRT-RTX is not installed (pip install -e '.[rtx]')")
def test_engine_without_gpu_verifies_the_onnx_it_was_built_from(swin_t, swin_t_onnx, images, plugin_library,
                                                                 tmp_path):
    engine = tmp_path / "model.swin.engine"
    build_engine(swin_t_onnx[1], engine, plugin_library=plugin_library, batch=(1, 4, 4), backend="rtx")
    report = verify(swin_t, engine, "fp32", images=images[:BATCH], batch=BATCH)
    assert report.passed
    assert report.executed.path == str(swin_t_onnx[1].resolve())
    assert report.executed.instead_of == str(engine)
    with pytest.raises(PipelineError, match="is missing or not the ONNX it was built from"):
        verify(swin_t, engine, "fp32", images=images[:BATCH], onnx_path=swin_t_onnx[0])


def test_wrong_model_fails_and_writes_the_report(swin_t, swin_t_onnx, images, tmp_path):
    wrong = perturb_weights_(copy.deepcopy(swin_t), seed=1, std=0.05)
    out = tmp_path / "verify.json"
    with pytest.raises(PipelineError, match=r"does not match the PyTorch model: logits: max abs error .* "
                                            r"\(limit <= 0.001\).*Polygraphy compare_accuracy failed"):
        verify(wrong, swin_t_onnx[1], "fp32", images=images, batch=BATCH, out_path=out)
    report = json.loads(out.read_text())
    assert report["passed"] is False and report["outputs"]["logits"]["passed"] is False
    assert report["outputs"]["logits"]["max_abs"] > 1e-3


def test_bad_arguments_are_our_errors(swin_t, swin_t_onnx, tmp_path):
    with pytest.raises(PipelineError, match="unknown precision 'bf16'"):
        verify(swin_t, swin_t_onnx[1], "bf16")
    with pytest.raises(PipelineError, match=r"missing\.engine does not exist"):
        verify(swin_t, tmp_path / "missing.engine", "fp32")
    with pytest.raises(PipelineError, match=r"images have shape \[2, 3, 32, 32\]"):
        verify(swin_t, swin_t_onnx[1], "fp32", images=np.zeros((2, 3, 32, 32), np.float32))


def test_verification_records_the_source_and_the_files_it_used(swin_t, swin_t_onnx, tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, color in enumerate(((200, 40, 40), (30, 160, 90))):
        Image.new("RGB", (300, 260), color).save(photos / f"{i}.png")
    model_record = ModelRecord(variant="T", features_only=False, img_size=(32, 32), checkpoint="weights.pth",
                               checkpoint_sha256="ab" * 32, weights="checkpoint")
    report = verify(swin_t, swin_t_onnx[1], "fp32", image_dir=photos, image_count=4, batch=BATCH,
                    model_record=model_record)
    assert report.passed and report.model == model_record
    assert VerifyReport.from_json(json.loads(json.dumps(report.to_json()))).model == model_record
    images = report.images
    assert (images.source, images.folder, images.count) == ("images", str(photos), 4)
    assert images.files == ("0.png", "1.png") and images.augmented_samples == 2  # two random crops of them

    # The part of a calibration folder that INT8 calibration holds out: only those files, named in the report.
    rng = np.random.default_rng(0)
    for i in range(16):
        Image.fromarray(rng.integers(0, 256, (240, 240, 3), dtype=np.uint8)).save(tmp_path / f"calib_{i:02d}.png")
    plan = plan_images("int8", tmp_path, None)
    report = verify(swin_t, swin_t_onnx[1], "fp32", image_dir=plan.verification, image_count=4,
                    batch=BATCH).to_json()
    held_out = sorted(p.name for p in plan.verification.files)
    assert report["images"]["source"] == "calib-split" and report["images"]["folder"] == str(tmp_path)
    assert sorted(report["images"]["files"]) == held_out and len(held_out) == 4
    assert not set(held_out) & {p.name for p in plan.calibration.files}
    assert report["images"]["count"] == 4 and report["images"]["augmented_samples"] == 0


def metrics(**values) -> Metrics:
    good = {"max_abs": 0.08, "max_rel": 0.03, "mean_abs": 0.01, "cosine_mean": 0.9996, "cosine_min": 0.9994,
            "top1_agreement": 0.97, "sqnr_db": 31.7}
    return Metrics(**{**good, **values})


def test_int8_tolerances_judge_sqnr_and_top1_not_cosine_alone():
    int8 = TOLERANCES["int8"]
    assert int8.failures(metrics()) == []
    assert int8.failures(metrics(sqnr_db=20.0)) == ["SQNR 20 dB (limit >= 25 dB)"]
    assert int8.failures(metrics(top1_agreement=0.875)) == ["top-1 agreement 0.875 (limit >= 0.9)"]
    assert int8.failures(metrics(max_rel=0.5, cosine_min=0.9)) == ["max relative error 0.5 (limit <= 0.15)",
                                                                   "cosine min 0.9 (limit >= 0.99)"]
    # A feature map has no top-1: SQNR, cosine and the relative error judge it.
    assert int8.failures(metrics(top1_agreement=None)) == []
    assert int8.failures(metrics(top1_agreement=None, sqnr_db=24.0)) == ["SQNR 24 dB (limit >= 25 dB)"]
    # Polygraphy's tolerance scales with the batch's outputs for INT8, and is absolute for FP32/FP16.
    assert int8.polygraphy_atol(np.array([[-4.0, 2.0]])) == pytest.approx(0.6)
    assert int8.polygraphy_atol(np.array([[0.5]])) == pytest.approx(0.15)
    assert TOLERANCES["fp16"].polygraphy_atol(np.array([[40.0]])) == 2e-2
    assert all(t.max_abs is not None or t.max_rel is not None for t in TOLERANCES.values())
    assert Tolerances().failures(metrics(sqnr_db=0.0)) == []


def test_an_int8_result_below_sqnr_and_top1_fails_in_one_line(swin_t, swin_t_onnx, images, tmp_path):
    wrong = perturb_weights_(copy.deepcopy(swin_t), seed=1, std=0.03)
    out = tmp_path / "verify.json"
    with pytest.raises(PipelineError) as error:
        verify(wrong, swin_t_onnx[1], "int8", images=images, batch=BATCH, out_path=out)
    message = str(error.value)
    assert "\n" not in message and f"report: {out}" in message
    assert "(int8) does not match the PyTorch model: logits: " in message
    assert "dB (limit >= 25 dB)" in message and "(limit >= 0.9)" in message
    report = json.loads(out.read_text())
    assert report["polygraphy_compare_accuracy_passed"] is False and report["thresholds"]["sqnr_db_min"] == 25


def test_default_image_count_keeps_the_pixels_of_32_images_at_224():
    assert [default_image_count(*size) for size in ((224, 224), (160, 224), (384, 384), (800, 1333))] == [32, 32, 10, 4]
