"""Engines → a Triton Inference Server model repository (``python -m pipeline triton``, ``make triton``).

:func:`write_model_repository` checks every engine and the plugin library before it writes anything, then writes the
model's folder (``config.pbtxt``, the plans, the plugin library), a README with the ``tritonserver`` command, the
client and a record of what it wrote; :func:`served_kind` tells from the engines' metadata a classifier from a
backbone. What it writes and why it checks what it does: docs/design.md §9.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import re
import shutil
from pathlib import Path

from pipeline.common.artifacts import atomic_folder, check_writable, file_sha256, write_json
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange, format_size
from pipeline.common.imagenet_transform import IMAGENET_MEAN, IMAGENET_STD
from pipeline.common.records import JsonRecord
from pipeline.make import EngineFiles, EngineRecipe
from pipeline.serving import TRITON_BACKENDS
from pipeline.serving.triton_client import is_classifier
from pipeline.tensorrt.backends import TENSORRT, TENSORRT_RTX
from pipeline.tensorrt.load import check_engine_compatible, engine_plugin_library
from pipeline.tensorrt.metadata import BuiltWith, EngineMetadata, TensorSpec

log = logging.getLogger("pipeline.serving.triton")

#: The record at the top of every repository this module writes; its presence lets a rerun replace the folder.
MARKER = "swin_trt_triton.json"
WRITTEN_BY = "python -m pipeline triton"
CLIENT_SOURCE = Path(__file__).with_name("triton_client.py")
#: client.py's preprocessing, copied beside it under its own name (client.py imports it from there).
TRANSFORM_SOURCE = Path(__file__).parents[1] / "common" / "imagenet_transform.py"
#: Engine metadata dtypes (numpy names) → Triton's model configuration data types.
TRITON_DTYPES = {"bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
                 "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
                 "bfloat16": "TYPE_BF16"}
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
PYTHON_MODEL_SOURCE = Path(__file__).with_name("python_model.py")


@dataclasses.dataclass(frozen=True)
class TritonEngine(JsonRecord):
    """One engine in the repository."""

    source: str  #: the engine it was copied from
    file: str  #: in the repository, e.g. "swin_t/1/model.plan"
    compute_capability: str  #: Triton's key, e.g. "8.6"
    backend: BuiltWith
    precision: str
    engine_sha256: str


@dataclasses.dataclass(frozen=True)
class TritonModel(JsonRecord):
    """What :func:`write_model_repository` wrote (also ``swin_trt_triton.json`` in the repository)."""

    written_by: str
    repository: Path
    model: str
    config: str  #: relative to the repository
    engines: tuple[TritonEngine, ...]
    inputs: tuple[TensorSpec, ...]  #: with the batch dimension (-1), as the engines have them
    outputs: tuple[TensorSpec, ...]
    kind: str  #: "classifier" (one logits output) or "backbone" (feature maps): :func:`served_kind`
    backend: str  #: one of TRITON_BACKENDS
    #: the python backend's model: the typed ONNX it runs, relative to the repository (None for tensorrt)
    onnx: str | None
    max_batch_size: int
    preferred_batch_size: int
    max_queue_delay_us: int
    instances: int
    #: relative to the repository; None when every engine embeds the plugin (or has no plugin layer)
    plugin_library: str | None
    #: the TensorRT major the library registers with when dlopen-ed (None: it registers nothing then)
    plugin_registers_with_tensorrt: int | None
    readme: str
    client: str
    written_at: str


def model_name(recipe: EngineRecipe) -> str:
    """The Triton model name of a recipe's model, as ``make engine`` names its engine: ``swin_t``, ``swin_b384``,
    ``swin_t_features_800x1333`` (letters, digits and '_' only, as Triton's folder names allow)."""
    return f"swin_{recipe.model_tag}"


def make_variables(recipe: EngineRecipe) -> str:
    """The make variables that select ``recipe``'s model and engine: ``VARIANT=T PRECISION=fp16 FEATURES=1
    IMG_SIZE=800x1333 ATTENTION=tensorrt`` (the defaults left out but VARIANT and PRECISION; a size range as
    ``IMG_SIZE=320x320:800x1344:1344x1344``)."""
    words = [f"VARIANT={recipe.variant.upper()}", f"PRECISION={recipe.precision}"]
    words += ["FEATURES=1"] if recipe.features_only else []
    words += [f"IMG_SIZE={recipe.img_range}"] if recipe.img_range is not None else []
    words += [f"IMG_SIZE={format_size(recipe.img_size)}"] if recipe.img_size is not None else []
    words += ["ATTENTION=tensorrt"] if recipe.attention == "tensorrt" else []
    return " ".join(words)


def find_engine(recipe: EngineRecipe, engine_dir: Path | None = None) -> Path:
    """The engine ``make engine`` writes for ``recipe`` (into ``engine_dir``, default ``recipe.default_out_dir``), or
    a PipelineError naming the ``make engine`` command that builds it. Builds nothing."""
    folder = recipe.default_out_dir if engine_dir is None else Path(engine_dir)
    engine = EngineFiles(folder, recipe.model_tag, recipe.precision).engine
    if engine.is_file():
        return engine
    make = f"make engine {make_variables(recipe)}" + ("" if folder == recipe.default_out_dir
                                                       else f" BUILD_DIR={folder}")
    present = sorted(p.name for p in folder.glob("*.engine")) if folder.is_dir() else []
    found = f" ({folder} holds {', '.join(present)})" if present else f" ({folder} has no engine)"
    raise PipelineError(f"no {recipe.precision} engine of {_describe(recipe)} at {engine}{found}; build it first "
                        f"with `{make}`")


def _describe(recipe: EngineRecipe) -> str:
    """``Swin-T``, or ``the Swin-T backbone at 800x1333`` when not the variant's classifier at its own size."""
    name = f"Swin-{recipe.variant.upper()}"
    if recipe.model_tag == recipe.variant.lower():
        return name
    kind = "backbone" if recipe.features_only else "classifier"
    if recipe.img_range is not None:
        return f"the {name} {kind} over sizes {recipe.img_range}"
    return f"the {name} {kind} at {recipe.image_size[0]}x{recipe.image_size[1]}"


def served_kind(metadata: EngineMetadata) -> str:
    """"classifier" when the engine's outputs are one ``[N, classes]`` tensor (logits), else "backbone" (feature
    maps): read from the engine's metadata, so engines given by path are described as truly as found ones."""
    return "classifier" if is_classifier([spec.shape[1:] for spec in metadata.outputs]) else "backbone"


def img_size_value(metadata: EngineMetadata) -> str:
    """The engine's input size as ``--img-size`` / IMG_SIZE spell it: ``160x224``, or ``320x320:800x1344:1344x1344``
    (min:opt:max) for an engine taking a range of sizes."""
    sizes = metadata.profile.image_range
    return str(sizes) if metadata.dynamic_size else format_size(sizes.opt)


def _check_model(recipe: EngineRecipe, engine: Path, metadata: EngineMetadata) -> None:
    """The engine must be the model the options describe (classifier or backbone, input size or size range): its
    Triton model is named after them."""
    kind, sizes = served_kind(metadata), metadata.profile.image_range
    wanted = "backbone" if recipe.features_only else "classifier"
    fits = recipe.img_range == sizes if metadata.dynamic_size else (
        recipe.img_range is None and sizes.opt == recipe.image_size)
    if kind != wanted or not fits:
        asked = format_size(recipe.image_size) if recipe.img_range is None else f"sizes {recipe.img_range}"
        raise PipelineError(f"{engine} is a {kind} for {sizes.text()} images, but the model options ask for a "
                            f"{wanted} for {asked}; pass the engine's own (--features-only / FEATURES=1, "
                            f"--img-size / IMG_SIZE {img_size_value(metadata)})")


def compute_capability(sm: int) -> str:
    """SM86 → "8.6", SM120 → "12.0": the key Triton's TensorRT backend looks up in ``cc_model_filenames``."""
    return f"{sm // 10}.{sm % 10}"


def plugin_registers_with(library: Path) -> int | None:
    """The TensorRT major version whose registry ``library`` registers its creator with when it is only dlopen-ed:
    the ``libnvinfer.so.<N>`` it names (our plugin looks for that library already loaded; a plugin linked to
    libnvinfer names it too). None when it names no libnvinfer: then only ``IPluginRegistry::loadLibrary`` or
    trtexec's ``--dynamicPlugins`` (which call ``getCreators``) register it."""
    majors = {int(m) for m in re.findall(rb"libnvinfer\.so\.(\d+)\x00", library.read_bytes())}
    return max(majors) if majors else None


def _tensorrt_major(backend: BuiltWith) -> int:
    return int(backend.version.split(".")[0])


def _checked_engines(engines: list[Path], plugin_library: Path | None) -> list[EngineMetadata]:
    """Each engine's metadata, after the file checks; the engines must be one model for distinct SMs."""
    if not engines:
        raise PipelineError("no engine given: pass one engine per compute capability")
    if len({p.resolve() for p in engines}) != len(engines):
        raise PipelineError(f"an engine is given twice: {', '.join(map(str, engines))}")
    load_log = logging.getLogger("pipeline.tensorrt.load")
    level = load_log.level
    load_log.setLevel(logging.ERROR)  # "no TensorRT runtime here": on purpose, Triton's machine runs the engine
    try:
        metadata = [check_engine_compatible(engine, runtimes=[], plugin_library=plugin_library).metadata
                    for engine in engines]
    finally:
        load_log.setLevel(level)
    first, path = metadata[0], engines[0]
    for meta, other in zip(metadata[1:], engines[1:], strict=True):
        for what, mine, theirs in (("ONNX graph", first.onnx.sha256, meta.onnx.sha256),
                                   ("inputs", first.inputs, meta.inputs), ("outputs", first.outputs, meta.outputs),
                                   ("batch profile", first.profile, meta.profile)):
            if mine != theirs:
                raise PipelineError(f"{other} and {path} differ in their {what}: one Triton model serves one model "
                                    "(build each compute capability's engine from the same ONNX and --batch)")
    sms = [meta.target.sm for meta in metadata]
    if len(set(sms)) != len(sms):
        raise PipelineError(f"two engines are built for the same compute capability (SMs {sms}): Triton picks one "
                            "engine per GPU kind, so give one engine per SM")
    for meta, engine in zip(metadata, engines, strict=True):
        for spec in (*meta.inputs, *meta.outputs):
            if not spec.shape or spec.shape[0] != -1:
                raise PipelineError(f"{engine}: tensor {spec.name!r} has shape {list(spec.shape)} without a dynamic "
                                    "batch dimension; Triton batches requests along it (rebuild with --batch min,opt,"
                                    "max)")
            if spec.dtype not in TRITON_DTYPES:
                raise PipelineError(f"{engine}: tensor {spec.name!r} has dtype {spec.dtype}, which Triton's model "
                                    f"configuration has no type for")
    if first.profile.min[0] != 1:
        raise PipelineError(f"{path}: the batch profile starts at {first.profile.min[0]}, but Triton's dynamic batcher "
                            f"sends any batch from 1 to max_batch_size; rebuild with BATCH=1,"
                            f"{first.profile.opt[0]},{first.profile.max[0]}")
    return metadata


def _checked_plugin(engines: list[Path], metadata: list[EngineMetadata], plugin_library: Path | None
                    ) -> tuple[Path | None, int | None]:
    """The plugin library to ship (None when no engine needs one on disk) and the TensorRT major it registers with."""
    needing = [(engine, meta) for engine, meta in zip(engines, metadata, strict=True)
               if meta.needs_plugin_library]
    if not needing:
        return None, None
    library = engine_plugin_library(*needing[0], plugin_library)
    assert library is not None  # the engine does not embed it
    sha256 = needing[0][1].plugin.sha256  # what engine_plugin_library found the file to hash to
    for engine, meta in needing:
        if meta.plugin.sha256 != sha256:
            raise PipelineError(f"{engine} was built with another plugin library (sha256 {meta.plugin.sha256[:12]}…) "
                                f"than {library} ({sha256[:12]}…); pass the library it was built with (--plugin)")
    registers_with = plugin_registers_with(library)
    for engine, meta in needing:
        if meta.backend.name != TENSORRT.name:
            continue  # TensorRT-RTX engines: Triton runs none (warned about where the README is written)
        major = _tensorrt_major(meta.backend)
        if registers_with != major:
            does = (f"registers itself on load only with TensorRT {registers_with} (libnvinfer.so.{registers_with})"
                    if registers_with is not None else "does not register itself on load")
            raise PipelineError(
                f"{library} {does}, but {engine} was built with TensorRT {meta.backend.version}: Triton only dlopens "
                f"plugin libraries, so it would not find the SwinWindowAttention creator. Rebuild the plugin against "
                f"TensorRT {major}'s headers (`make plugin` where TensorRT {major} is installed, or TENSORRT_ROOT=…), "
                "then the engine with it")
    return library, registers_with


def _checked_target(repository: Path) -> None:
    """The target must be absent (and creatable), an empty folder, or a repository this module wrote (its marker
    record)."""
    if not repository.exists() and not repository.is_symlink():
        check_writable(repository, folder=True)
        return
    if not repository.is_dir() or repository.is_symlink():
        raise PipelineError(f"{repository} exists and is not a folder; choose another output folder (--out / "
                            "TRITON_DIR)")
    if not any(repository.iterdir()):
        return
    marker = repository / MARKER
    try:
        ours = json.loads(marker.read_text()).get("written_by") == WRITTEN_BY
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        ours = False
    if not ours:
        raise PipelineError(f"{repository} exists and is not a Triton repository written by `{WRITTEN_BY}` (no "
                            f"{MARKER} in it); choose another output folder (--out / TRITON_DIR) or remove it")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(kind: str, specs: tuple[TensorSpec, ...]) -> list[str]:
    lines = [f"{kind} ["]
    for i, spec in enumerate(specs):
        dims = ", ".join(str(d) for d in spec.shape[1:])
        lines += ["  {", f"    name: {_quoted(spec.name)}", f"    data_type: {TRITON_DTYPES[spec.dtype]}",
                  f"    dims: [ {dims} ]", "  }" + ("," if i < len(specs) - 1 else "")]
    return [*lines, "]"]


def config_text(model: str, metadata: list[EngineMetadata], files: list[str], *, max_queue_delay_us: int,
                instances: int, python_path: list[str] | None = None) -> str:
    """``config.pbtxt`` for engines (one per compute capability) stored as ``files`` in the version folder; with
    ``python_path`` (the served model's sys.path head) the python backend's CPU verification route instead, with the
    same tensors, max_batch_size and dynamic batching."""
    first = metadata[0]
    sources = "; ".join(f"{meta.engine} ({meta.backend.name} {meta.backend.version}, SM{meta.target.sm}, "
                        f"{meta.precision})" for meta in metadata)
    if python_path is None:
        comment, runs = [f"# Written by `{WRITTEN_BY}` from {sources}."], 'platform: "tensorrt_plan"'
    else:
        comment = [f"# Written by `{WRITTEN_BY} --triton-backend python`: the pipeline's CPU VERIFICATION ROUTE, "
                   "not for", f"# speed. 1/model.py runs 1/model.onnx ({first.onnx.path}, the typed ONNX {sources} "
                   "was built", "# from) on onnxruntime's CPU with the reference SwinWindowAttention op: the engine's "
                   "contract."]
        runs = 'backend: "python"'
    lines = [*comment,
             "# Shapes, names and types are the engine's; dims leave out the batch dimension (max_batch_size).",
             f"name: {_quoted(model)}", runs, f"max_batch_size: {first.profile.max[0]}",
             *_tensor_block("input", first.inputs), *_tensor_block("output", first.outputs),
             "dynamic_batching {", f"  preferred_batch_size: [ {first.profile.opt[0]} ]",
             f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}",
             "instance_group [", "  {", f"    kind: {'KIND_GPU' if python_path is None else 'KIND_CPU'}",
             f"    count: {instances}", "  }", "]"]
    if python_path is not None:
        lines += ["# The stub's sys.path head: numpy<2 (build/serving), the project's venv, the project.",
                  f'parameters {{ key: "python_path" value: {{ string_value: {_quoted(":".join(python_path))} }} }}']
    elif len(files) > 1:
        lines.append(f"default_model_filename: {_quoted(files[0])}")
        for meta, file in zip(metadata, files, strict=True):
            lines.append(f"cc_model_filenames {{ key: {_quoted(compute_capability(meta.target.sm))} "
                         f"value: {_quoted(file)} }}")
    return "\n".join(lines) + "\n"


