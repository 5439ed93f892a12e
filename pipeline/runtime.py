"""Loading and running an engine: :class:`SwinEngine`, the one way verification, the benchmarks and users run one.

``SwinEngine(path)`` refuses in one line an engine this machine cannot run (another GPU or TensorRT version, a corrupt
file, no TensorRT runtime with a CUDA GPU) before it deserializes it with the plugin library; ``infer`` runs images of
any batch size (and, for an engine built with ``--img-size min:opt:max``, of any size in that range, one size per
call: :func:`check_input_shape`), ``bind`` prepares the enqueue-only callable the benchmarks time. How:
docs/design.md §9.
:func:`preprocess` is the ImageNet evaluation transform, :func:`top_k` the softmax ranking of the logits.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.common import imagenet_transform
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.common.imagenet_transform import top_k as top_k  # part of this module's API (the README's example)
from pipeline.tensorrt.backends import BACKENDS, installed_runtimes
from pipeline.tensorrt.load import check_engine_compatible, engine_runtime, load_engine
from pipeline.tensorrt.metadata import REBUILD, BatchProfile, EngineMetadata, Runtime, TensorSpec

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

#: What TensorRT-RTX's ``get_engine_validity`` diagnostics mean, in the words of the error.
_RTX_DIAGNOSTICS = {
    "VERSION_MISMATCH": "it was built by another TensorRT-RTX version",
    "UNSUPPORTED_CC": "it was built for another compute capability",
    "OLD_CUDA_DRIVER": "the CUDA driver is too old for it",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is too old for it",
    "INSUFFICIENT_GPU_MEMORY": "the GPU has too little memory for it",
    "MALFORMED_ENGINE": "its header is not a TensorRT-RTX engine header",
    "CUDA_ERROR": "CUDA failed while the runtime queried the GPU",
}
#: Diagnostics that are about the file, whatever the machine.
_BAD_FILE = ("MALFORMED_ENGINE", "VERSION_MISMATCH")


def batch_chunks(count: int, max_batch: int) -> list[slice]:
    """Consecutive slices covering ``range(count)``, each at most ``max_batch`` long: full ones, then the rest."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    return [slice(start, min(start + max_batch, count)) for start in range(0, max(count, 0), max_batch)]


def _dims_text(shape: tuple[int, ...]) -> str:
    """An input's dimensions as the engine takes them: ``N, 3, 224, 224``, or ``N, 3, H, W`` where H and W vary."""
    names = ("N", "C", "H", "W") if len(shape) == 4 else ("N",) * len(shape)
    return ", ".join(name if d == -1 else str(d) for name, d in zip(names, shape, strict=True))


def check_input_shape(engine: str | Path, spec: TensorSpec, profile: BatchProfile, shape: tuple[int, ...]) -> None:
    """Refuse, in one line and before TensorRT sees it, a batch of ``shape`` that the engine's input ``spec`` cannot
    take: another rank, a fixed dimension that differs, no image at all, or (an engine taking a range of image sizes,
    -1 for H and W) an H or W outside its profile's range. Any batch size passes: :meth:`SwinEngine.infer` runs it in
    chunks the profile allows."""
    expected = spec.shape
    if len(shape) != len(expected) or any(e not in (-1, s) for e, s in zip(expected[1:], shape[1:], strict=True)):
        raise PipelineError(f"{engine} takes {spec.name!r} as [{_dims_text(expected)}], got shape {list(shape)}")
    if shape[0] < 1:
        raise PipelineError(f"{engine}: no images to run (batch of 0)")
    sizes = profile.image_range
    if len(shape) == 4 and -1 in expected[2:] and not sizes.contains((shape[2], shape[3])):
        raise PipelineError(f"{engine} takes images of {sizes.text()} (H x W) as {spec.name!r}; got "
                            f"{shape[2]}x{shape[3]}: resize or pad it into the range, or build an engine with a wider "
                            "--img-size range")


