"""Stage 6: an engine (or, without TensorRT and a GPU, its ONNX on onnxruntime) against PyTorch (docs/design.md §1, §5).

Polygraphy's runners run both sides on the same batches and ``Comparator.compare_accuracy`` (with
``SimpleCompareFunc``) checks the absolute tolerance of each batch, for every precision; the metrics that decide
FP16 and INT8 (cosine, top-1 agreement, SQNR) are accumulated here from the same outputs. Both come from
:data:`pipeline.common.compare.TOLERANCES`. Batches are compared and dropped one
at a time, so memory stays that of one batch. The report is written before a failure is raised, so a failing run
still leaves its numbers.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.backend.onnxrt import OnnxrtRunner
from polygraphy.backend.pyt import PytRunner
from polygraphy.common import TensorMetadata
from polygraphy.comparator import Comparator, IterationResult, RunResults, SimpleCompareFunc
from polygraphy.logger import G_LOGGER

from pipeline.common.artifacts import file_sha256, write_json
from pipeline.common.compare import TOLERANCES, ComparisonMetrics, Metrics, Tolerances
from pipeline.common.errors import PipelineError
from pipeline.common.image_plan import ImageSelection
from pipeline.common.image_sizes import format_size
from pipeline.common.images import default_image_count, image_set, load_image_set
from pipeline.common.onnx_io import graph_input, ort_session, read_onnx
from pipeline.common.progress import advance
from pipeline.common.records import JsonRecord
from pipeline.kernels.selection import kernel_choice
from pipeline.recipe import ModelRecord
from pipeline.runtime import SwinEngine
from pipeline.tensorrt.load import check_engine_compatible
from pipeline.tensorrt.metadata import TensorSpec

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob

log = logging.getLogger(__name__)

#: Verification images are drawn with this seed; calibration draws with 0.
VERIFY_SEED = 1
#: Pixels in one batch at most (a size range's large sizes get smaller batches): two 800×1344 images, whose Swin-T
#: backbone run on onnxruntime and PyTorch stays within a few GB.
PIXELS_PER_BATCH = 2 * 800 * 1344


@dataclasses.dataclass(frozen=True)
class Executed(JsonRecord):
    """What ran as the candidate: the engine, or the ONNX it was built from (``instead_of`` the engine)."""

    kind: str  #: "engine" or "onnx"
    path: str
    backend: str
    gpu: str | None = None
    instead_of: str | None = None
    #: the window-attention kernel: the plugin's choice in an engine (SWIN_ATTN_KERNEL or the selection table;
    #: the plugin logs each layer's kernel and config), the reference op on onnxruntime
    attention_kernel: str | None = None


@dataclasses.dataclass(frozen=True)
class OutputVerdict(Metrics):
    """One output's metrics and whether they pass the precision's thresholds."""

    passed: bool


@dataclasses.dataclass(frozen=True)
class VerifyImages(JsonRecord):
    """What verification compared on: ``source`` (:data:`pipeline.common.image_plan.SOURCES`, or "given" for an
    array), how many images in batches of ``batch``; for photos and generated crops (``folder`` None) the seed of the
    crops, the files used, those unreadable (``skipped``) and those left out as calibration images (``excluded``)."""

    source: str
    count: int
    batch: int
    seed: int | None = None
    folder: str | None = None
    files: tuple[str, ...] = ()
    files_found: int | None = None
    files_skipped: int | None = None
    skipped: tuple[str, ...] = ()
    samples: int | None = None  #: images read from the files, augmented ones included (verify.json has always had it)
    augmented_samples: int | None = None
    excluded: tuple[str, ...] = ()
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class SizeVerdict(JsonRecord):
    """One image size of an engine with dynamic H and W: the images compared there and each output's verdict."""

    size: tuple[int, int]
    images: VerifyImages
    outputs: dict[str, OutputVerdict]
    passed: bool


