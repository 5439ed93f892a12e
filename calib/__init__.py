"""INT8 calibration: calibration images, activation ranges, and Q/DQ insertion for TensorRT's explicit quantization."""

from calib.data import calibration_images, generate_image_folder, load_calibration_set
from calib.int8 import quantize_int8

__all__ = ["calibration_images", "generate_image_folder", "load_calibration_set", "quantize_int8"]
