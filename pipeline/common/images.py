"""Images for calibration and verification: a folder of photos → ImageNet-preprocessed float32 batches.

Calibration has to see real images: activation ranges of noise inputs differ from those of photos; verification
compares on them for the same reason. Without a user folder, :func:`generate_image_folder` writes crops of the
photos that ship with scikit-image, in a folder labelled as generated, so nobody mistakes it for a real data set.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.common.errors import PipelineError
from pipeline.common.imagenet_transform import center_crop, normalize, read_rgb

log = logging.getLogger(__name__)

#: File name suffixes read from an image folder (compared case-insensitively).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: The folder name :func:`generate_image_folder` is meant to be used with, and its label file.
GENERATED_FOLDER_NAME = "generated-calibration-images"
GENERATED_README = "README.txt"
#: scikit-image photos available offline in scikit-image 0.26 (``stereo_motorcycle`` gives two views);
#: the grayscale ones are repeated into three channels.
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "retina", "stereo_motorcycle", "camera", "moon", "coins", "clock", "brick", "grass", "gravel",
                  "cell", "page", "text")
#: Random crops cover this fraction range of the image area, like torchvision's RandomResizedCrop.
CROP_AREA = (0.25, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
#: Verification images at 224×224 (fewer at larger sizes: :func:`default_image_count`), and never fewer than this.
DEFAULT_IMAGE_COUNT = 32
MIN_IMAGE_COUNT = 4

ImageSize = int | tuple[int, int]


@dataclass
class ImageSet:
    """Preprocessed samples and where they came from. The samples are kept as their uint8 crops, a quarter of the
    memory of the float32 they become (256 calibration samples at 800×1333: 0.8 GB, not 3.3): indexing with a
    slice, or :attr:`images` for all of them, normalizes on demand."""

    pixels: np.ndarray  #: uint8 [count, H, W, 3]: each sample's crop, before normalization
    folder: Path
    files_found: int
    files_used: list[Path] = field(default_factory=list)
    files_skipped: list[Path] = field(default_factory=list)
    augmented_samples: int = 0

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, samples: slice) -> np.ndarray:
        """float32 ``[n, 3, H, W]``, ImageNet-normalized."""
        return normalize(self.pixels[samples])

    @property
    def images(self) -> np.ndarray:
        """Every sample, float32 ``[count, 3, H, W]``."""
        return self[:]

    def report(self) -> dict:
        return {"folder": str(self.folder), "files_found": self.files_found, "files_used": len(self.files_used),
                "files_skipped": len(self.files_skipped), "skipped": [str(p) for p in self.files_skipped],
                "samples": len(self), "augmented_samples": self.augmented_samples}


def _hw(img_size: ImageSize) -> tuple[int, int]:
    return (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))


def list_images(folder: str | Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted; a PipelineError if there is none."""
    folder = Path(folder)
    accepted = ", ".join(IMAGE_SUFFIXES)
    if not folder.is_dir():
        raise PipelineError(f"image folder {folder} does not exist or is not a folder; pass a folder of photos "
                            f"({accepted}), or none to use generated crops of the scikit-image photos")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise PipelineError(f"image folder {folder} contains no images (searched recursively for {accepted}, "
                            "any case); put a few hundred representative photos there")
    return files