@dataclasses.dataclass(frozen=True)
class VerifyReport(JsonRecord):
    """What :func:`verify` compared and found: written to ``verify.json``. For an engine with dynamic H and W,
    ``outputs`` and ``images`` cover every size and ``sizes`` has each one's (absent from the JSON otherwise)."""

    artifact: str
    executed: Executed
    model: ModelRecord | None  #: which weights, when the caller knows
    precision: str
    thresholds: Tolerances
    runners: tuple[str, ...]
    images: VerifyImages
    polygraphy_compare_accuracy_passed: bool
    outputs: dict[str, OutputVerdict]
    passed: bool
    sizes: tuple[SizeVerdict, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        if not self.sizes:  # a fixed-size engine's verify.json is as it always was
            del data["sizes"]
        return data

    def key_numbers(self) -> dict[str, Any]:
        """The numbers make_engine keeps in stages.json."""
        data = self.to_json()
        keys = ("passed", "runners", "executed", "images", "outputs", "thresholds", "sizes")
        return {key: data[key] for key in keys if key in data}


class TorchCpuRunner(PytRunner):
    """Polygraphy's PytRunner on the CPU: the stock one moves inputs to CUDA and returns (outputs, time), which
    Polygraphy 0.53's BaseRunner.infer does not expect (docs/design.md §5). Inputs arrive in the artifact's dtype and
    are fed to the model as float32."""

    def __init__(self, model: torch.nn.Module, input_metadata: TensorMetadata, output_names: list[str]) -> None:
        # PytRunner calls its model argument if callable to get the module, and a module is callable: wrap it.
        super().__init__(lambda: model, input_metadata, output_names, name="pytorch-cpu")

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = [torch.from_numpy(np.asarray(value, dtype=np.float32)) for value in feed_dict.values()]
        with torch.no_grad():
            start = time.perf_counter()
            outputs = self.model(*inputs)
            self.inference_time = time.perf_counter() - start  # what BaseRunner.infer reads (not a return value)
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        return collections.OrderedDict(
            (name, output.float().numpy()) for name, output in zip(self.output_names, outputs, strict=True))


def _onnx_io(path: Path) -> tuple[TensorSpec, list[str]]:
    """The single image input (shape with -1 for the batch, and for H and W of a dynamic size) and the output
    names."""
    model = read_onnx(path)
    name, dims = graph_input(model, None, path, dynamic_size=True)
    elem_type = next(i for i in model.graph.input if i.name == name).type.tensor_type.elem_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    return TensorSpec(name, dtype, tuple(-1 if d is None else d for d in dims)), [o.name for o in model.graph.output]


class SwinEngineRunner(BaseRunner):
    """A Polygraphy runner over :class:`pipeline.runtime.SwinEngine`: activating it opens the engine (compatibility
    check, plugin library, context, stream), ``infer`` runs a batch through it, deactivating it closes it."""

    def __init__(self, engine_path: Path, plugin_library: Path | None = None, name: str = "tensorrt") -> None:
        super().__init__(name=name)
        self.engine_path = engine_path
        self.plugin_library = plugin_library
        self.engine: SwinEngine | None = None

    def activate_impl(self) -> None:
        self.engine = SwinEngine(self.engine_path, self.plugin_library)

    def get_input_metadata_impl(self) -> TensorMetadata:
        assert self.engine is not None
        spec = self.engine.input
        return TensorMetadata().add(spec.name, dtype=np.dtype(spec.dtype), shape=list(spec.shape))

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        assert self.engine is not None
        start = time.perf_counter()
        outputs = self.engine.infer(feed_dict[self.engine.input.name])
        self.inference_time = time.perf_counter() - start  # what BaseRunner.infer reads (not a return value)
        return collections.OrderedDict((name, outputs[name]) for name in self.engine.output_names)

    def deactivate_impl(self) -> None:
        assert self.engine is not None
        self.engine.close()
        self.engine = None


def engine_runner(engine: Path, plugin_library: Path | None = None) -> BaseRunner:
    """The Polygraphy runner of ``engine``: :class:`SwinEngineRunner`, named ``tensorrt`` in the report; the
    engine is loaded (with ``plugin_library``, else :func:`pipeline.tensorrt.load.engine_plugin_library`'s) when the
    runner is activated."""
    return SwinEngineRunner(engine, plugin_library)


def _candidate(artifact: Path, plugin_library: Path | None, onnx_path: Path | None
               ) -> tuple[BaseRunner, TensorSpec, list[str], Executed]:
    """The runner for ``artifact``, its input, its output names and what was executed (for the report)."""
    if artifact.suffix == ".onnx":
        image_input, output_names = _onnx_io(artifact)
        runner = OnnxrtRunner(lambda: ort_session(artifact), name="onnxruntime-cpu")
        return runner, image_input, output_names, Executed("onnx", str(artifact), "onnxruntime",
                                                           attention_kernel="reference (pipeline/kernels/reference.py)")
    if artifact.suffix != ".engine":
        raise PipelineError(f"cannot verify {artifact}: expected an .engine or an .onnx file")

    compatibility = check_engine_compatible(artifact, plugin_library=plugin_library)
    metadata, runtime = compatibility.metadata, compatibility.runtime
    if runtime is not None and runtime.backend == "tensorrt" and runtime.sm is not None:
        executed = Executed("engine", str(artifact), f"tensorrt {runtime.version}", gpu=runtime.gpu,
                            attention_kernel=kernel_choice().describe())
        output_names = [o.name for o in metadata.outputs]
        return engine_runner(artifact, plugin_library), metadata.inputs[0], output_names, executed

    # No TensorRT with a GPU here (or a TensorRT-RTX engine, which verify does not run yet): the ONNX the engine
    # was built from is what can be checked, provided it is still that file.
    source = Path(onnx_path or metadata.onnx.path)
    if not source.is_file() or file_sha256(source) != metadata.onnx.sha256:
        raise PipelineError(f"{artifact} cannot run here (no TensorRT with a CUDA GPU) and {source} is missing or "
                            "not the ONNX it was built from (sha256 differs); verify on a GPU machine or pass the ONNX")
    log.warning("verify: no TensorRT runtime with a GPU for %s here; verifying the ONNX it was built from (%s) on "
                "onnxruntime instead", artifact, source)
    runner, image_input, output_names, executed = _candidate(source, plugin_library, None)
    return runner, image_input, output_names, dataclasses.replace(executed, instead_of=str(artifact))


def _verification_images(selection: ImageSelection, count: int | None, size: tuple[int, int], batch: int
                         ) -> tuple[np.ndarray, VerifyImages]:
    """ImageNet-preprocessed images of ``selection`` and their record: where they came from, which files."""
    if selection.note:
        log.warning("verify: %s", selection.note)
    count = count or default_image_count(*size)
    if selection.folder is None:
        loaded = image_set(None, count, seed=VERIFY_SEED, img_size=size)
        # The generated folder is gone already: the names say which photo and crop each one was.
        files = tuple(p.name for p in loaded.files_used)
    else:
        loaded = load_image_set(selection.folder, count, seed=VERIFY_SEED, img_size=size, files=selection.files)
        files = tuple(p.relative_to(selection.folder).as_posix() for p in loaded.files_used)
    record = VerifyImages(
        source=selection.source, count=len(loaded), batch=batch, seed=VERIFY_SEED,
        folder=None if selection.folder is None else str(selection.folder), files=files,
        files_found=loaded.files_found, files_skipped=len(loaded.files_skipped),
        skipped=tuple(str(p) for p in loaded.files_skipped), samples=len(loaded),
        augmented_samples=loaded.augmented_samples,
        excluded=tuple(str(p) for p in selection.excluded), note=selection.note)
    return loaded.images, record


def _compare_batches(reference: BaseRunner, candidate: BaseRunner, feeds: list[dict[str, np.ndarray]],
                     output_names: list[str], tolerances: Tolerances) -> tuple[dict[str, ComparisonMetrics], bool]:
    """Run both runners on each feed; the metrics of each output and Polygraphy's verdict over every batch."""
    accumulated = {name: ComparisonMetrics() for name in output_names}
    polygraphy_passed = True
    # Polygraphy's per-iteration statistics and histograms only with -v; our summary and report carry the numbers.
    # Each batch is compared and dropped: a backbone's feature maps for every image would not fit in memory.
    with G_LOGGER.verbosity(G_LOGGER.INFO if log.isEnabledFor(logging.DEBUG) else G_LOGGER.WARNING), \
            reference, candidate:
        for done, feed in enumerate(feeds, start=1):
            results = RunResults([(runner.name, [IterationResult(runner.infer(feed), runner_name=runner.name)])
                                  for runner in (reference, candidate)])
            expected = results[reference.name][0]
            atol = {name: tolerances.polygraphy_atol(expected[name]) for name in output_names}
            # rtol=0: an element passes only within atol
            polygraphy_passed &= bool(Comparator.compare_accuracy(
                results, compare_func=SimpleCompareFunc(atol=atol, rtol=0.0)))
            for name in output_names:
                accumulated[name].add(expected[name], results[candidate.name][0][name])
            advance(done, len(feeds), "batches")
    return accumulated, polygraphy_passed


def _selection(image_dir: str | Path | ImageSelection | None) -> ImageSelection:
    """A folder (or none: generated crops) as the selection verification reads."""
    if isinstance(image_dir, ImageSelection):
        return image_dir
    return ImageSelection(*(("generated", None) if image_dir is None else ("images", Path(image_dir))), files=None)


def _verdicts(accumulated: dict[str, ComparisonMetrics], tolerances: Tolerances, polygraphy_passed: bool
              ) -> tuple[dict[str, OutputVerdict], list[str]]:
    """Each output's metrics judged by ``tolerances``, and every failure (Polygraphy's verdict included)."""
    outputs, failures = {}, []
    for name, metrics in accumulated.items():
        result = metrics.result()
        output_failures = tolerances.failures(result)
        outputs[name] = OutputVerdict(**dataclasses.asdict(result), passed=not output_failures)
        failures += [f"{name}: {failure}" for failure in output_failures]
    if not polygraphy_passed:
        failures.append("Polygraphy compare_accuracy failed (an element beyond its absolute tolerance)")
    return outputs, failures


def _size_batch(size: tuple[int, int], batch: int) -> int:
    """Images per batch at ``size``: ``batch``, fewer where a batch would exceed :data:`PIXELS_PER_BATCH`."""
    return max(1, min(batch, PIXELS_PER_BATCH // (size[0] * size[1])))


def _compare_size(reference: BaseRunner, candidate: BaseRunner, image_input: TensorSpec, output_names: list[str],
                  images: np.ndarray, batch: int, tolerances: Tolerances) -> tuple[dict[str, ComparisonMetrics], bool]:
    """Compare both runners on ``images`` (one size) in batches of ``batch``; both get the artifact's input dtype
    (the PyTorch runner casts to float32), so they see the same rounded images."""
    dtype = np.dtype(image_input.dtype)
    feeds = [{image_input.name: images[i:i + batch].astype(dtype)} for i in range(0, len(images), batch)]
    return _compare_batches(reference, candidate, feeds, output_names, tolerances)


def _verify_sizes(reference: BaseRunner, candidate: BaseRunner, image_input: TensorSpec, output_names: list[str],
                  selection: ImageSelection, image_count: int | None, sizes: tuple[tuple[int, int], ...], batch: int,
                  tolerances: Tolerances) -> tuple[dict[str, ComparisonMetrics], bool, list[SizeVerdict]]:
    """Each size's images compared and judged on its own; also every size's metrics together."""
    total = {name: ComparisonMetrics() for name in output_names}
    polygraphy_passed, verdicts = True, []
    for size in sizes:
        size_batch = _size_batch(size, batch)
        images, record = _verification_images(selection, image_count, size, size_batch)
        accumulated, size_passed = _compare_size(reference, candidate, image_input, output_names, images, size_batch,
                                                 tolerances)
        outputs, failures = _verdicts(accumulated, tolerances, size_passed)
        verdicts.append(SizeVerdict(size, record, outputs, not failures))
        log.info("verify: %s: %s", format_size(size), ", ".join(
            f"{n} cosine min {o.cosine_min:.6f}" for n, o in outputs.items()) + ("" if not failures else " FAILED"))
        for name in output_names:
            total[name].absorb(accumulated[name])
        polygraphy_passed &= size_passed
    return total, polygraphy_passed, verdicts


def _all_sizes_images(verdicts: list[SizeVerdict]) -> VerifyImages:
    """The images of every size as one record: their count, the largest batch, every file once."""
    first = verdicts[0].images
    files = tuple(dict.fromkeys(f for v in verdicts for f in v.images.files))
    return dataclasses.replace(first, count=sum(v.images.count for v in verdicts), files=files,
                               batch=max(v.images.batch for v in verdicts),
                               samples=sum(v.images.samples or 0 for v in verdicts))


def verify(model: torch.nn.Module, artifact: Path, precision: str, *, images: np.ndarray | None = None,
           image_dir: str | Path | ImageSelection | None = None, image_count: int | None = None, batch: int = 8,
           out_path: Path | None = None, plugin_library: Path | None = None, onnx_path: Path | None = None,
           model_record: ModelRecord | None = None, sizes: tuple[tuple[int, int], ...] = ()) -> VerifyReport:
    """Compare ``artifact`` (``.engine``, or ``.onnx`` run on onnxruntime with the reference op) to ``model``.

    Images: ``images`` (float32 ``[N, 3, H, W]``, preprocessed), else ``image_count`` images from the photos
    under ``image_dir`` (a folder, or the verification part of a :func:`pipeline.common.image_plan.plan_images`;
    ImageNet evaluation transform, random crops when there are fewer files), else generated crops of the scikit-image
    photos; the default count is :func:`default_image_count` of the input size. ``sizes``: for an artifact with
    dynamic H and W, the (H, W) to compare at, each judged on its own (``VerifyReport.sizes``). ``precision`` (fp32,
    fp16, int8) picks the tolerances in :data:`pipeline.common.compare.TOLERANCES`. An engine that cannot run here
    (no TensorRT with a CUDA GPU, or a TensorRT-RTX engine) is verified through ``onnx_path`` (default: the ONNX its
    metadata names), which must be the file it was built from. Outputs are compared batch by batch, so memory stays
    that of one batch. ``model_record`` (which weights the model has) is copied into the report. Writes the report
    to ``out_path`` (if given) and raises PipelineError, one line, if it fails.
    """
    artifact = Path(artifact)
    _check_arguments(artifact, precision, batch)
    candidate, image_input, output_names, executed = _candidate(artifact, plugin_library, onnx_path)
    _check_sizes(artifact, image_input, images, sizes)
    reference = TorchCpuRunner(model.eval(), TensorMetadata().add(
        image_input.name, dtype=np.dtype(image_input.dtype), shape=list(image_input.shape)), output_names)
    tolerances = TOLERANCES[precision]
    verdicts: list[SizeVerdict] = []
    if sizes:
        accumulated, polygraphy_passed, verdicts = _verify_sizes(
            reference, candidate, image_input, output_names, _selection(image_dir), image_count, sizes, batch,
            tolerances)
        image_record = _all_sizes_images(verdicts)
    else:
        if images is None:
            images, image_record = _verification_images(_selection(image_dir), image_count,
                                                        tuple(image_input.shape[2:]), batch)
        else:
            image_record = VerifyImages(source="given", count=len(images), batch=batch)
        _check_images(artifact, image_input, images)
        accumulated, polygraphy_passed = _compare_size(reference, candidate, image_input, output_names, images, batch,
                                                       tolerances)
    outputs, failures = _verdicts(accumulated, tolerances, polygraphy_passed)
    failures += [f"at {format_size(v.size)}" for v in verdicts if not v.passed]
    report = VerifyReport(artifact=str(artifact), executed=executed, model=model_record, precision=precision,
                          thresholds=tolerances, runners=(reference.name, candidate.name), images=image_record,
                          polygraphy_compare_accuracy_passed=polygraphy_passed, outputs=outputs, passed=not failures,
                          sizes=tuple(verdicts))
    _finish(report, failures, out_path)
    return report


def _check_arguments(artifact: Path, precision: str, batch: int) -> None:
    if precision not in TOLERANCES:
        raise PipelineError(f"unknown precision {precision!r}: expected one of {', '.join(TOLERANCES)}")
    if not artifact.is_file():
        raise PipelineError(f"{artifact} does not exist; build it first (python -m pipeline build)")
    if batch < 1:
        raise PipelineError(f"batch must be >= 1, got {batch}")


def _check_sizes(artifact: Path, image_input: TensorSpec, images: np.ndarray | None,
                 sizes: tuple[tuple[int, int], ...]) -> None:
    """Sizes are given exactly for an artifact with dynamic H and W, and then images are not."""
    dynamic = -1 in image_input.shape[2:]
    if dynamic and not sizes:
        raise PipelineError(f"{artifact} takes images of any size in its range: give the sizes to verify at")
    if sizes and not dynamic:
        raise PipelineError(f"{artifact} takes {format_size(image_input.shape[2:])} images only; verify it without "
                            "sizes")
    if sizes and images is not None:
        raise PipelineError("verify takes images or sizes (images are then drawn at each size), not both")


def _check_images(artifact: Path, image_input: TensorSpec, images: np.ndarray) -> None:
    if images.ndim != 4 or tuple(images.shape[1:]) != image_input.shape[1:]:
        raise PipelineError(f"images have shape {list(images.shape)} but {artifact} takes "
                            f"[N, {', '.join(map(str, image_input.shape[1:]))}]")


def _finish(report: VerifyReport, failures: list[str], out_path: Path | None) -> None:
    """Write the report, then raise on failures (one line) or log the numbers."""
    if out_path is not None:
        write_json(out_path, report.to_json())
    artifact, precision, executed = report.artifact, report.precision, report.executed
    if failures:
        where = f"; report: {out_path}" if out_path is not None else ""
        raise PipelineError(f"{artifact} ({precision}) does not match the PyTorch model: {'; '.join(failures)}{where}")
    log.info("verify: %s (%s, %s, attention %s) matches PyTorch on %d images%s: %s", artifact, precision,
             executed.backend, executed.attention_kernel, report.images.count,
             "" if not report.sizes else f" at {len(report.sizes)} sizes",
             ", ".join(f"{n} SQNR {o.sqnr_db or float('inf'):.1f} dB, cosine min {o.cosine_min:.6f}"
                       f"{'' if o.top1_agreement is None else f', top-1 agreement {o.top1_agreement:.3f}'}"
                       for n, o in report.outputs.items()))


def run(job: EngineJob) -> VerifyReport:
    """make_engine's verify stage: the engine (or, where it cannot run, the ONNX it was built from) against the
    job's PyTorch model on the images the plan leaves to verification, batches of at most 8."""
    recipe, files = job.recipe, job.files
    sizes = () if recipe.img_range is None else recipe.img_range.verification_sizes()
    return verify(job.model(), files.engine, recipe.precision, image_dir=recipe.image_plan(files.out).verification,
                  batch=min(8, recipe.max_batch), out_path=files.verify_report, plugin_library=recipe.plugin,
                  onnx_path=files.typed, model_record=job.model_record, sizes=sizes)
