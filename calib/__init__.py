"""INT8 calibration as a library: activation ranges (max, percentile, entropy) and Q/DQ insertion for TensorRT's
explicit quantization, given an ONNX model, calibration samples and a way to run the model.

It imports nothing from pipeline/: what to treat as attention, how to run a graph and where progress goes are
parameters. pipeline/stages/int8.py is the stage built on it (images, cache, sessions, files).
"""

from calib.errors import CalibrationError
from calib.quantize import QuantizableLayer, default_exclusions, find_quantizable_layers, insert_qdq, select_excluded
from calib.ranges import METHODS, ActivationStatistics, amax_from_statistics, collect_statistics

__all__ = ["METHODS", "ActivationStatistics", "CalibrationError", "QuantizableLayer", "amax_from_statistics",
           "collect_statistics", "default_exclusions", "find_quantizable_layers", "insert_qdq", "select_excluded"]