def _shape(spec: TensorSpec, stride: int = 1) -> str:
    """``FP32 [N, 3, 224, 224]``; a dynamic H and W (a 4-D tensor's -1) as ``H, W``, or ``H/8, W/8`` for a map of
    that stride."""
    names = {2: "H", 3: "W"} if len(spec.shape) == 4 else {}
    dims = [str(d) if d != -1 or i not in names else names[i] if stride == 1 else f"{names[i]}/{stride}"
            for i, d in enumerate(spec.shape) if i > 0]
    return f"{TRITON_DTYPES[spec.dtype].removeprefix('TYPE_')} [N, {', '.join(dims)}]"


def _server_commands(record: TritonModel, embedded: bool) -> list[str]:
    settings = [f'plugins="$PWD/{record.plugin_library}"'] if record.plugin_library else []
    settings += ["version-compatible=true"] if embedded else []
    local = f' \\\n    --backend-config=tensorrt,{",".join(settings)}' if settings else ""
    docker = local.replace('"$PWD/', "/models/").replace('"', "").replace("\n", "\n    ")
    versions = sorted({e.backend.version for e in record.engines if e.backend.name == TENSORRT.name})
    version = (f"TensorRT {', '.join(versions)}" if versions else "the TensorRT you rebuild them with")
    return ["## Start the server", "",
            "From this folder (every path below is relative to it; Triton wants absolute paths, hence `$PWD`):", "",
            "```", f'tritonserver --model-repository="$PWD"{local}', "```", "",
            f"In NVIDIA's container, whose TensorRT must be the engines' exactly ({version}; engines do not cross "
            "TensorRT versions: pick the release from NVIDIA's framework support matrix):", "",
            "```", 'docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 -v "$PWD":/models \\',
            "    nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\", f"    tritonserver --model-repository=/models{docker}",
            "```", "",
            f"`curl -s localhost:8000/v2/models/{record.model}/ready -o /dev/null -w '%{{http_code}}\\n'` prints 200 "
            "once the model is loaded. Several repositories are served together by repeating `--model-repository`.",
            ""]


