"""The ImageNet evaluation transform, with numpy and Pillow only.

Calibration, verification (:mod:`pipeline.images`), :func:`pipeline.runtime.preprocess` and the Triton client all
preprocess photos with these functions. The Triton model repository ships a copy of this file beside its
``client.py``, so it imports nothing from the rest of the project.
"""

from __future__ import annotations

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
