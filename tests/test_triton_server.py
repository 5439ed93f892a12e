"""The repositories `make triton` writes, served by a real Triton Inference Server: nvidia-pytriton's tritonserver
(build/serving, pipeline/serving/tritonserver.py) on 127.0.0.1, started and stopped by each test.

No TensorRT runs here: the TensorRT repositories must load up to the missing TensorRT backend, and the python
backend's CPU verification route serves the typed ONNX of a narrow Swin-T at 64x64 (export, surgery, FP16: a few
seconds) behind engine metadata (tests/test_triton.py's stand-in engines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import export_config
from test_triton import fake_engine, photos_of_sizes, write_photos

from pipeline.common.artifacts import file_sha256
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import SizeRange
from pipeline.common.onnx_io import ort_session
from pipeline.models import SwinTransformer, perturb_weights_
from pipeline.serving import triton_client
from pipeline.serving.triton import write_model_repository
from pipeline.serving.tritonserver import ServingEnv, TritonServer, free_ports, main, serving_env
from pipeline.stages.export import export_onnx
from pipeline.stages.precision import convert_fp16
from pipeline.stages.surgery import replace_window_attention
from pipeline.tensorrt.metadata import TensorSpec

pytest.importorskip("tritonclient.grpc")

#: What tritonserver says when a repository is right up to the engine: this machine has no TensorRT backend.
NO_TENSORRT = "unable to find backend library for backend 'tensorrt'"
SIZE = (64, 64)
DYNAMIC_SIZES = SizeRange.parse("48x48:64x64:96x96")
MAX_BATCH = 8
#: The dynamic batcher's wait: long enough for eight threads' requests to meet on 2 busy cores.
QUEUE_DELAY_US = 2000


@pytest.fixture(scope="session")
def serving() -> ServingEnv:
    return serving_env()


@contextlib.contextmanager
def tritonserver(serving: ServingEnv, repositories: list[Path], log: Path, models: tuple[str, ...] = ()
                 ) -> Iterator[TritonServer]:
    """A started server with ``models`` loaded; stopped whatever happens."""
    with TritonServer(serving, repositories, log) as server:
        for model in models:
            server.load(model)
        yield server


def stand_in_plugin(folder: Path) -> Path:
    """A file for the engines' metadata to name (the python backend ships no plugin; TensorRT ones need its bytes
    only: tests/test_triton.py's ``plugin`` fixture)."""
    path = folder / "libswin_window_attention_plugin.so"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF stand-in\x00libnvinfer.so.10\x00getCreators\x00")
    return path


def assert_loads_up_to_tensorrt(server: TritonServer, model: str) -> None:
    """The server accepts everything of ``model``'s repository and stops only where the engine is run."""
    with pytest.raises(PipelineError) as refusal:
        server.load(model)
    assert NO_TENSORRT in str(refusal.value), str(refusal.value)


#: A corrupted config.pbtxt (what replaces what): each must fail assert_loads_up_to_tensorrt.
CORRUPTIONS = {"a misspelt field": ("max_batch_size:", "max_batchsize:"),
               "an unknown data type": ("TYPE_FP32", "TYPE_FP23"),
               "a preferred batch above the maximum": ("preferred_batch_size: [ 8 ]", "preferred_batch_size: [ 64 ]"),
               "a name other than its folder's": ('name: "swin_t"', 'name: "swin_s"')}


def test_every_tensorrt_repository_loads_up_to_the_missing_backend(tmp_path: Path, serving: ServingEnv) -> None:
    """Classifier, backbone, several SMs (cc_model_filenames), an embedded plugin: tritonserver reads each
    repository `make triton` writes and stops only at the TensorRT backend it lacks; a corrupted copy does not."""
    plugin = stand_in_plugin(tmp_path / "plugin")
    backbone = ((TensorSpec("images", "float32", (-1, 3, 160, 224)),),
                tuple(TensorSpec(f"features.{i}", "float32", (-1, 96 << i, 40 >> i, 56 >> i)) for i in range(4)))
    repositories = {
        "swin_t": [fake_engine(tmp_path / "e/t", plugin)],
        "swin_t_features_160x224": [fake_engine(tmp_path / "e/f", plugin, tensors=backbone)],
        "swin_t_sms": [fake_engine(tmp_path / f"e/sm{sm}", plugin, sm=sm) for sm in (86, 89, 120)],
        "swin_t_embedded": [fake_engine(tmp_path / "e/embedded", plugin, embedded=True)],
    }
    for model, engines in repositories.items():
        write_model_repository(engines, tmp_path / model, model_name=model)
    corrupted = []
    for i, (old, new) in enumerate(CORRUPTIONS.values()):
        copy = tmp_path / f"corrupted{i}"
        shutil.copytree(tmp_path / "swin_t/swin_t", copy / "swin_t")
        config = copy / "swin_t/config.pbtxt"
        assert old in config.read_text()
        config.write_text(config.read_text().replace(old, new))
        corrupted.append(copy)
    with tritonserver(serving, [tmp_path / model for model in repositories], tmp_path / "server.log") as server:
        for model in repositories:
            assert_loads_up_to_tensorrt(server, model)
    for copy in corrupted:
        with tritonserver(serving, [copy], tmp_path / f"{copy.name}.log") as server:
            with pytest.raises(AssertionError, match="failed to poll from model repository"):
                assert_loads_up_to_tensorrt(server, "swin_t")