def _plugin_notes(record: TritonModel, embedded: bool) -> list[str]:
    if not record.plugin_library:
        return ["The engines embed the plugin library (`--embed-plugin`), so none is shipped; `version-compatible="
                "true` is what lets Triton's TensorRT backend run the host code stored in an engine (load only "
                "engines you trust this way).", ""] if embedded else []
    major = record.plugin_registers_with_tensorrt
    if major is None:
        registry = ("loaded libnvinfer, but this copy names none, so it registers nothing when dlopen-ed: rebuild "
                    "it with `make plugin` against the TensorRT of your Triton release.")
    else:
        registry = (f"loaded `libnvinfer.so.{major}` (TensorRT {major}: the major of the headers it was compiled "
                    f"against), which the backend has loaded by then. So this copy serves a Triton whose TensorRT is "
                    f"{major}.x; for another major (TensorRT 11 included) rebuild the plugin against that TensorRT's "
                    "headers (`make plugin` where it is installed, or `TENSORRT_ROOT=…`), the engine with it, and "
                    "rerun `make triton`.")
    if major is None:
        preload = "`LD_PRELOAD` does not help either: the library registers nothing on load."
    else:
        preload = (f'`LD_PRELOAD="libnvinfer.so.{major} $PWD/{record.plugin_library}" tritonserver '
                   '--model-repository="$PWD"` (no `plugins=`) is the alternative: the library has to be preloaded '
                   "together with libnvinfer, because a preloaded library is initialized when tritonserver starts, "
                   "before the TensorRT backend loads libnvinfer, and this library is deliberately not linked to it "
                   "(so it loads into TensorRT-RTX too); preloaded alone it registers nothing, and Triton never calls "
                   "its `getCreators` (both checked with a stand-in libnvinfer, not with TensorRT itself). Prefer "
                   "`plugins=`.")
    return ["### The plugin library", "",
            f"`plugins=` makes Triton's TensorRT backend `dlopen` `{record.plugin_library}` when it starts, before it "
            "loads any engine, and call nothing in it. The library registers its SwinWindowAttention creator from a "
            f"static initializer, with the plugin registry of an already {registry}", "", preload, ""]