def input_shape(spec: TensorSpec, profile: BatchProfile, batch: int, size: tuple[int, int] | None = None
                ) -> tuple[int, ...]:
    """The input shape of ``batch`` images of ``size`` (H, W): by default the engine's own size, or the profile's
    optimum where H and W vary. Not checked (:func:`check_input_shape` does that)."""
    dims = (batch, *(opt if d == -1 else d for d, opt in zip(spec.shape[1:], profile.opt[1:], strict=True)))
    return dims if size is None else (*dims[:-2], int(size[0]), int(size[1]))


def preprocess(image: Image.Image | str | Path, size: int | tuple[int, int] = 224) -> np.ndarray:
    """float32 ``[3, H, W]``: the ImageNet evaluation transform :mod:`pipeline.common.images` applies to photos (RGB,
    bilinear resize so the crop is 224/256 of the shorter side, centre crop ``size`` = (H, W) or an int, scale to
    [0, 1], normalize with the ImageNet mean and std). ``image``: a PIL image or the path of one."""
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    try:
        return np.ascontiguousarray(imagenet_transform.preprocess(image, (height, width)))
    except (OSError, ValueError) as error:
        raise PipelineError(f"cannot read the image {image}: {error}") from None


def _cuda_torch(engine_path: Path) -> Any:
    """torch, with CUDA, or the PipelineError that says SwinEngine needs it."""
    try:
        import torch
    except ImportError:
        raise PipelineError(f"cannot run here: SwinEngine keeps the buffers and stream of {engine_path} in PyTorch "
                            "CUDA tensors and torch is not installed; install torch with CUDA "
                            "(https://pytorch.org/get-started/locally/)") from None
    if not torch.cuda.is_available():
        raise PipelineError(f"cannot run here: this torch {torch.__version__} sees no CUDA device (a CPU-only build, "
                            f"or CUDA_VISIBLE_DEVICES hides the GPU) and SwinEngine needs torch with CUDA for the "
                            f"buffers and stream of {engine_path}")
    return torch


def _runtimes(device: int, engine_path: Path) -> list[Runtime]:
    """:func:`installed_runtimes`, with the GPU of ``device`` (they describe device 0)."""
    runtimes = installed_runtimes()
    if device == 0 or not runtimes or runtimes[0].sm is None:
        return runtimes
    torch = _cuda_torch(engine_path)
    if not 0 <= device < torch.cuda.device_count():
        raise PipelineError(f"no CUDA device {device}: {torch.cuda.device_count()} visible")
    major, minor = torch.cuda.get_device_capability(device)
    return [dataclasses.replace(r, sm=major * 10 + minor, gpu=torch.cuda.get_device_name(device)) for r in runtimes]


def _check_rtx_header(engine_path: Path, metadata: EngineMetadata, has_gpu: bool) -> None:
    """TensorRT-RTX reads the engine's header (``get_engine_validity``, no GPU needed) and says whether it can run
    here; a PipelineError when it cannot. Without a GPU only what is wrong with the file itself is raised."""
    trt, runtime, _ = engine_runtime(metadata)
    with open(engine_path, "rb") as f:
        header = f.read(runtime.engine_header_size)
    validity, diagnostics = runtime.get_engine_validity(header)
    found = [name for name, flag in trt.EngineInvalidityDiagnostics.__members__.items() if diagnostics & int(flag)]
    reasons = "; ".join(_RTX_DIAGNOSTICS.get(name, name) for name in found)
    if validity == trt.EngineValidity.VALID:
        return
    if validity == trt.EngineValidity.SUBOPTIMAL:
        log.warning("runtime: TensorRT-RTX says %s runs here but may be slow%s", engine_path,
                    f" ({reasons})" if reasons else "")
        return
    version = metadata.backend.version
    if any(name in _BAD_FILE for name in found):
        raise PipelineError(f"TensorRT-RTX {trt.__version__} cannot read {engine_path}: {reasons} (its metadata "
                            f"says TensorRT-RTX {version}); {REBUILD} --backend rtx")
    if has_gpu:
        raise PipelineError(f"cannot run here: TensorRT-RTX {trt.__version__} says {engine_path} is not valid on "
                            f"this GPU ({reasons or 'no reason given'}); {REBUILD} --backend rtx --sm <this GPU's SM>")