# ---------------------------------------------------------------------------------------------------------
# The python backend: the CPU verification route, served


@dataclasses.dataclass(frozen=True)
class ServedModel:
    model: str
    repository: Path
    typed: Path  #: the typed ONNX the stand-in engine was "built" from, which the repository serves


def typed_engine(folder: Path, features_only: bool, sizes: SizeRange | None = None) -> Path:
    """A narrow Swin-T at 64x64 (or over ``sizes``, fused, H and W dynamic) through export, surgery and FP16
    (model.swin.fp16.onnx), and stand-in engine metadata with its tensors, a 1..8 batch profile and its SHA-256: what
    `make engine` leaves in a build folder."""
    torch.manual_seed(0)
    model = perturb_weights_(SwinTransformer(export_config("T"), features_only=features_only,
                                             fused_attention=sizes is not None)).eval()
    export_onnx(model, folder / "model.onnx", img_size=SIZE, max_batch=MAX_BATCH, sizes=sizes)
    replace_window_attention(folder / "model.onnx", folder / "model.swin.onnx")
    typed = folder / "model.swin.fp16.onnx"
    convert_fp16(folder / "model.swin.onnx", typed)
    graph = onnx.load(typed, load_external_data=False).graph

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:  # -1 where dynamic, as the build records it
        dims = value.type.tensor_type.shape.dim[1:]
        return TensorSpec(value.name, "float32", (-1, *(d.dim_value or -1 for d in dims)))

    tensors = tuple(tuple(spec(v) for v in values) for values in (graph.input, graph.output))
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in (*graph.input, *graph.output))
    return fake_engine(folder, stand_in_plugin(folder / "plugin"), tensors=tensors, batch=(1, 4, MAX_BATCH),
                       onnx_sha256=file_sha256(typed),
                       sizes=None if sizes is None else (sizes.min, sizes.opt, sizes.max))


@pytest.fixture(scope="module")
def python_models(tmp_path_factory: pytest.TempPathFactory, serving: ServingEnv) -> dict[str, ServedModel]:
    """The classifier's and the backbone's python-backend repositories, as `make triton TRITON_BACKEND=python`
    writes them."""
    models = {}
    for kind, model in (("classifier", "swin_t_64x64"), ("backbone", "swin_t_features_48x48-96x96")):
        folder = tmp_path_factory.mktemp(kind)
        engine = typed_engine(folder / "build", features_only=kind == "backbone",
                              sizes=DYNAMIC_SIZES if kind == "backbone" else None)
        repository = folder / "triton"
        write_model_repository([engine], repository, model_name=model, backend="python",
                               max_queue_delay_us=QUEUE_DELAY_US)
        models[kind] = ServedModel(model, repository, folder / "build/model.swin.fp16.onnx")
    return models