def _number(value: float) -> str:
    return f"{round(value, 1):g}"


def preprocessing_text(size: tuple[int, int] | SizeRange) -> str:
    """What :func:`pipeline.common.imagenet_transform.preprocess` (client.py, calibration, verification) does to a photo
    for an input of ``size`` = (H, W), in words; for an input taking a range of sizes, what client.py does instead
    (the photo at its own size)."""
    mean, std = (", ".join(f"{v:.3f}" for v in values) for values in (IMAGENET_MEAN, IMAGENET_STD))
    normalized = (f"scaled to [0, 1] and normalized with the ImageNet mean ({mean}) and std ({std}), NCHW")
    if isinstance(size, SizeRange):
        return (f"Each photo is converted to 8-bit RGB and kept at its own size (no resize, no crop), then "
                f"{normalized}; H and W must each lie in the engine's range, {size.text()} (H x W)")
    height, width = size
    cover = (_number(height * 256 / 224), _number(width * 256 / 224))
    if height == width:
        resize = (f"resized (bilinear) so that the shorter side is {cover[0]}, and the centre {height} × {width} "
                  "cropped (224/256 of the shorter side)")
    else:
        resize = (f"resized (bilinear, aspect ratio kept) by the smallest factor that makes it at least {cover[0]} × "
                  f"{cover[1]} (H × W: {height} × {width} enlarged by 256/224), and the centre {height} × {width} "
                  "cropped: 1/8 of the photo is cut off along the side that fits tightest, more along the other "
                  f"unless its aspect ratio is {width}:{height}")
    return f"Each photo is converted to 8-bit RGB, {resize}; then {normalized}"


