"""INT8 calibration: activation ranges and Q/DQ insertion for TensorRT's explicit quantization."""

from calib.int8 import quantize_int8

__all__ = ["quantize_int8"]
