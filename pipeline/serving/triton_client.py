"""Send photos to a Swin model served by Triton Inference Server: a classifier's top-5 classes per photo, or a
backbone's feature maps (each output's shape and statistics; with ``--save-dir`` the maps, one .npz per photo).

    python client.py --url localhost:8001 --protocol grpc [--labels imagenet_classes.txt] photo.jpg more/*.png

``python -m pipeline triton`` copies this file unchanged into the repository beside ``imagenet_transform.py``: it
needs only numpy, Pillow and ``tritonclient[grpc,http]``. Requests follow the server's model configuration
(docs/design.md §9): photos are cropped to the input's H x W, or, where the configuration has -1 for H and W (an
engine built for a range of sizes), sent at their own size, one request per size (:func:`request_groups`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

try:  # a model repository: the copy beside this file
    import imagenet_transform
except ImportError:  # this project
    from pipeline.common import imagenet_transform

#: Triton's configuration data types → (the data type name its inference protocol uses, numpy's dtype).
DATA_TYPES = {"TYPE_FP32": ("FP32", np.float32), "TYPE_FP16": ("FP16", np.float16)}
PROTOCOLS = ("grpc", "http")
DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}


class ClientError(Exception):
    """A problem the user can fix: a bad argument, an unreadable photo, a model this client cannot feed."""


class InputSpec(NamedTuple):
    """The image input of a model configuration."""

    name: str
    datatype: str  #: the inference protocol's name, e.g. "FP32"
    dtype: Any  #: numpy's
    dims: tuple[int, ...]  #: without the batch dimension: (3, H, W); H and W are -1 where any size is taken
    max_batch_size: int

    @property
    def size(self) -> tuple[int, int] | None:
        """(H, W) every photo is cropped to; None where the model takes photos at their own size (-1, -1)."""
        return None if self.dims[1:] == (-1, -1) else (self.dims[1], self.dims[2])


# ---------------------------------------------------------------------------------------------------------
# Preprocessing: the ImageNet evaluation transform


def preprocess(image: str | Path | Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    """A photo (a path or a PIL image) as float32 ``[3, H, W]``, ImageNet-normalized: resized and centre-cropped to
    ``size`` = (H, W), or at its own size (no resize, no crop) when ``size`` is None."""
    try:
        if size is None:
            return imagenet_transform.normalize(imagenet_transform.read_rgb(image))
        return imagenet_transform.preprocess(image, size)
    except (OSError, ValueError) as error:
        raise ClientError(f"cannot read the image {image}: {error}") from None


# ---------------------------------------------------------------------------------------------------------
# The model configuration and the request


def model_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """The configuration itself, from what ``get_model_config`` returns (HTTP: the configuration; gRPC with
    ``as_json=True``: ``{"config": …}``) or from :func:`read_config`."""
    return config["config"] if "config" in config and "input" not in config else config


def input_spec(config: Mapping[str, Any]) -> InputSpec:
    """The image input of a model configuration (JSON form, as the server returns it or :func:`read_config`
    reads it); a ClientError unless it is one batched ``[3, H, W]`` input of a type this client can fill."""
    config = model_config(config)
    inputs = config.get("input", [])
    if len(inputs) != 1:
        raise ClientError(f"model {config.get('name')!r} has {len(inputs)} inputs; this client feeds one image input")
    spec = inputs[0]
    # gRPC's JSON spells int64 values as strings; a missing max_batch_size is 0 (protobuf omits defaults).
    dims = tuple(int(d) for d in spec.get("dims", ()))
    max_batch = int(config.get("max_batch_size", 0))
    data_type = spec.get("data_type", "TYPE_INVALID")
    if data_type not in DATA_TYPES:
        raise ClientError(f"input {spec['name']!r} is {data_type}; this client sends {', '.join(DATA_TYPES)}")
    if len(dims) != 3 or dims[0] != 3 or (min(dims[1:]) < 1 and dims[1:] != (-1, -1)):
        raise ClientError(f"input {spec['name']!r} has dims {list(dims)}; this client sends RGB images [3, H, W]")
    if max_batch < 1:
        raise ClientError(f"model {config.get('name')!r} has max_batch_size {max_batch}; this client sends batches")
    datatype, dtype = DATA_TYPES[data_type]
    return InputSpec(spec["name"], datatype, dtype, dims, max_batch)


def is_classifier(output_dims: Sequence[Sequence[int]]) -> bool:
    """Whether outputs with these dims (without the batch dimension) are a classifier's: one ``[classes]`` output
    (logits). A backbone has several ``[C, H, W]`` maps; ``python -m pipeline triton`` decides the same way."""
    return len(output_dims) == 1 and len(output_dims[0]) == 1


def output_dims(config: Mapping[str, Any]) -> list[tuple[int, ...]]:
    """Each output's dims of a model configuration, without the batch dimension."""
    return [tuple(int(d) for d in output.get("dims", ())) for output in model_config(config).get("output", [])]


def prepare(images: Sequence[str | Path | Image.Image], spec: InputSpec) -> list[np.ndarray]:
    """Each photo as the input takes it: ``[3, H, W]`` of its dtype (:func:`preprocess` to ``spec.size``)."""
    return [preprocess(image, spec.size).astype(spec.dtype, copy=False) for image in images]


