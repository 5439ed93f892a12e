"""Serving built engines: the Triton Inference Server model repository, its client, a real tritonserver for the
CPU verification route and the tests, and a load generator."""

#: Triton backends a repository can serve the engines' model with: the engines themselves, or the pipeline's CPU
#: verification route (the typed ONNX they were built from, on onnxruntime with the reference op).
TRITON_BACKENDS = ("tensorrt", "python")