def _cannot_run_here(engine_path: Path, metadata: EngineMetadata, runtime: Runtime | None) -> str | None:
    """Why this machine cannot run the engine (no TensorRT runtime, or no CUDA GPU), or None."""
    built, target = metadata.backend, metadata.target
    built_for = f"SM{target.sm}" + (f", {target.gpu}" if target.gpu else "")
    what = f"{engine_path} is a {built.name} {built.version} engine for {built_for}"
    if runtime is None:
        module = BACKENDS[built.name].module if built.name in BACKENDS else built.name
        return (f"cannot run here: {what} and no TensorRT runtime is installed (no {module} module); run it on a "
                f"machine with that GPU and {built.name} {built.version}")
    if runtime.sm is None:
        if built.name == "tensorrt_rtx":
            needs = "TensorRT-RTX engines built ahead of time need the GPU they were built for"
            checked = "files and header"
        else:
            needs, checked = "TensorRT engines run on the GPU they were built on", "files"
        return (f"cannot run here: {what} and this machine has no CUDA GPU (no libcuda.so.1 or no visible device): "
                f"{needs} (its {checked} check out; run it on {target.gpu or f'an SM{target.sm} GPU'})")
    return None


class SwinEngine:
    """A deserialized engine with its execution context, CUDA stream and device buffers (PyTorch).

    ``infer`` runs images of any batch size; ``bind`` prepares what the benchmarks time. Use it as a context
    manager, or call :meth:`close`, to give the device memory back. One thread at a time: the context, its input
    shape and tensor addresses are shared by ``infer`` and ``bind``.

    An engine built for a range of image sizes (``--img-size 320x320:800x1344:1344x1344``, :attr:`image_range`)
    takes any H and W inside it, one size per call: a batch is one array. To run photos of mixed sizes, either group
    them by size and call ``infer`` once per group, or resize or pad them to one size first (a detector's way:
    resize to fit, pad the rest with zeros). Sizes outside the range are refused before TensorRT sees them
    (:func:`check_input_shape`). Each call sets the input shape anew and allocates outputs of the shapes TensorRT
    derives from it; ``bind`` reuses its buffers only while every shape stays the same.
    """

    metadata: EngineMetadata
    input: TensorSpec  #: the image input (``-1`` for the batch)
    output_names: tuple[str, ...]
    batch_range: tuple[int, int]  #: (min, max) batch of the optimization profile
    image_size: tuple[int, int]  #: (H, W): the engine's size, or the profile's optimum for a range of sizes
    image_range: SizeRange  #: the (H, W) it takes (min = opt = max for a fixed-size engine)
    stream: torch.cuda.Stream  #: what the engine is enqueued on

    def __init__(self, engine_path: str | Path, plugin_library: str | Path | None = None, *, device: int = 0) -> None:
        self.path = Path(engine_path)
        self.device = device
        self.engine: Any = None
        self.context: Any = None
        self._bound: dict[str, Any] = {}
        self._binding: object | None = None
        self._free_before: int | None = None
        self._peak_used = 0

        check = check_engine_compatible(self.path, _runtimes(device, self.path), plugin_library=plugin_library)
        metadata, runtime = check.metadata, check.runtime
        self.metadata = metadata
        inputs = {spec.name: spec for spec in metadata.inputs}
        if len(inputs) != 1 or metadata.profile.input not in inputs:
            raise PipelineError(f"{self.path} has inputs {sorted(inputs)}; SwinEngine runs engines with one image "
                                f"input (the profile's {metadata.profile.input!r})")
        self.input = inputs[metadata.profile.input]
        self.output_names = tuple(spec.name for spec in metadata.outputs)
        self.batch_range = (metadata.profile.min[0], metadata.profile.max[0])
        self.image_range = metadata.profile.image_range
        self.image_size = self.image_range.opt  # a fixed-size engine's profile holds its size

        if runtime is not None and runtime.backend == "tensorrt_rtx":
            _check_rtx_header(self.path, metadata, has_gpu=runtime.sm is not None)
        reason = _cannot_run_here(self.path, metadata, runtime)
        if reason is not None:
            raise PipelineError(reason)
        torch = self._torch = _cuda_torch(self.path)

        self._cuda = torch.device("cuda", device)
        with torch.cuda.device(self._cuda):
            torch.cuda.synchronize()
            self._free_before = torch.cuda.mem_get_info()[0]
            self.engine = load_engine(self.path, metadata, check.plugin_library)
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise PipelineError(f"{metadata.backend.name} could not create an execution context for {self.path} "
                                    "(out of device memory?); see its log")
            self.stream = torch.cuda.Stream(self._cuda)
        self._dtypes = {name: self._torch_dtype(name) for name in (self.input.name, *self.output_names)}
        self._record_memory()
        log.info("runtime: loaded %s (%s %s, batch %d..%d, images %s) on %s", self.path, metadata.backend.name,
                 metadata.backend.version, *self.batch_range, self.image_range.text(),
                 torch.cuda.get_device_name(self._cuda))

    # ------------------------------------------------------------------------------------------------------

    def _torch_dtype(self, name: str) -> Any:
        trt = BACKENDS[self.metadata.backend.name].bindings()
        numpy_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        return self._torch.from_numpy(np.empty(0, dtype=numpy_dtype)).dtype

    def _require_open(self) -> None:
        if self.context is None:
            raise PipelineError(f"SwinEngine for {self.path} is closed")

    def _set_batch(self, images: Any, reuse: dict[str, Any] | None = None) -> dict[str, Any]:
        """Set ``images`` (on the device, contiguous) as the input, and outputs for its batch: the tensors in ``reuse``
        whose shape fits, else new ones."""
        name = self.input.name
        if not self.context.set_input_shape(name, tuple(images.shape)):
            raise PipelineError(f"{self.path} does not accept input {name!r} of shape {tuple(images.shape)} "
                                f"(profile {self.metadata.profile.min} .. {self.metadata.profile.max})")
        outputs = {}
        for output in self.output_names:
            shape = tuple(self.context.get_tensor_shape(output))
            if any(d < 0 for d in shape):
                raise PipelineError(f"{self.path}: output {output!r} has no shape for input {tuple(images.shape)}")
            kept = (reuse or {}).get(output)
            fits = kept is not None and tuple(kept.shape) == shape
            outputs[output] = kept if fits else self._torch.empty(shape, dtype=self._dtypes[output], device=self._cuda)
        for tensor_name, tensor in ((name, images), *outputs.items()):
            self.context.set_tensor_address(tensor_name, tensor.data_ptr())
        return outputs

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.metadata.backend.name} failed to enqueue {self.path}; see its log")

    def _record_memory(self) -> None:
        if self._free_before is not None:
            used = self._free_before - self._torch.cuda.mem_get_info(self._cuda)[0]
            self._peak_used = max(self._peak_used, used)

    # ------------------------------------------------------------------------------------------------------

    def infer(self, images: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | torch.Tensor]:
        """The outputs for ``images`` (``[N, *input dims]``, any N ≥ 1; one H and W inside :attr:`image_range`), by
        output name.

        NumPy in, NumPy out; a torch tensor (on any device) in, torch CUDA tensors out. Inputs are cast to the
        engine's input dtype; batches above the profile's maximum run in chunks, and a chunk below its minimum is
        padded with zeros (the padding's outputs are dropped). Returns after the GPU has finished.
        """
        self._require_open()
        torch = self._torch
        as_numpy = not isinstance(images, torch.Tensor)
        if as_numpy:
            images = np.asarray(images)
        shape = tuple(images.shape)
        check_input_shape(self.path, self.input, self.metadata.profile, shape)
        low, high = self.batch_range
        self._binding = None  # the shape and addresses bind() set are about to change
        self.stream.wait_stream(torch.cuda.current_stream(self._cuda))  # the caller's work on a torch input
        results: dict[str, list[Any]] = {name: [] for name in self.output_names}
        with torch.no_grad(), torch.cuda.device(self._cuda), torch.cuda.stream(self.stream):
            dtype = self._dtypes[self.input.name]
            if as_numpy:
                host = np.ascontiguousarray(images, dtype=np.dtype(self.input.dtype))  # cast before the copy
                batch = torch.from_numpy(host).to(self._cuda, dtype)
            else:
                batch = images.to(device=self._cuda, dtype=dtype).contiguous()
            for chunk in batch_chunks(shape[0], high):
                part = batch[chunk]
                count = part.shape[0]
                if count < low:
                    part = torch.cat([part, part.new_zeros((low - count, *part.shape[1:]))])
                outputs = self._set_batch(part)
                self._enqueue()
                for name, output in outputs.items():
                    results[name].append(output[:count])
            merged = {name: parts[0] if len(parts) == 1 else torch.cat(parts) for name, parts in results.items()}
            if as_numpy:
                merged = {name: output.cpu().numpy() for name, output in merged.items()}
        self.stream.synchronize()
        self._record_memory()
        return merged

    def bind(self, batch: int, size: tuple[int, int] | None = None) -> Callable[[], None]:
        """For the benchmarks: set the input shape for ``batch`` images of ``size`` (H, W; default the engine's
        size, or the profile's optimum for a range of sizes), (re)allocate the device buffers (random input,
        reused while the shapes stay) and return a callable that only enqueues one inference on :attr:`stream`
        (``execute_async_v3``; no host synchronization, nothing copied). The callable stays valid until the next
        ``bind`` or ``infer``. Its first call after a shape change does setup work: run it (and synchronize the
        stream) once before capturing it into a CUDA graph. With ``device`` other than 0, call it with that device
        current (``torch.cuda.device(engine.device)``)."""
        self._require_open()
        low, high = self.batch_range
        if not low <= batch <= high:
            raise PipelineError(f"{self.path.name} was built for batch {low}..{high}; rebuild it with a profile up to "
                                f"{batch} (e.g. BATCH=1,8,{batch})")
        torch = self._torch
        name = self.input.name
        shape = input_shape(self.input, self.metadata.profile, batch, size)
        check_input_shape(self.path, self.input, self.metadata.profile, shape)
        with torch.no_grad(), torch.cuda.device(self._cuda), torch.cuda.stream(self.stream):
            images = self._bound.get(name)
            if images is None or tuple(images.shape) != shape:
                generator = torch.Generator(self._cuda).manual_seed(batch)
                images = torch.randn(shape, generator=generator, device=self._cuda).to(self._dtypes[name])
            outputs = self._set_batch(images, reuse=self._bound)
        self._bound = {name: images, **outputs}
        self._record_memory()
        token = self._binding = object()

        def run() -> None:
            if self._binding is not token:
                raise RuntimeError(f"SwinEngine.bind({batch}) of {self.path} was superseded by a later bind or infer")
            self._enqueue()

        return run

    def memory_mb(self) -> float | None:
        """Device memory taken since just before the engine was deserialized (weights, the context's activation
        memory, the I/O buffers), at its highest seen so far, in MiB; None when not measurable (closed, or the
        device's free memory grew, e.g. another process let go of some)."""
        if self.context is None:
            return None
        self._record_memory()
        return self._peak_used / 2**20 if self._peak_used > 0 else None

    def close(self) -> None:
        """Release the buffers, the context and the engine (idempotent)."""
        self._bound, self._binding = {}, None
        self.context = None
        self.engine = None
        if getattr(self, "_torch", None) is not None:
            self._torch.cuda.empty_cache()

    def __enter__(self) -> SwinEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