def request_groups(sizes: Sequence[tuple[int, ...]], max_batch: int) -> list[list[int]]:
    """The requests for images of these sizes, as lists of their indices: images of one size together (a request is
    one array; Triton batches only requests of one shape), at most ``max_batch`` per request; sizes in the order
    they first appear, images in their order."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    by_size: dict[tuple[int, ...], list[int]] = {}
    for index, size in enumerate(sizes):
        by_size.setdefault(tuple(size), []).append(index)
    return [same[start:start + max_batch] for same in by_size.values() for start in range(0, len(same), max_batch)]


def build_request(images: Sequence[str | Path | Image.Image], config: Mapping[str, Any]
                  ) -> tuple[str, str, np.ndarray]:
    """(input name, the protocol's data type, the batch ``[N, 3, H, W]``) for ``images`` (N ≤ max_batch_size, all
    of one size where the model takes any: :func:`request_groups` says which go together)."""
    spec = input_spec(config)
    if not 1 <= len(images) <= spec.max_batch_size:
        raise ClientError(f"a request holds 1 to {spec.max_batch_size} images, got {len(images)}")
    arrays = prepare(images, spec)
    sizes = sorted({"x".join(map(str, array.shape[1:])) for array in arrays})
    if len(sizes) > 1:
        raise ClientError(f"a request holds images of one size, got {', '.join(sizes)} (H x W): send one request "
                          "per size (TritonModelClient.infer does)")
    return spec.name, spec.datatype, np.stack(arrays)


def read_config(path: str | Path) -> dict[str, Any]:
    """A ``config.pbtxt`` parsed with Triton's own ``ModelConfig`` protobuf, in the JSON form the server returns."""
    from google.protobuf import json_format, text_format

    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as error:
        raise ClientError(f"reading config.pbtxt needs tritonclient's gRPC part: pip install "
                          f"'tritonclient[grpc]' ({error})") from None
    message = text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


# ---------------------------------------------------------------------------------------------------------
# Talking to the server


def _client_module(protocol: str) -> Any:
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as error:
        raise ClientError(f"the {protocol} client needs tritonclient: pip install 'tritonclient[{protocol}]' "
                          f"({error})") from None
    return module


class TritonModelClient:
    """One model on one server, over gRPC or HTTP."""

    def __init__(self, url: str, protocol: str, model: str) -> None:
        self.url, self.protocol, self.model = url, protocol, model
        self.module = _client_module(protocol)
        self.client = self.module.InferenceServerClient(url=url)
        try:
            config = (self.client.get_model_config(model, as_json=True) if protocol == "grpc"
                      else self.client.get_model_config(model))
        except Exception as error:
            if not _unreachable(error):
                raise
            raise ClientError(f"no Triton server answers {protocol} at {url} ({str(error).splitlines()[0][:200]}): "
                              "start tritonserver as the repository's README.md says, or pass the server's --url "
                              "and --protocol") from None
        self.config = model_config(config)
        self.spec = input_spec(self.config)
        self.outputs = [output["name"] for output in self.config.get("output", [])]

    def infer_each(self, images: Sequence[str | Path | Image.Image]) -> list[dict[str, np.ndarray]]:
        """Each image's outputs (without the batch dimension), in the order given: requests of at most
        max_batch_size images of one size (:func:`request_groups`). Every photo is preprocessed first."""
        arrays = prepare(images, self.spec)
        each: list[dict[str, np.ndarray]] = [{} for _ in arrays]
        for group in request_groups([array.shape for array in arrays], self.spec.max_batch_size):
            result = self.send(self.spec.name, self.spec.datatype, np.stack([arrays[i] for i in group]))
            outputs = {name: result.as_numpy(name) for name in self.outputs}
            for row, index in enumerate(group):
                each[index] = {name: output[row] for name, output in outputs.items()}
        return each

    def infer(self, images: Sequence[str | Path | Image.Image]) -> dict[str, np.ndarray]:
        """Every output for ``images``, stacked ``[N, ...]`` in their order; a ClientError where the outputs differ
        in size (a backbone fed photos of several sizes: use :meth:`infer_each`)."""
        each = self.infer_each(images)
        for name in self.outputs:
            shapes = sorted({str(list(outputs[name].shape)) for outputs in each})
            if len(shapes) > 1:
                raise ClientError(f"output {name!r} has shapes {', '.join(shapes)} for these images, which do not "
                                  "stack: use TritonModelClient.infer_each, or send photos of one size")
        return {name: np.stack([outputs[name] for outputs in each]) for name in self.outputs}

    def send(self, name: str, datatype: str, batch: np.ndarray) -> Any:
        """One request of ``batch`` as input ``name``; a ClientError naming the server when it stops answering or
        refuses the request (Triton's reason, one line)."""
        request = self.module.InferInput(name, list(batch.shape), datatype)
        request.set_data_from_numpy(batch)
        try:
            return self.client.infer(self.model, [request],
                                     outputs=[self.module.InferRequestedOutput(o) for o in self.outputs])
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            if type(error).__name__ == "InferenceServerException" and not _unreachable(error):
                if not self._model_ready():  # a stopping server unloads its models before it closes its ports
                    raise ClientError(f"the Triton server at {self.url} stopped serving {self.model} ({reason}); "
                                      "restart it (or load the model) and run again") from None
                raise ClientError(f"the Triton server at {self.url} refused the request: {reason}") from None
            if _unreachable(error) or type(error).__module__.split(".")[0] in ("grpc", "geventhttpclient"):
                raise ClientError(f"the Triton server at {self.url} stopped answering {self.protocol} ({reason}); "
                                  "restart it and run again") from None
            raise

    def _model_ready(self) -> bool:
        try:
            return bool(self.client.is_model_ready(self.model))
        except Exception:  # no answer at all: not ready either
            return False


