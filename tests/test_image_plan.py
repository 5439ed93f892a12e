"""Calibration and verification never share an image: the split of a calibration folder, IMAGES overlapping it,
folders too small to split, and the stage fingerprints that follow the split. No model runs here."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import MIN_SPLIT_FILES, plan_images
from pipeline.make import _precision_params, _verify_params
from pipeline.recipe import EngineJob, EngineRecipe
from pipeline.stages.int8 import calibration_images


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` distinct small PNGs, half of them one folder down (the split hashes relative paths)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / ("sub" if i % 2 else "") / f"photo_{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return sorted(paths)


def relative(paths: tuple[Path, ...] | None, folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in paths or ())


def test_calib_dir_alone_is_split_deterministically_and_disjointly(tmp_path: Path) -> None:
    files = write_photos(tmp_path / "calib", 42)
    plan = plan_images("int8", tmp_path / "calib", None)
    calibration, verification = plan.calibration, plan.verification
    assert calibration is not None
    assert (calibration.source, verification.source) == ("calib-split", "calib-split")
    held_out = relative(verification.files, tmp_path / "calib")
    calibrated = relative(calibration.files, tmp_path / "calib")
    assert len(held_out) == 42 // 4 and not set(held_out) & set(calibrated)
    assert sorted(held_out + calibrated) == relative(tuple(files), tmp_path / "calib")
    # The held-out files are those whose relative path hashes lowest: the same on any machine, in any folder.
    by_hash = sorted(calibrated + held_out, key=lambda name: hashlib.sha256(name.encode()).hexdigest())
    assert held_out == sorted(by_hash[:10])
    shutil.copytree(tmp_path / "calib", tmp_path / "moved")
    moved = plan_images("fp16", tmp_path / "moved", None)
    assert moved.calibration is None and relative(moved.verification.files, tmp_path / "moved") == held_out
    assert "10 of the 42 images held out" in (calibration.note or "")


def test_a_folder_too_small_to_split_calibrates_on_all_and_verifies_on_generated_crops(tmp_path: Path) -> None:
    write_photos(tmp_path, MIN_SPLIT_FILES - 1)
    plan = plan_images("int8", tmp_path, None)
    assert plan.calibration is not None and plan.calibration.source == "calib-dir"
    assert len(plan.calibration.files or ()) == MIN_SPLIT_FILES - 1
    assert plan.verification.source == "generated" and plan.verification.folder is None
    assert f"holds {MIN_SPLIT_FILES - 1} images, too few to hold out" in (plan.verification.note or "")
    write_photos(tmp_path / "more", 1, seed=1)
    assert plan_images("int8", tmp_path, None).verification.source == "calib-split"


def test_images_that_are_calibration_images_are_left_out_or_refused(tmp_path: Path) -> None:
    calib = write_photos(tmp_path / "calib", 20)
    others = write_photos(tmp_path / "images", 3, seed=5)
    shutil.copy(calib[3], tmp_path / "images" / "renamed_copy.png")  # same content, another name
    plan = plan_images("int8", tmp_path / "calib", tmp_path / "images")
    assert plan.calibration is not None and plan.calibration.source == "calib-dir"
    assert len(plan.calibration.files or ()) == 20  # IMAGES given: nothing of calib_dir is held out
    verification = plan.verification
    assert verification.source == "images" and sorted(verification.files or ()) == others
    assert verification.excluded == (tmp_path / "images" / "renamed_copy.png",)
    assert "left out 1 of the 4 images" in (verification.note or "")
    # No calibration, nothing to exclude; and FP16 never reads calib_dir when IMAGES is given.
    assert plan_images("fp16", tmp_path / "calib", tmp_path / "images").verification.excluded == ()
    assert plan_images("fp16", tmp_path / "missing", tmp_path / "images").verification.source == "images"

    for path in others:
        path.unlink()
    with pytest.raises(PipelineError, match=r"every image under .*images is also a calibration image .*--images"):
        EngineRecipe(precision="int8", calib_dir=tmp_path / "calib", images=tmp_path / "images").validate("precision")


def test_images_that_are_generated_calibration_crops_are_left_out(tmp_path: Path) -> None:
    generated = tmp_path / "out" / "generated-calibration-images"
    write_photos(generated, 2)
    shutil.copytree(generated, tmp_path / "images")
    write_photos(tmp_path / "images" / "own", 1, seed=3)
    plan = plan_images("int8", None, tmp_path / "images", generated_calib_dir=generated)
    assert plan.calibration is not None and plan.calibration.source == "generated"
    assert len(plan.verification.excluded) == 2 and len(plan.verification.files or ()) == 1


def test_augmentation_to_reach_the_sample_count_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = write_photos(tmp_path, 5)
    with caplog.at_level(logging.INFO, logger="pipeline.stages.int8"):
        samples, folder = calibration_images(tmp_path, 8, seed=0, size=16, out_dir=tmp_path, files=files[:3])
    assert (len(samples), len(samples.files_used), samples.augmented_samples, folder) == (8, 3, 5, tmp_path)
    assert f"calibration: 3 photos + 5 augmented crops = 8 samples from {tmp_path}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.stages.int8"):
        calibration_images(tmp_path, 5, seed=0, size=16, out_dir=tmp_path)
    assert f"calibration: 5 photos = 5 samples from {tmp_path}" in caplog.text and "augmented" not in caplog.text


def test_stage_fingerprints_follow_each_part_of_the_split(tmp_path: Path) -> None:
    """Calibration depends on its part only, verification on its own: touching a held-out photo re-verifies and
    does not re-calibrate; a new photo changes what calibration reads."""
    write_photos(tmp_path / "calib", 20)
    run = EngineJob(EngineRecipe(precision="int8", calib_dir=tmp_path / "calib"), tmp_path / "out")
    plan = run.recipe.image_plan()
    assert plan.calibration is not None
    precision, verify = _precision_params(run), _verify_params(run)
    assert [name for name, _, _ in precision["listing"]] == [str(p) for p in plan.calibration.files or ()]
    assert [name for name, _, _ in verify["listing"]] == [str(p) for p in plan.verification.files or ()]
    assert precision["images"]["source"] == verify["images"]["source"] == "calib-split"

    held_out = (plan.verification.files or ())[0]
    Image.new("RGB", (30, 30), (1, 2, 3)).save(held_out)
    assert _precision_params(run) == precision and _verify_params(run) != verify
    write_photos(tmp_path / "calib" / "new", 1, seed=9)
    assert _precision_params(run)["listing"] != precision["listing"]
