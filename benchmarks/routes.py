"""One runner per deployment route (docs/design.md §8d): each prepares a callable that runs one inference on a
fixed input, which the orchestrator (:mod:`benchmarks.bench`) times. A route that cannot run here raises
:class:`RouteUnavailable` with the reason, which the report lists as ``skipped``. With ``--cuda-graphs`` the TensorRT
and PyTorch CUDA routes replay CUDA graphs (:func:`uses_cuda_graph`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from benchmarks.timers import CudaEventTimer, Timer, WallClockTimer, capture
from pipeline.common.errors import PipelineError

Step = Callable[[], Any]


class RouteUnavailable(Exception):
    """This route (or this batch of it) cannot run here; the message says why and how to enable it."""


#: Routes whose step is captured once into a CUDA graph and replayed when graphs are on: each timed iteration is
#: then one graph launch, so the CUDA events time the GPU work and not Python's kernel-by-kernel launches (the H100
#: run timed torch.compile without a graph: 3.0 ms at batch 1 for what a graph replays in 0.6 ms). onnxruntime's
#: routes are not among them: its CUDA graph support needs session options of its own, and `run_with_iobinding` is
#: what an onnxruntime user calls.
CUDA_GRAPH_ROUTES = ("tensorrt-plugin", "tensorrt-attention", "tensorrt-native", "torch-eager-cuda",
                    "torch-compile-cuda", "torch-eager-cuda-fused", "torch-compile-cuda-fused")
#: Ends the name of a PyTorch route whose model has fused attention (``build_swin(..., fused_attention=True)``).
FUSED_SUFFIX = "-fused"


def uses_cuda_graph(name: str, device: str, requested: bool) -> bool:
    """Whether the route ``name`` on ``device`` replays a CUDA graph when ``--cuda-graphs`` is ``requested``."""
    return requested and device == "cuda" and name in CUDA_GRAPH_ROUTES


def _torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def require_cuda(what: str) -> None:
    if not _torch_cuda_available():
        raise RouteUnavailable(f"{what} needs a CUDA GPU; none is visible here (torch.cuda.is_available() is False)")


@contextlib.contextmanager
def deadline(seconds: float | None, what: str) -> Iterator[None]:
    """Raise RouteUnavailable if the block runs longer than ``seconds`` (SIGALRM, so main thread only; elsewhere
    or with ``None`` the block runs unbounded). Used for torch.compile, whose CPU compile can take minutes; the
    alarm interrupts it wherever it is, and frameworks may wrap the exception, so expiry is tracked apart."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    message = f"{what} did not finish within {seconds:g} s (raise --compile-budget-s to wait longer)"
    expired = threading.Event()

    def expire(*_: Any) -> None:
        expired.set()
        raise RouteUnavailable(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except Exception as error:
        if expired.is_set():
            raise RouteUnavailable(message) from error
        raise
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class BenchRoute:
    """A deployment route at one precision on one device. ``device`` decides the budget and batch list
    (``cpu`` or ``cuda``); ``note`` is shown next to the numbers."""

    name: str
    precision: str
    device: str
    note: str = ""
    cuda_graph: bool = False  #: each step replays a CUDA graph captured once per batch

    def setup(self) -> None:
        """Expensive, once per route (load or build); may raise RouteUnavailable."""

    def step(self, batch: int) -> Step:
        """A callable running one inference at ``batch``; may raise RouteUnavailable for this batch."""
        raise NotImplementedError

    def timer(self) -> Timer:
        return WallClockTimer()

    def memory_mb(self) -> float | None:
        """Device memory the route held at its peak for the last batch (None where not measurable)."""
        return None

    def details(self) -> dict[str, Any]:
        """What exactly ran (files, providers, compile time), for the JSON."""
        return {}

    def close(self) -> None:
        """Release device memory before the next route runs."""


# ---------------------------------------------------------------------------------------------------------
# PyTorch


_TORCH_DTYPES = {"fp32": "float32", "fp16": "float16"}


class ModelFactory(Protocol):
    """Builds the model a PyTorch route runs: the same weights with or without fused attention."""

    def __call__(self, *, fused_attention: bool) -> Any: ...


def enable_fused_attention_cuda() -> Path:
    """Load the attention kernel's library for ``torch.ops.swin.window_attention`` on CUDA and return its path
    (:func:`pipeline.kernels.ops.enable_cuda`); a missing or wrong library is RouteUnavailable with enable_cuda's
    message, which says how to build it."""
    from pipeline.kernels.ops import enable_cuda

    try:
        return enable_cuda()
    except RuntimeError as error:
        raise RouteUnavailable(str(error)) from error


class TorchRoute(BenchRoute):
    """PyTorch eager, or ``torch.compile`` of it, on CUDA optionally replayed as a CUDA graph (both of them).

    ``fused``: the model's blocks run ``torch.ops.swin.window_attention`` (``*-fused`` routes): on CUDA our kernel,
    on the CPU the reference op (a correctness check, not a deployment route: none is in the benchmark's list)."""

    def __init__(self, model_factory: ModelFactory, image_size: tuple[int, int], precision: str, device: str, *,
                 compile: bool = False, fused: bool = False, compile_budget_s: float | None = None,
                 cuda_graphs: bool = False) -> None:
        import torch

        self.torch = torch
        self.model_factory = model_factory
        self.image_size = image_size
        self.precision = precision
        self.device = device
        self.compiled = compile
        self.fused = fused
        self.compile_budget_s = compile_budget_s
        self.name = f"torch-{'compile' if compile else 'eager'}-{device}{FUSED_SUFFIX if fused else ''}"
        if fused:
            self.note = "our attention kernel" if device == "cuda" else "reference attention op"
        self.cuda_graph = uses_cuda_graph(self.name, device, cuda_graphs)
        self.attention_library: Path | None = None
        self.model: Any = None
        self.compile_seconds: dict[int, float] = {}
        self.compile_timeout: RouteUnavailable | None = None
        self.captured: tuple[Any, Any, Any] | None = None

    def setup(self) -> None:
        if self.precision not in _TORCH_DTYPES:
            raise RouteUnavailable(f"PyTorch has no {self.precision.upper()} route for this model (the pipeline "
                                  "quantizes the ONNX graph with Q/DQ for TensorRT)")
        if self.device == "cuda":
            require_cuda(f"{self.name} {self.precision}")
            if self.fused:  # here: a missing library is a skip, and the op never loads it inside a graph capture
                self.attention_library = enable_fused_attention_cuda()
        self.dtype = getattr(self.torch, _TORCH_DTYPES[self.precision])
        model = self.model_factory(fused_attention=self.fused).to(self.device, self.dtype).eval()
        self.model = self.torch.compile(model, dynamic=False) if self.compiled else model

    def step(self, batch: int) -> Step:
        torch = self.torch
        generator = torch.Generator().manual_seed(batch)
        images = torch.randn(batch, 3, *self.image_size, generator=generator).to(self.device, self.dtype)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def run() -> Any:
            with torch.inference_mode():
                return self.model(images)

        if self.compiled:  # the first call compiles for this batch; time it apart from the measurement
            if self.compile_timeout is not None:  # a larger batch compiles no faster
                raise self.compile_timeout
            start = time.perf_counter()
            try:
                with deadline(self.compile_budget_s, f"torch.compile at batch {batch}"):
                    run()
            except RouteUnavailable as timeout:
                self.compile_timeout = timeout
                raise
            self.compile_seconds[batch] = round(time.perf_counter() - start, 1)
        if not self.cuda_graph:
            return run
        # torch.compile is captured here like eager, rather than compiled with mode="reduce-overhead" (CUDA graph
        # trees): the graph then holds exactly the kernels inductor generated for this batch and one replay is one
        # timed iteration, as for eager and TensorRT. reduce-overhead would add per call what is not the model's GPU
        # time (dynamo's guards and the trees' bookkeeping in Python, and a copy of the input into its static buffer)
        # and silently falls back to launching kernel by kernel when it meets something it cannot capture ("skipping
        # cudagraphs due to ..."), which is the misleading number this replaces; a capture here fails loudly, and the
        # route is reported failed with the reason.
        graph, output = capture(lambda: self.model(images))
        self.captured = (graph, images, output)  # the graph reads the input and writes the output where they were
        return graph.replay

    def timer(self) -> Timer:
        return CudaEventTimer() if self.device == "cuda" else WallClockTimer()

    def memory_mb(self) -> float | None:
        if self.device != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {"cuda_graph": self.cuda_graph}
        if self.compiled:
            details["compile_seconds_by_batch"] = self.compile_seconds
        if self.attention_library is not None:
            details["attention_library"] = str(self.attention_library)
        return details

    def close(self) -> None:
        self.model, self.captured = None, None
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------
# onnxruntime


#: Execution providers by route name, with the device they run on.
ORT_PROVIDERS = {"onnxruntime-tensorrt": ("TensorrtExecutionProvider", "cuda"),
                 "onnxruntime-cuda": ("CUDAExecutionProvider", "cuda"),
                 "onnxruntime-cpu": ("CPUExecutionProvider", "cpu")}


def _onnx_image_input(path: Path) -> tuple[str, list[int]]:
    import onnx

    from pipeline.common.onnx_io import graph_input

    model = onnx.load(str(path), load_external_data=False)
    name, dims = graph_input(model, None, path)
    return name, [int(d) for d in dims[1:]]


class OnnxruntimeRoute(BenchRoute):
    """onnxruntime on an ONNX file with one execution provider. GPU providers get their inputs and outputs bound
    on the device (I/O binding), so host↔device copies are not timed, as for the TensorRT routes."""

    def __init__(self, name: str, onnx_path: Callable[[], Path], precision: str, *,
                 session_factory: Callable[[Path], Any] | None = None, note: str = "",
                 cache_dir: Path | None = None) -> None:
        self.name = name
        self.provider, self.device = ORT_PROVIDERS["onnxruntime-cpu" if session_factory else name]
        self.onnx_path = onnx_path
        self.precision = precision
        self.session_factory = session_factory
        self.note = note
        self.cache_dir = cache_dir
        self.session: Any = None

    def _providers(self) -> list[Any]:
        if self.provider == "TensorrtExecutionProvider":
            options = {"trt_fp16_enable": self.precision == "fp16", "trt_engine_cache_enable": True,
                       "trt_engine_cache_path": str(self.cache_dir or ".")}
            return [(self.provider, options), "CUDAExecutionProvider"]
        return [self.provider]

    def setup(self) -> None:
        import onnxruntime as ort

        if self.provider not in ort.get_available_providers():
            raise RouteUnavailable(f"this onnxruntime {ort.__version__} has no {self.provider} (available: "
                                  f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a GPU "
                                  "machine")
        if self.device == "cuda":
            require_cuda(f"onnxruntime's {self.provider}")
        if self.precision == "int8":
            raise RouteUnavailable("onnxruntime runs the exported FP32/FP16 graph here; the INT8 Q/DQ graph is "
                                  "measured through the TensorRT engine")
        self.path = self.onnx_path()
        self.input_name, self.input_dims = _onnx_image_input(self.path)
        if self.session_factory is not None:
            self.session = self.session_factory(self.path)
        else:
            self.session = ort.InferenceSession(str(self.path), providers=self._providers())

    def step(self, batch: int) -> Step:
        import onnxruntime as ort

        input_type = next(i.type for i in self.session.get_inputs() if i.name == self.input_name)
        dtype = np.float16 if "float16" in input_type else np.float32
        images = np.random.default_rng(batch).standard_normal((batch, *self.input_dims)).astype(dtype)
        if self.device == "cpu":
            feeds = {self.input_name: images}
            return lambda: self.session.run(None, feeds)
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, ort.OrtValue.ortvalue_from_numpy(images, "cuda", 0))
        for output in self.session.get_outputs():
            binding.bind_output(output.name, "cuda")
        return lambda: self.session.run_with_iobinding(binding)

    def details(self) -> dict[str, Any]:
        providers = self.session.get_providers() if self.session is not None else []
        return {"onnx": str(getattr(self, "path", "")), "providers": providers}

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------------------------------------------------
# TensorRT