def _unreachable(error: Exception) -> bool:
    """Whether ``error`` says that nothing answered (refused, unknown host), rather than the server's answer."""
    status = getattr(error, "status", None)
    return isinstance(error, OSError) or (callable(status) and status() == "StatusCode.UNAVAILABLE")


def _default_model() -> str | None:
    """The model beside this file, when it runs as a repository's client.py holding exactly one model."""
    models = [p.parent.name for p in Path(__file__).resolve().parent.glob("*/config.pbtxt")]
    return models[0] if len(models) == 1 else None


def report_classes(paths: Sequence[str], logits: np.ndarray, labels: list[str] | None, k: int) -> None:
    """Print each image's ``k`` most probable classes with their softmax probabilities."""
    for path, best in zip(paths, imagenet_transform.top_k(logits, k), strict=True):
        classes = ", ".join(f"{index}{f' {labels[index]}' if labels and index < len(labels) else ''} "
                            f"{probability:.4f}" for index, probability in best)
        print(f"{path}: {classes}")


def describe_output(name: str, array: np.ndarray) -> str:
    """``features.0 [96, 200, 334] mean 0.01234 std 1.002 min -4.5 max 7.25``: one image's output."""
    values = array.astype(np.float64)
    return (f"{name} {list(array.shape)} mean {values.mean():.4g} std {values.std():.4g} min {values.min():.4g} "
            f"max {values.max():.4g}")


def report_maps(paths: Sequence[str], each: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Print, per image, each output's shape and statistics: a backbone's maps have no classes to rank."""
    for path, outputs in zip(paths, each, strict=True):
        print(f"{path}:")
        for name, array in outputs.items():
            print(f"  {describe_output(name, array)}")


def save_paths(paths: Sequence[str], folder: Path) -> list[Path]:
    """``folder/<image name>.npz`` per image; a ClientError when two images share a name."""
    stems = [Path(path).stem for path in paths]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ClientError(f"--save-dir names each file after its image, and several images are named "
                          f"{', '.join(repeated)}; rename them or save each in its own run")
    return [folder / f"{stem}.npz" for stem in stems]


def save_outputs(files: Sequence[Path], each: Sequence[Mapping[str, np.ndarray]]) -> None:
    """Each image's outputs into its ``.npz``, one array per output name (``np.load(f)["features.0"]``)."""
    files[0].parent.mkdir(parents=True, exist_ok=True)
    for file, outputs in zip(files, each, strict=True):
        np.savez(file, **outputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Top-5 classes (a classifier) or feature map statistics (a "
                                                 "backbone) of photos from a Swin model served by Triton")
    parser.add_argument("images", nargs="+", help="image files (anything Pillow reads)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="grpc")
    parser.add_argument("--url", help="host:port (default localhost:8001 for grpc, localhost:8000 for http)")
    default_model = _default_model()
    parser.add_argument("--model", default=default_model, required=default_model is None,
                        help="model name" + (f" (default {default_model})" if default_model else ""))
    parser.add_argument("--labels", type=Path, help="a classifier's class names: one per line, in class order")
    parser.add_argument("-k", "--top", type=int, default=5, help="a classifier's classes per image (default 5)")
    parser.add_argument("--save-dir", type=Path, help="also write each image's outputs to <dir>/<image name>.npz, "
                                                      "one array per output")
    args = parser.parse_args(argv)
    try:
        missing = [image for image in args.images if not Path(image).is_file()]
        if missing:  # before connecting, let alone preprocessing the others
            raise ClientError(f"no such image file: {', '.join(missing)}")
        files = save_paths(args.images, args.save_dir) if args.save_dir else None
        labels = args.labels.read_text().splitlines() if args.labels else None
        client = TritonModelClient(args.url or DEFAULT_URLS[args.protocol], args.protocol, args.model)
        each = client.infer_each(args.images)
        if is_classifier(output_dims(client.config)):
            logits = np.stack([next(iter(outputs.values())) for outputs in each])
            report_classes(args.images, logits, labels, args.top)
        else:
            report_maps(args.images, each)
        if files:
            save_outputs(files, each)
    except ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # the server's answer (InferenceServerException), no server, an unreadable label file
        if not isinstance(error, OSError) and type(error).__module__.split(".")[0] not in (
                "tritonclient", "grpc", "geventhttpclient"):
            raise
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