def _backbone_outputs(first: EngineMetadata) -> list[str]:
    """One line per output; a 4-D one with its stage and stride (input height / map height; where the engine takes a
    range of sizes there is no height to divide, and Swin's stage i has stride 4·2^i: patches of 4, then each patch
    merging halves H and W)."""
    height = first.inputs[0].shape[2]
    lines = []
    for i, spec in enumerate(first.outputs):
        if len(spec.shape) != 4:
            lines.append(f"- output `{spec.name}` {_shape(spec)}")
            continue
        stride = 4 << i if first.dynamic_size else round(height / spec.shape[2])
        lines.append(f"- output `{spec.name}` {_shape(spec, stride)}: stage {i + 1}, stride {stride}")
    return lines


def _served(record: TritonModel, first: EngineMetadata) -> list[str]:
    """What the model takes and returns, how it batches, and what a photo becomes."""
    batching = (f"N ≤ {record.max_batch_size}, the engine profile's maximum. Dynamic batching prefers batches of "
                f"{record.preferred_batch_size} (the profile's optimum) and waits at most {record.max_queue_delay_us} "
                f"µs to form them; {record.instances} instance(s) per GPU.")
    image, size = first.inputs[0], tuple(first.inputs[0].shape[2:])
    if first.dynamic_size:
        return _served_range(record, first, batching)
    prepared = preprocessing_text(size)
    if record.kind == "classifier":
        return [f"A classifier: input `{image.name}` {_shape(image)}; output `{first.outputs[0].name}` "
                f"{_shape(first.outputs[0])}, the logits. {batching}", "",
                f"{prepared}: `client.py` does exactly that, as calibration and verification do.", ""]
    return [f"A backbone (feature extractor, no classes): input `{image.name}` {_shape(image)}; outputs NCHW, each "
            "the output of a stage's last block (before that stage's patch merging, no final LayerNorm), its size "
            "the input's divided by the stride, rounded up (the model pads):", "", *_backbone_outputs(first), "",
            batching, "",
            f"{prepared}: `client.py` sends exactly that, which is what calibration and verification fed the engine. "
            "A detector usually prepares its images otherwise (resized to fit, then padded, nothing cut off): the "
            f"engine takes any FP32 [N, 3, {size[0]}, {size[1]}] batch, so send that from your own code.", ""]


