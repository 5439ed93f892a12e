"""The ImageNet evaluation transform and the top-k ranking of a classifier's logits, with numpy and Pillow only.

Calibration, verification (:mod:`pipeline.images`), :mod:`pipeline.runtime` and the Triton client all preprocess
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


def normalize(image: Image.Image) -> np.ndarray:
    """An RGB image as float32 ``[3, H, W]``: scaled to [0, 1], then normalized with the ImageNet mean and std."""
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def read_rgb(image: Image.Image | str | Path) -> Image.Image:
    """A PIL image, or the image file at a path, as RGB; OSError or ValueError when the file cannot be decoded."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        opened.load()
        return opened.convert("RGB")


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