@pytest.fixture(scope="module")
def python_server(python_models: dict[str, ServedModel], serving: ServingEnv,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    log = tmp_path_factory.mktemp("server") / "tritonserver.log"
    with tritonserver(serving, [m.repository for m in python_models.values()], log,
                      tuple(m.model for m in python_models.values())) as server:
        yield server


def test_python_route_config_is_the_engines_contract(python_models: dict[str, ServedModel],
                                                     python_server: TritonServer) -> None:
    """Same name, tensors, max_batch_size and dynamic batching as the TensorRT repository of the same engine;
    labelled as the CPU verification route."""
    served = python_models["classifier"]
    text = (served.repository / served.model / "config.pbtxt").read_text()
    assert "CPU VERIFICATION ROUTE" in text and 'backend: "python"' in text
    engine = served.typed.parent / "swin_t_fp16.engine"
    trt = write_model_repository([engine], served.repository.parent / "trt", model_name=served.model,
                                 max_queue_delay_us=QUEUE_DELAY_US)
    python, tensorrt = (triton_client.read_config(r / served.model / "config.pbtxt")
                        for r in (served.repository, trt.repository))
    for key in ("name", "max_batch_size", "input", "output", "dynamic_batching"):
        assert python[key] == tensorrt[key], key
    assert (served.repository / served.model / "1/model.onnx").read_bytes() == served.typed.read_bytes()
    status, config = python_server.request("GET", f"/v2/models/{served.model}/config")
    assert status == 200 and config["max_batch_size"] == MAX_BATCH


def reference_top5(typed: Path, photos: list[Path]) -> list[list[tuple[int, float]]]:
    """The pipeline's own onnxruntime run of the graph the repository serves, on the client's preprocessing."""
    batch = np.stack([triton_client.preprocess(photo, SIZE) for photo in photos])
    (logits,) = ort_session(typed).run(None, {"images": batch})
    return triton_client.imagenet_transform.top_k(logits, 5)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_client_round_trip_equals_onnxruntime(python_models: dict[str, ServedModel], python_server: TritonServer,
                                              tmp_path: Path, protocol: str) -> None:
    """The repository's client.py, run as a user runs it, prints the top-5 that onnxruntime gives for the same
    graph: same classes, probabilities within 1e-5 (the served logits; the printout has 4 decimals)."""
    served = python_models["classifier"]
    photos = write_photos(tmp_path / "photos")[:3]
    result = subprocess.run([sys.executable, "client.py", "--url", python_server.url(protocol), "--protocol",
                             protocol, *map(str, photos)], cwd=served.repository, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    expected = reference_top5(served.typed, photos)
    for line, photo, best in zip(result.stdout.splitlines(), photos, expected, strict=True):
        assert line == f"{photo}: " + ", ".join(f"{index} {probability:.4f}" for index, probability in best)
    client = triton_client.TritonModelClient(python_server.url(protocol), protocol, served.model)
    served_best = triton_client.imagenet_transform.top_k(client.infer(photos)["logits"], 5)
    for got, want in zip(served_best, expected, strict=True):
        assert [i for i, _ in got] == [i for i, _ in want]
        np.testing.assert_allclose([p for _, p in got], [p for _, p in want], rtol=0, atol=1e-5)


def test_backbone_serves_each_photo_at_its_own_size(python_models: dict[str, ServedModel],
                                                    python_server: TritonServer, tmp_path: Path) -> None:
    """The backbone (one engine over 48..96): config.pbtxt has -1 for H and W; the client sends each photo unresized,
    one request per size (the two 48x96 photos in one), and each of the four maps is what onnxruntime computes for
    that photo at that size."""
    served = python_models["backbone"]
    config = (served.repository / served.model / "config.pbtxt").read_text()
    assert "dims: [ 3, -1, -1 ]" in config
    sizes = [(48, 96), (96, 48), (77, 61), (48, 96)]
    photos = photos_of_sizes(tmp_path / "photos", sizes)
    client = triton_client.TritonModelClient(python_server.url("grpc"), "grpc", served.model)
    each = client.infer_each(photos)
    session = ort_session(served.typed)
    for photo, size, outputs in zip(photos, sizes, each, strict=True):
        expected = session.run(None, {"images": triton_client.preprocess(photo, None)[None]})
        assert len(outputs) == 4 == len(expected)
        for (name, got), want, stride in zip(outputs.items(), expected, (4, 8, 16, 32), strict=True):
            assert got.shape[1:] == (-(-size[0] // stride), -(-size[1] // stride)), (name, size)
            np.testing.assert_allclose(got, want[0], rtol=0, atol=1e-5)


def test_concurrent_single_image_clients_are_batched(python_models: dict[str, ServedModel],
                                                     python_server: TritonServer, tmp_path: Path) -> None:
    """Eight clients sending one image at a time: the dynamic batcher runs them in fewer executions."""
    served = python_models["classifier"]
    photo = write_photos(tmp_path / "photos")[0]
    before = python_server.statistics(served.model)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            client = triton_client.TritonModelClient(python_server.url("grpc"), "grpc", served.model)
            for _ in range(4):
                client.infer([photo])
        except BaseException as error:  # reported by the test, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors
    deadline = time.monotonic() + 10
    while True:  # the server records an execution's statistics just after it answers
        after = python_server.statistics(served.model)
        requests, executions = (int(after[key]) - int(before[key]) for key in ("inference_count", "execution_count"))
        if requests == 32 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert requests == 32 and executions < requests, (requests, executions)


def test_a_wrong_shape_or_dtype_is_triton_s_refusal_in_one_line(python_models: dict[str, ServedModel],
                                                               python_server: TritonServer) -> None:
    served = python_models["classifier"]
    for protocol in ("grpc", "http"):
        client = triton_client.TritonModelClient(python_server.url(protocol), protocol, served.model)
        for datatype, batch, says in (("FP32", np.zeros((1, 3, 32, 32), np.float32), "shape"),
                                      ("FP64", np.zeros((1, 3, *SIZE), np.float64), "data-type")):
            with pytest.raises(triton_client.ClientError) as refusal:
                client.send("images", datatype, batch)
            message = str(refusal.value)
            assert message.startswith(f"the Triton server at {python_server.url(protocol)} refused the request: ")
            assert "\n" not in message and says in message and "images" in message, message


def session_ends(session: int, timeout_s: float) -> bool:
    """Whether every process of the session (process group) ``session`` is gone within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(session, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_server_stopped_while_clients_send_then_restarted(python_models: dict[str, ServedModel],
                                                          serving: ServingEnv, tmp_path: Path) -> None:
    """The server dies (killed: a crash, an OOM kill) in the middle of client.py's requests: one error line naming
    the URL, exit 2, no traceback; started again on the same ports, the same command succeeds. (Stopped gracefully,
    Triton first drains its HTTP connections for up to --exit-timeout-secs, so a client may just finish.)"""
    served = python_models["classifier"]
    photos = write_photos(tmp_path / "photos")
    with tritonserver(serving, [served.repository], tmp_path / "server.log", (served.model,)) as server:
        for protocol in ("grpc", "http"):
            command = [sys.executable, "client.py", "--url", server.url(protocol), "--protocol", protocol]
            client = subprocess.Popen([*command, *map(str, photos * 100)], cwd=served.repository,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                start = int(server.statistics(served.model)["inference_count"])
                while int(server.statistics(served.model)["inference_count"]) == start:
                    assert client.poll() is None, client.stderr.read()
                session = server.process.pid
                server.stop(grace_s=0)
                assert session_ends(session, timeout_s=10)  # no Python backend stub outlives the killed server
                err = client.communicate(timeout=120)[1]
            finally:
                client.kill()
            assert client.returncode == 2 and err.count("\n") == 1 and "Traceback" not in err, (protocol, err)
            url = server.url(protocol)
            assert err.startswith(f"error: the Triton server at {url} stopped answering {protocol} ("), err
            server.start()
            server.load(served.model)
            again = subprocess.run([*command, str(photos[0])], cwd=served.repository, capture_output=True, text=True,
                                   timeout=120)
            assert again.returncode == 0 and again.stdout.startswith(f"{photos[0]}: "), again.stderr


def test_load_command_at_concurrency_8(python_models: dict[str, ServedModel], python_server: TritonServer,
                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`make triton-load` on the narrow model: ≥ 200 requests at concurrency 8 in the window, no errors, every
    latency kept, the JSON written with the environment."""
    from pipeline.serving import triton_load

    model = python_models["classifier"].model
    code = triton_load.main(["--url", python_server.url("grpc"), "--model", model, "--concurrency", "1", "8",
                             "--seconds", "3", "--warmup", "0.5", "--out", str(tmp_path)])
    assert code == 0
    [path] = tmp_path.glob(f"triton_load_{model}_*.json")
    report = json.loads(path.read_text())
    assert report["server"] and report["python"] and report["client_cpus"] >= 1
    one, eight = report["levels"]
    assert eight["concurrency"] == 8 and eight["requests"] >= 200 and eight["errors"] == one["errors"] == 0
    for level in (one, eight):
        latencies = np.array(level["latencies_ms"])
        assert len(latencies) == level["requests"]
        assert level["latency_ms_p50"] == pytest.approx(np.percentile(latencies, 50), abs=1e-3)
        assert level["latency_ms_p99"] == pytest.approx(np.percentile(latencies, 99), abs=1e-3)
        assert level["throughput_per_s"] == pytest.approx(level["requests"] / 3)
    assert f"wrote {path}" in capsys.readouterr().out


def test_triton_serve_serves_a_repository_until_ctrl_c(python_models: dict[str, ServedModel], tmp_path: Path) -> None:
    """`make triton-serve`: every model of the repository loaded on the given ports, Ctrl-C stops it (exit 0)."""
    served = python_models["classifier"]
    http, grpc = free_ports(2)
    command = [sys.executable, "-m", "pipeline.serving.tritonserver", str(served.repository), "--http-port",
               str(http), "--grpc-port", str(grpc)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"serving {served.model}: gRPC 127.0.0.1:{grpc}, HTTP 127.0.0.1:{http}"), line
        photo = write_photos(tmp_path / "photos")[0]
        client = triton_client.TritonModelClient(f"127.0.0.1:{grpc}", "grpc", served.model)
        assert client.infer([photo])["logits"].shape == (1, 1000)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        process.kill()
    with pytest.raises(triton_client.ClientError):
        client.infer([photo])
    assert main([str(tmp_path)]) == 2
