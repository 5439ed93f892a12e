"""Images for calibration and verification: folder scanning, preprocessing, unreadable files, seeding, the generated
folder."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.common.errors import PipelineError
from pipeline.common.imagenet_transform import IMAGENET_MEAN, IMAGENET_STD, preprocess
from pipeline.common.images import (
    GENERATED_README,
    generate_image_folder,
    image_array,
    list_images,
    load_image_set,
)

#: One file per accepted format, some in sub-folders and with upper-case suffixes.
FORMATS = {"a.png": "PNG", "sub/b.JPG": "JPEG", "sub/deeper/c.jpeg": "JPEG", "d.BMP": "BMP", "e.webp": "WEBP",
           "sub/f.tif": "TIFF", "g.TIFF": "TIFF"}


def write_images(folder: Path, names: dict[str, str], seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for name, image_format in names.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (40 + len(paths), 60, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format=image_format)
        paths.append(path)
    return paths


def test_finds_every_format_recursively_in_any_case(tmp_path: Path) -> None:
    expected = write_images(tmp_path, FORMATS)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub" / "model.onnx").write_bytes(b"\0")
    assert list_images(tmp_path) == sorted(expected)
    report = load_image_set(tmp_path, len(FORMATS), img_size=32).report()
    assert (report["files_found"], report["files_used"], report["files_skipped"]) == (7, 7, 0)


def test_unreadable_file_is_skipped_counted_and_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_images(tmp_path, {"a.png": "PNG", "b.png": "PNG"})
    (tmp_path / "broken.jpg").write_bytes(b"this is not a JPEG")
    with caplog.at_level(logging.WARNING):
        calibration = load_image_set(tmp_path, 3, img_size=32)
    assert [p.name for p in calibration.files_skipped] == ["broken.jpg"]
    assert calibration.report()["files_skipped"] == 1 and len(calibration.files_used) == 2
    assert calibration.images.shape == (3, 3, 32, 32)  # the missing sample comes from an augmented crop
    assert "broken.jpg" in caplog.text


def test_sixteen_bit_images_are_scaled_and_float_images_refused(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """Pillow's own conversion turns a 16-bit grayscale photo (industrial and medical cameras) nearly white and a
    float one black, which would calibrate INT8 ranges on blank images without a word."""
    eight_bit = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    Image.fromarray(eight_bit.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # 0..255 → 0..65535
    Image.fromarray(eight_bit.astype(np.float32) / 255).save(tmp_path / "float.tif")
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")
    with caplog.at_level(logging.WARNING):
        images = load_image_set(tmp_path, 1, img_size=(40, 60))
    assert [p.name for p in images.files_used] == ["sixteen.png"]
    assert "float.tif: a floating-point image" in caplog.text
    rgb = np.repeat(eight_bit[..., None], 3, axis=2)
    expected = preprocess(Image.fromarray(rgb), (40, 60))
    np.testing.assert_allclose(images.images[0], expected, atol=1e-6)


@pytest.mark.parametrize("make", ["missing", "empty", "only_text"])
def test_missing_or_empty_folder_is_an_actionable_error(tmp_path: Path, make: str) -> None:
    folder = tmp_path / "photos"
    if make != "missing":
        folder.mkdir()
    if make == "only_text":
        (folder / "readme.txt").write_text("no images here")
    with pytest.raises(PipelineError, match=r"photos.*\.jpg.*\.tiff") as error:
        image_array(folder, 4)
    assert str(folder) in str(error.value)


def test_all_files_unreadable_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="none of the 1 image files"):
        image_array(tmp_path, 2)


def test_imagenet_preprocessing_of_a_known_image(tmp_path: Path) -> None:
    # A solid colour survives resizing and cropping exactly, so every pixel has a known normalized value.
    colour = np.array([255, 128, 0], np.uint8)
    Image.fromarray(np.broadcast_to(colour, (300, 500, 3)).copy()).save(tmp_path / "solid.png")
    images = image_array(tmp_path, 1, img_size=224)
    assert images.shape == (1, 3, 224, 224) and images.dtype == np.float32
    expected = (colour / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(images[0].reshape(3, -1), np.broadcast_to(expected[:, None], (3, 224 * 224)),
                               atol=1e-5)
    assert image_array(tmp_path, 1, img_size=(64, 96)).shape == (1, 3, 64, 96)


def test_centre_crop_keeps_the_middle_of_the_shorter_side(tmp_path: Path) -> None:
    # Left half black, right half white: the 224 crop of the 256-wide resize sees 16 px less on each side.
    pixels = np.zeros((256, 256, 3), np.uint8)
    pixels[:, 128:] = 255
    Image.fromarray(pixels).save(tmp_path / "halves.png")
    row = image_array(tmp_path, 1)[0, 0, 112]
    assert (row[:110] < 0).all() and (row[114:] > 0).all()


def test_sampling_is_seeded_and_extra_samples_differ(tmp_path: Path) -> None:
    write_images(tmp_path, {f"{i}.png": "PNG" for i in range(3)})
    first = image_array(tmp_path, 8, seed=5, img_size=32)
    np.testing.assert_array_equal(first, image_array(tmp_path, 8, seed=5, img_size=32))
    assert not np.array_equal(first, image_array(tmp_path, 8, seed=6, img_size=32))
    flat = first.reshape(len(first), -1)
    assert len(np.unique(flat, axis=0)) == len(first), "samples beyond the file count must be new crops"
    assert load_image_set(tmp_path, 8, img_size=32).augmented_samples == 5


def test_generated_folder_is_labelled_reused_and_loadable(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = generate_image_folder(tmp_path / "generated-calibration-images", 4, seed=0)
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 4 and "GENERATED" in (folder / GENERATED_README).read_text()
    assert all(min(Image.open(p).size) == 256 for p in pngs)
    stamps = [p.stat().st_mtime_ns for p in pngs]
    generate_image_folder(folder, 4, seed=0)
    assert [p.stat().st_mtime_ns for p in pngs] == stamps, "an identical generation is reused, not rewritten"
    generate_image_folder(folder, 3, seed=1)
    assert len(list(folder.glob("*.png"))) == 3
    with caplog.at_level(logging.WARNING):
        images = image_array(None, 2, img_size=64)
    assert images.shape == (2, 3, 64, 64) and "generated" in caplog.text