def default_image_count(height: int, width: int) -> int:
    """``DEFAULT_IMAGE_COUNT`` at 224×224, fewer at larger sizes (the same pixel budget), never under
    ``MIN_IMAGE_COUNT``: a 800×1333 backbone compares millions of values per image, and its PyTorch and
    onnxruntime passes on a CPU cost seconds per image."""
    budget = DEFAULT_IMAGE_COUNT * 224 * 224
    return max(MIN_IMAGE_COUNT, min(DEFAULT_IMAGE_COUNT, budget // (height * width)))


def _read_rgb(path: Path) -> Image.Image | None:
    """The image as RGB, or None (with a warning) when the file cannot be decoded."""
    try:
        return read_rgb(path)
    except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
        log.warning("skipping unreadable image %s: %s", path, exc)
        return None


def _random_region(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random crop of 25–100 % of the area (aspect 3/4–4/3), flipped left-right half the time."""
    area = image.width * image.height * rng.uniform(*CROP_AREA)
    aspect = np.exp(rng.uniform(*np.log(CROP_ASPECT)))
    width = min(image.width, max(1, round(np.sqrt(area * aspect))))
    height = min(image.height, max(1, round(np.sqrt(area / aspect))))
    left = int(rng.integers(0, image.width - width + 1))
    top = int(rng.integers(0, image.height - height + 1))
    crop = image.crop((left, top, left + width, top + height))
    return crop.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop


def load_image_set(folder: str | Path, count: int, seed: int = 0, img_size: ImageSize = 224,
                   files: Sequence[Path] | None = None) -> ImageSet:
    """Draw ``count`` preprocessed samples from the images under ``folder`` (only ``files`` of them, if given: one
    part of a split folder); see :func:`image_set`."""
    if count < 1:
        raise PipelineError(f"need at least one image, got count={count}")
    files = list_images(folder) if files is None else list(files)
    size = _hw(img_size)
    rng = np.random.default_rng(seed)
    result = ImageSet(np.empty((count, *size, 3), np.uint8), Path(folder), len(files))
    filled = 0
    # First round: distinct files in a seeded order, each with the plain evaluation transform.
    for index in rng.permutation(len(files)):
        if filled == count:
            break
        image = _read_rgb(files[index])
        if image is None:
            result.files_skipped.append(files[index])
            continue
        result.files_used.append(files[index])
        result.pixels[filled] = np.asarray(center_crop(image, size))
        filled += 1
    if not result.files_used:
        raise PipelineError(f"none of the {len(files)} image files under {folder} could be read; "
                            "see the warnings above for each file's error")
    # More samples than readable files: cycle through them again with random crops and flips so no two
    # samples are the same image.
    usable = list(result.files_used)
    while filled < count:
        for index in rng.permutation(len(usable)):
            if filled == count:
                break
            image = _read_rgb(usable[index])
            assert image is not None  # it was read a moment ago
            region = _random_region(image, rng)
            result.pixels[filled] = np.asarray(region.resize((size[1], size[0]), Image.BILINEAR))
            filled += 1
            result.augmented_samples += 1
    if result.files_skipped:
        log.warning("images: skipped %d unreadable file(s) under %s", len(result.files_skipped), folder)
    return result


def image_array(folder: str | Path | None, count: int, seed: int = 0, img_size: ImageSize = 224) -> np.ndarray:
    """The images of :func:`image_set`, float32 ``[count, 3, H, W]``."""
    return image_set(folder, count, seed, img_size).images


def image_set(folder: str | Path | None, count: int, seed: int = 0, img_size: ImageSize = 224) -> ImageSet:
    """``count`` samples, float32 ``[count, 3, H, W]``, ImageNet-preprocessed, with where they came from.

    Preprocessing is the ImageNet evaluation transform: bilinear resize so the shorter side is
    ``256 * img_size / 224``, centre crop ``img_size`` (an int or ``(H, W)``), scale to [0, 1], normalize with
    the ImageNet mean and std. ``folder`` is scanned recursively for ``IMAGE_SUFFIXES`` (any case); files that
    cannot be decoded are skipped with a warning (:func:`load_image_set` also returns them and counts).
    Files are drawn in a seeded random order, one sample each. When ``count`` exceeds the number of readable
    files, further rounds take a seeded random crop (25–100 % of the area, aspect 3/4–4/3) with a random
    horizontal flip, so samples differ. ``folder=None`` generates crops of the scikit-image photos into a
    temporary folder (with a warning); pass a real folder for anything but tests.
    """
    if folder is not None:
        return load_image_set(folder, count, seed, img_size)
    with tempfile.TemporaryDirectory() as tmp:
        generated = Path(tmp) / GENERATED_FOLDER_NAME
        log.warning("no image folder given: using %d generated crops of scikit-image photos", count)
        generate_image_folder(generated, count, seed)
        return load_image_set(generated, count, seed, img_size)


def _skimage_photos() -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB array) of each photo in :data:`SKIMAGE_PHOTOS`."""
    try:
        from skimage import data
    except ImportError as exc:
        raise PipelineError("generating images needs scikit-image (pip install scikit-image); "
                            "or pass a folder of photos") from exc
    photos = []
    for name in SKIMAGE_PHOTOS:
        loaded = getattr(data, name)()
        views = loaded[:2] if isinstance(loaded, tuple) else (loaded,)  # stereo_motorcycle: (left, right, disp)
        for i, view in enumerate(views):
            rgb = np.repeat(view[..., None], 3, axis=2) if view.ndim == 2 else view[..., :3]
            photos.append((f"{name}_{i}" if len(views) > 1 else name, np.ascontiguousarray(rgb, dtype=np.uint8)))
    return photos


def generate_image_folder(path: str | Path, count: int, seed: int = 0, *, short_side: int = 256) -> Path:
    """Write ``count`` seeded random crops of the scikit-image photos as PNGs into ``path``, with a README.txt.

    Crops cover 25–100 % of a photo's area (aspect 3/4–4/3), are flipped half the time, and are resized so the
    shorter side is ``short_side`` (enough for a 224 centre crop after the evaluation resize). Photos are used
    round robin, so every photo contributes. A folder that already holds the same generation (same README) is
    reused as is, so its images, and the calibration cache keyed on them, stay valid.
    """
    path = Path(path)
    readme = (f"GENERATED images, not a real data set: {count} random crops (seed {seed}, shorter "
              f"side {short_side}) of the photos bundled with scikit-image ({', '.join(SKIMAGE_PHOTOS)}).\n"
              "Written by pipeline.common.images.generate_image_folder because no image folder was given. For "
              "accuracy that matters, calibrate and verify on a few hundred images from the deployment domain.\n")
    marker = path / GENERATED_README
    if marker.is_file() and marker.read_text() == readme and len(list(path.glob("*.png"))) == count:
        return path
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.png"):
        stale.unlink()
    rng = np.random.default_rng(seed)
    photos = _skimage_photos()
    for i in range(count):
        name, pixels = photos[i % len(photos)]
        region = _random_region(Image.fromarray(pixels), rng)
        scale = short_side / min(region.width, region.height)
        region = region.resize((round(region.width * scale), round(region.height * scale)), Image.BILINEAR)
        region.save(path / f"{i:05d}_{name}.png")
    marker.write_text(readme)
    return path
