"""Triton Python backend model: the pipeline's CPU verification route (``make triton TRITON_BACKEND=python``).

``python -m pipeline triton --triton-backend python`` copies this file as ``<model>/1/model.py`` beside
``model.onnx``, the typed ONNX the engine was built from, which it runs on onnxruntime's CPU with the pipeline's
reference ``SwinWindowAttention`` op (pipeline.common.onnx_io.ort_session): the engine's contract (name, tensors,
max_batch_size, dynamic batching) without a GPU, to test a deployment end to end, not for speed. An engine built
for a range of image sizes has -1 for H and W in config.pbtxt and symbolic H and W in its ONNX: onnxruntime runs
any size, and Triton's dynamic batcher puts only requests of one shape into an execution, so their inputs
concatenate along the batch. The engine's range of sizes is its optimization profile's: this route does not check
it.

The backend's stub runs its own embedded Python, which sees neither the project's venv nor the environment, and
works with numpy 1.x only: the config's ``python_path`` parameter lists, first, the served environment's numpy<2,
then the project's venv and the project. They go on sys.path when this file is imported: the stub imports numpy
after that, before ``initialize``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_CONFIG = (Path(__file__).resolve().parents[1] / "config.pbtxt").read_text()
_PATH = re.search(r'key:\s*"python_path"\s*value:\s*{\s*string_value:\s*"([^"]*)"', _CONFIG)
if _PATH is None:
    raise RuntimeError(f"{__file__}: config.pbtxt has no python_path parameter; rerun `make triton "
                       "TRITON_BACKEND=python`")
sys.path[:0] = [path for path in _PATH.group(1).split(":") if path not in sys.path]


class TritonPythonModel:
    """One model instance: an onnxruntime session over ``model.onnx``; each execution runs the whole dynamic batch
    of its requests at once."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        import numpy as np
        import triton_python_backend_utils as pb_utils

        from pipeline.common.onnx_io import ort_session

        self.np, self.pb_utils = np, pb_utils
        self.input = config["input"][0]["name"]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]
        self.session = ort_session(Path(args["model_repository"]) / args["model_version"] / "model.onnx")

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils, np = self.pb_utils, self.np
        # One shape for all: the dynamic batcher batches only requests of equal shapes (no ragged batching).
        batches = [pb_utils.get_input_tensor_by_name(request, self.input).as_numpy() for request in requests]
        try:
            results = self.session.run([name for name, _ in self.outputs], {self.input: np.concatenate(batches)})
        except Exception as error:  # onnxruntime's refusal goes back to each client, the model stays loaded
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime: {error}"))
                    for _ in requests]
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop], dtype=dtype))
                for (name, dtype), result in zip(self.outputs, results, strict=True)]))
            start = stop
        return responses