def _served_range(record: TritonModel, first: EngineMetadata, batching: str) -> list[str]:
    """:func:`_served` for an engine taking a range of image sizes: which, and how requests of several sizes go."""
    image, sizes = first.inputs[0], first.profile.image_range
    takes = (f"input `{image.name}` {_shape(image)}, any H x W from {format_size(sizes.min)} to "
             f"{format_size(sizes.max)} (tuned for {format_size(sizes.opt)}; config.pbtxt has -1 for H and W)")
    one_size = ("One request holds images of one size, and Triton's dynamic batcher only batches requests of the "
                "same shape: `client.py` sends one request per image size. A size outside the range is refused by "
                "the server; resize or pad such images into it.")
    prepared = preprocessing_text(sizes)
    if record.kind == "classifier":
        return [f"A classifier: {takes}; output `{first.outputs[0].name}` {_shape(first.outputs[0])}, the logits. "
                f"{batching}", "", one_size, "", f"{prepared}: `client.py` does exactly that.", ""]
    return [f"A backbone (feature extractor, no classes): {takes}; outputs NCHW, each the output of a stage's last "
            "block (before that stage's patch merging, no final LayerNorm), its size the input's divided by the "
            "stride, rounded up (the model pads):", "", *_backbone_outputs(first), "", batching, "", one_size, "",
            f"{prepared}: `client.py` sends exactly that. A detector usually resizes its images to fit and pads them "
            "(nothing cut off); send such batches from your own code.", ""]


def _ask(record: TritonModel) -> list[str]:
    """How to run client.py against the server."""
    model = record.model
    needs = ("`client.py` needs numpy, Pillow and tritonclient (`pip install 'tritonclient[grpc,http]' pillow "
             "numpy`), nothing else from swin-trt. It reads the model configuration from the server, sends the images "
             "in requests of at most max_batch_size and prints")
    if record.kind == "classifier":
        what = (" each image's top-5 classes with their softmax probabilities (`--labels classes.txt`, one name per "
                "line, adds names):")
        extra = ""
    else:
        what = (", per image, each output's shape with its mean, std, min and max; `--save-dir DIR` also writes each "
                "image's outputs to `DIR/<image name>.npz`, one array per output name (`numpy.load(file)"
                f"[\"{record.outputs[0].name}\"]`):")
        extra = " --save-dir maps"
    return ["## Ask it", "", needs + what, "",
            "```", f"python client.py --url localhost:8001 --protocol grpc --model {model}{extra} photo.jpg more.png",
            f"python client.py --url localhost:8000 --protocol http --model {model} photo.jpg", "```", ""]


def _python_route(record: TritonModel) -> list[str]:
    """How the CPU verification route runs and is started."""
    return ["## The CPU verification route", "",
            f"Triton's python backend runs `{record.onnx}`, the typed ONNX the engine was built from, on onnxruntime's "
            "CPU with the pipeline's reference SwinWindowAttention op (`1/model.py`): the engine's name, tensors, "
            "max_batch_size and dynamic batching without a GPU, to test a deployment end to end (a client's CI), not "
            "for speed. `config.pbtxt`'s `python_path` puts numpy<2 (the stub's, from `build/serving`), this "
            "project's venv and the project on the stub's sys.path, so it serves on the machine that wrote it.", "",
            "## Start the server", "",
            "From the project, with the tritonserver and Python backend `make triton TRITON_BACKEND=python` installed "
            "into `build/serving` (nvidia-pytriton, requirements/serving.txt), on 127.0.0.1:8000 (HTTP) and :8001 "
            "(gRPC) until Ctrl-C:", "",
            "```", f"make triton-serve TRITON_DIR={record.repository}", "```", "",
            f"`curl -s localhost:8000/v2/models/{record.model}/ready -o /dev/null -w '%{{http_code}}\\n'` prints 200 "
            "once the model is loaded.", ""]