def require_tensorrt() -> Any:
    if importlib.util.find_spec("tensorrt") is None:
        hint = (" (TensorRT-RTX, installed here, builds engines ahead of time but cannot run them without a GPU)"
                if importlib.util.find_spec("tensorrt_rtx_bindings") else "")
        raise RouteUnavailable(f"the tensorrt Python package is not installed{hint}; install TensorRT 10/11 on a "
                              "GPU machine")
    require_cuda("a TensorRT engine")
    import tensorrt

    return tensorrt


class TensorRTRoute(BenchRoute):
    """A TensorRT engine through :class:`pipeline.runtime.SwinEngine` (buffers on the device, one enqueue on the
    engine's stream per step), optionally captured once per batch into a CUDA graph and replayed."""

    device = "cuda"

    def __init__(self, name: str, precision: str, engine: Callable[[], Path], plugin_library: Path | None, *,
                 cuda_graphs: bool = False, note: str = "") -> None:
        self.name = name
        self.precision = precision
        self.engine_provider = engine
        self.plugin_library = plugin_library
        self.cuda_graph = uses_cuda_graph(name, self.device, cuda_graphs)
        self.note = note
        self.engine: Any = None
        self.metadata: Any = None

    def setup(self) -> None:
        require_tensorrt()  # refuse before asking for the engine, which may mean building one
        import torch

        from pipeline.runtime import SwinEngine  # here, not at module level: it needs the GPU runtime

        self.torch = torch
        try:
            self.engine_path = self.engine_provider()
            self.engine = SwinEngine(self.engine_path, self.plugin_library)
        except PipelineError as error:  # "cannot run here ...", an incompatible engine, a missing plugin library
            raise RouteUnavailable(str(error)) from error
        self.metadata = self.engine.metadata

    def step(self, batch: int) -> Step:
        torch, engine = self.torch, self.engine
        low, high = engine.batch_range[0], engine.batch_range[-1]
        if not low <= batch <= high:
            raise RouteUnavailable(f"{self.engine_path.name} was built for batch {low}..{high}; rebuild it with a "
                                  f"profile up to {batch} (e.g. BATCH=1,8,{batch})")
        try:
            run = engine.bind(batch)
        except PipelineError as error:
            raise RouteUnavailable(str(error)) from error
        run()  # the first enqueue after a shape change does setup work that must not be captured
        engine.stream.synchronize()
        if not self.cuda_graph:
            return run
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=engine.stream):
            run()
        return graph.replay

    def timer(self) -> Timer:
        return CudaEventTimer(self.engine.stream)

    def memory_mb(self) -> float | None:
        return self.engine.memory_mb()  # engine weights, activations and I/O buffers: the device memory it took

    def details(self) -> dict[str, Any]:
        if self.metadata is None:
            return {}
        return {"engine": str(self.engine_path), "backend": self.metadata.backend.to_json(),
                "plugin_layers": self.metadata.plugin_layers, "cuda_graph": self.cuda_graph}

    def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()
            self.torch.cuda.empty_cache()
