"""The ImageNet evaluation transform and the top-k ranking of a classifier's logits, with numpy and Pillow only.

Calibration, verification (:mod:`pipeline.common.images`), :mod:`pipeline.runtime` and the Triton client all preprocess
photos and rank logits with these functions. The Triton model repository ships a copy of this file beside its
``client.py``, so it imports nothing from the rest of the project.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize (bilinear) so the crop is 224/256 of the image, then crop the centre ``size`` = (H, W)."""
    height, width = size
    scale = max(height * 256 / 224 / image.height, width * 256 / 224 / image.width)
    resized = image.resize((max(width, round(image.width * scale)), max(height, round(image.height * scale))),
                           Image.BILINEAR)
    left, top = (resized.width - width) // 2, (resized.height - height) // 2
    return resized.crop((left, top, left + width, top + height))


def normalize(image: Image.Image | np.ndarray) -> np.ndarray:
    """An RGB image (or uint8 ``[..., H, W, 3]`` pixels, e.g. a batch) as float32 ``[..., 3, H, W]``: scaled to
    [0, 1], then normalized with the ImageNet mean and std."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return np.ascontiguousarray(np.moveaxis((pixels - IMAGENET_MEAN) / IMAGENET_STD, -1, -3))


#: Pillow's modes for one-channel 16-bit images (a 16-bit grayscale PNG or TIFF opens as one of these).
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _as_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert("RGB") clips a 16-bit image's values to 255 (nearly white) and a float image's to 0 or 1
    # (black): scale 16 bits to 8, and refuse floats, whose range the file does not say.
    if image.mode in _SIXTEEN_BIT_MODES:
        pixels = np.asarray(image, dtype=np.float64)
        if image.mode == "I" and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError("a 32-bit integer image; convert it to 8 or 16 bits per channel")
        image = Image.fromarray(np.round(pixels / 257).astype(np.uint8), "L")
    elif image.mode == "F":
        raise ValueError("a floating-point image, whose value range is unknown; convert it to 8 or 16 bits per channel")
    return image.convert("RGB")


def read_rgb(image: Image.Image | str | Path) -> Image.Image:
    """A PIL image, or the image file at a path, as 8-bit RGB (16-bit grayscale scaled to 8 bits); OSError or
    ValueError when the file cannot be decoded or holds floating-point pixels."""
    if isinstance(image, Image.Image):
        return _as_rgb(image)
    with Image.open(image) as opened:
        opened.load()
        return _as_rgb(opened)


def preprocess(image: Image.Image | str | Path, size: tuple[int, int]) -> np.ndarray:
    """A photo (a PIL image or a path) as float32 ``[3, H, W]``: centre crop ``size`` = (H, W), then normalize."""
    return normalize(center_crop(read_rgb(image), size))


def top_k(logits: np.ndarray, k: int = 5) -> list[list[tuple[int, float]]]:
    """Per row of ``logits`` (``[N, classes]``, or one row ``[classes]``): the ``k`` most probable classes as
    (class index, softmax probability), best first; equal probabilities in class order; all classes when ``k``
    exceeds their number."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = np.asarray(logits, dtype=np.float64)
    rows = rows[None] if rows.ndim == 1 else rows
    if rows.ndim != 2:
        raise ValueError(f"logits must be [N, classes] or [classes], got shape {np.shape(logits)}")
    exp = np.exp(rows - rows.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[(int(c), float(p[c])) for c in order] for p, order in zip(probabilities, best, strict=True)]