def _readme(record: TritonModel, metadata: list[EngineMetadata], recipe: EngineRecipe) -> str:
    """README.md; ``recipe`` names the model in the rebuild commands."""
    model, first = record.model, metadata[0]
    rows = [f"| `{e.file}` | `{e.source}` | {e.backend.name} {e.backend.version} | SM{meta.target.sm} "
            f"({e.compute_capability}{', ahead of time' if meta.target.ahead_of_time else ''}) | {e.precision} |"
            for e, meta in zip(record.engines, metadata, strict=True)]
    embedded = any(meta.embeds_plugin and meta.plugin_layers for meta in metadata)
    rtx = [e for e in record.engines if e.backend.name == TENSORRT_RTX.name]
    make = make_variables(dataclasses.replace(recipe, precision=first.precision, attention=first.attention))
    text = [f"# Triton Inference Server model repository: `{model}`", "",
            f"Written by `{WRITTEN_BY}` (`make triton`) on {record.written_at}; `{MARKER}` records what was written "
            "(a rerun may replace this folder because of it).", "",
            "| file | engine | built with | for | precision |", "|---|---|---|---|---|", *rows, "",
            *_served(record, first)]
    if record.backend == "python":
        return "\n".join([*text, *_python_route(record), *_ask(record)])
    if rtx:
        text += [f"**Not servable as is**: {', '.join(f'`{e.file}`' for e in rtx)} was built ahead of time by "
                 f"TensorRT-RTX {rtx[0].backend.version}. Triton's `tensorrt_plan` platform runs TensorRT "
                 "(libnvinfer), which does not deserialize TensorRT-RTX engines. On the serving machine (or one with "
                 f"its GPU and the TensorRT of your Triton release) rebuild with `make engine {make} "
                 f"BACKEND=tensorrt`, then run `make triton {make}` again: layout, configuration and client stay the "
                 "same.", ""]
    if first.attention == "tensorrt":
        text += ["The engines run TensorRT's own fused attention (`ATTENTION=tensorrt`, TensorRT ≥ 10.14): no plugin "
                 "library is shipped or loaded, and the server starts without a plugin setting or `LD_PRELOAD`.", ""]
    text += [*_server_commands(record, embedded), *_plugin_notes(record, embedded), *_ask(record)]
    return "\n".join(text)


def _record(engines: list[Path], metadata: list[EngineMetadata], repository: Path, model_name: str,
            files: list[str], library: Path | None, backend: str, **settings: int | None) -> TritonModel:
    first = metadata[0]
    return TritonModel(
        written_by=WRITTEN_BY, repository=repository, model=model_name, config=f"{model_name}/config.pbtxt",
        engines=tuple(TritonEngine(str(engine), f"{model_name}/1/{file}", compute_capability(meta.target.sm),
                                   meta.backend, meta.precision, meta.engine_sha256)
                      for engine, meta, file in zip(engines, metadata, files, strict=True)),
        inputs=first.inputs, outputs=first.outputs, kind=served_kind(first), max_batch_size=first.profile.max[0],
        preferred_batch_size=first.profile.opt[0], plugin_library=f"{model_name}/{library.name}" if library else None,
        readme="README.md", client="client.py", backend=backend,
        onnx=f"{model_name}/1/{files[0]}" if backend == "python" else None,
        written_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **settings)


def _typed_onnx(engine: Path, metadata: EngineMetadata) -> Path:
    """The typed ONNX ``engine`` was built from (its metadata's path, or that name beside the engine), unchanged
    since (its SHA-256)."""
    recorded = Path(metadata.onnx.path)
    for candidate in (recorded, engine.parent / recorded.name):
        if candidate.is_file() and file_sha256(candidate) == metadata.onnx.sha256:
            return candidate
    raise PipelineError(f"the python backend serves the typed ONNX {engine} was built from, and no {recorded.name} "
                        f"with its SHA-256 ({metadata.onnx.sha256[:12]}…) is at {recorded} or beside the engine; "
                        "rebuild the engine (`make engine` with the same variables)")


def _served_files(engines: list[Path], metadata: list[EngineMetadata], backend: str) -> tuple[list[Path], list[str]]:
    """(what the version folder holds, under which names): the plans, or for the python backend the one engine's
    typed ONNX."""
    if backend == "tensorrt":
        return engines, [f"model.sm{meta.target.sm}.plan" if len(engines) > 1 else "model.plan" for meta in metadata]
    if len(engines) != 1:
        raise PipelineError(f"the python backend serves one model on the CPU, got {len(engines)} engines; pass one")
    return [_typed_onnx(engines[0], metadata[0])], ["model.onnx"]


