"""Serving built engines: the Triton Inference Server model repository and its client."""
