"""Helpers every floor shares: errors, files, records, images, ONNX I/O, comparisons."""