def write_model_repository(engines: list[Path], repository: Path, *, model_name: str,
                           recipe: EngineRecipe | None = None, plugin_library: Path | None = None,
                           max_queue_delay_us: int = 100, instances: int = 1, backend: str = "tensorrt"
                           ) -> TritonModel:
    """Write a Triton model repository serving ``engines`` (one per compute capability, metadata beside each) as
    ``model_name`` into ``repository``; see the module docstring. ``recipe``: the model options the engines must
    match (classifier or backbone, input size), which the README's rebuild commands name. ``plugin_library``
    defaults to the library the engines were built with (their metadata names it); it must be that library.
    ``backend`` "python": the CPU verification route (python_model.py over the engine's typed ONNX) instead."""
    engines, repository = [Path(e) for e in engines], Path(repository)
    if not _MODEL_NAME.fullmatch(model_name):
        raise PipelineError(f"model name {model_name!r}: use letters, digits, '_', '.' and '-' (Triton's folder name)")
    if instances < 1 or max_queue_delay_us < 0 or backend not in TRITON_BACKENDS:
        raise PipelineError(f"instances must be >= 1, the queue delay >= 0 µs and the backend one of "
                            f"{', '.join(TRITON_BACKENDS)}, got {instances}, {max_queue_delay_us} and {backend!r}")
    metadata = _checked_engines(engines, plugin_library)
    first = metadata[0]
    if recipe is not None:
        for engine, meta in zip(engines, metadata, strict=True):
            _check_model(recipe, engine, meta)
    else:  # only the variant is unknown: the engine's metadata says the rest
        sizes = first.profile.image_range
        recipe = EngineRecipe(variant="<variant>", img_size=None if first.dynamic_size else sizes.opt,
                              img_range=sizes if first.dynamic_size else None,
                              features_only=served_kind(first) == "backbone")
    library, registers_with = (_checked_plugin(engines, metadata, plugin_library) if backend == "tensorrt"
                               else (None, None))
    sources, files = _served_files(engines, metadata, backend)
    _checked_target(repository)
    record = _record(engines, metadata, repository, model_name, files, library, max_queue_delay_us=max_queue_delay_us,
                     instances=instances, plugin_registers_with_tensorrt=registers_with, backend=backend)
    rtx = [str(e) for e, meta in zip(engines, metadata, strict=True) if meta.backend.name == TENSORRT_RTX.name]
    if rtx and backend == "tensorrt":
        log.warning("triton: %s built by TensorRT-RTX, which Triton's TensorRT backend cannot load; the repository "
                    "is written, and its README says how to rebuild for the server", ", ".join(rtx))
    python_path = _python_path() if backend == "python" else None
    with atomic_folder(repository) as tmp:
        version = tmp / model_name / "1"
        version.mkdir(parents=True)
        for source, file in zip(sources, files, strict=True):
            shutil.copyfile(source, version / file)
        if python_path is not None:
            shutil.copyfile(PYTHON_MODEL_SOURCE, version / "model.py")
        if library:
            shutil.copy2(library, tmp / model_name / library.name)
        (tmp / record.config).write_text(config_text(model_name, metadata, files, max_queue_delay_us=max_queue_delay_us,
                                                     instances=instances, python_path=python_path))
        (tmp / record.readme).write_text(_readme(record, metadata, recipe))
        shutil.copyfile(CLIENT_SOURCE, tmp / record.client)
        shutil.copyfile(TRANSFORM_SOURCE, tmp / TRANSFORM_SOURCE.name)
        write_json(tmp / MARKER, {**record.to_json(), "repository": "."})
    log.info("triton: wrote %s (model %s, a %s on the %s backend: %d engine(s) for %s, max batch %d); start it as its "
             "README.md says", repository, model_name, record.kind, backend, len(engines),
             ", ".join(f"SM{m.target.sm}" for m in metadata), record.max_batch_size)
    return record


def _python_path() -> list[str]:
    """The python backend model's sys.path head; installs the served environment (build/serving) on first use."""
    from pipeline.serving.tritonserver import project_python_path, serving_env  # pip, only for this route

    return [str(serving_env().site), *project_python_path()]


def write_recipe_repository(recipe: EngineRecipe, repository: Path, *, engine_dir: Path | None = None,
                            engines: list[Path] | None = None, plugin_library: Path | None = None,
                            max_queue_delay_us: int = 100, instances: int = 1, backend: str = "tensorrt"
                            ) -> TritonModel:
    """``make triton``: the repository of ``recipe``'s model, named :func:`model_name` — ``engines`` if given, else
    the one ``make engine`` wrote for it into ``engine_dir`` (default ``recipe.default_out_dir``). Builds nothing."""
    recipe.validate(until="export")  # the variant, route and precision, before looking for files
    chosen = list(engines) if engines else [find_engine(recipe, engine_dir)]
    return write_model_repository(chosen, repository, model_name=model_name(recipe), recipe=recipe,
                                  plugin_library=plugin_library, max_queue_delay_us=max_queue_delay_us,
                                  instances=instances, backend=backend)
