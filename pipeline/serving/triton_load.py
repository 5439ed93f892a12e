"""Load on a model Triton serves (``make triton-load``): tritonclient's asynchronous gRPC API keeps N requests in
flight for a warm-up, then for a fixed window, at each concurrency; every request's latency in the window is kept,
and throughput with p50/p95/p99 goes to ``build/bench/triton_load_<model>_<UTC time>.json`` with the environment.

perf_analyzer's measurement rules (warm-up discarded, a stable window, every latency kept), without perf_analyzer,
which the package index does not have. Against a GPU Triton serving the TensorRT engine the same command measures
it; perf_analyzer there (NVIDIA's SDK container) compares: ``perf_analyzer -m <model> -u <host>:8001 -i grpc
--concurrency-range 1:8:... --measurement-interval 5000``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from pipeline.common.artifacts import write_json
from pipeline.common.errors import PipelineError
from pipeline.common.image_sizes import parse_size
from pipeline.common.records import JsonRecord
from pipeline.serving.triton_client import InputSpec, input_spec, model_config


@dataclasses.dataclass(frozen=True)
class LoadLevel(JsonRecord):
    """One concurrency's window."""

    concurrency: int
    requests: int  #: completed in the window, without error
    errors: int
    window_s: float
    throughput_per_s: float  #: requests (of ``batch`` images each) per second
    latency_ms_p50: float
    latency_ms_p95: float
    latency_ms_p99: float
    latencies_ms: tuple[float, ...]  #: every request's in the window, in completion order


@dataclasses.dataclass(frozen=True)
class LoadReport(JsonRecord):
    url: str
    model: str
    batch: int  #: images per request
    warmup_s: float
    levels: tuple[LoadLevel, ...]
    server: str  #: Triton's version, as the server reports it
    client_host: str
    client_cpus: int
    python: str
    tritonclient: str
    measured_at: str
    img_size: tuple[int, int] | None = None  #: the (H, W) sent to a model that takes any size


async def _level(client: object, model: str, inputs: list, concurrency: int, warmup_s: float,
                 window_s: float) -> LoadLevel:
    """``concurrency`` workers send back to back; requests that complete within the window after the warm-up
    count."""
    start = time.perf_counter() + warmup_s
    end = start + window_s
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        while (sent := time.perf_counter()) < end:
            try:
                await client.infer(model, inputs)
                failed = False
            except Exception:  # counted: a load test reports failures rather than stopping at the first
                failed = True
            done = time.perf_counter()
            if start <= done <= end:
                errors += failed
                if not failed:
                    latencies.append((done - sent) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    p50, p95, p99 = (float(np.percentile(latencies, q)) if latencies else float("nan") for q in (50, 95, 99))
    return LoadLevel(concurrency, len(latencies), errors, window_s, len(latencies) / window_s, p50, p95, p99,
                     tuple(round(v, 3) for v in latencies))


def _image_dims(model: str, spec: InputSpec, size: tuple[int, int] | None) -> tuple[int, ...]:
    """``[3, H, W]`` of the random images: the model's, or ``size`` where it takes any H and W (-1)."""
    if spec.size is not None:
        return spec.dims
    if size is None:
        raise PipelineError(f"{model} takes images of any size (H and W are -1 in its config): pass --img-size HxW, "
                            "the size to measure at")
    return (spec.dims[0], *size)


async def measure(url: str, model: str, concurrencies: list[int], window_s: float, warmup_s: float,
                  batch: int = 1, size: tuple[int, int] | None = None) -> LoadReport:
    """Every concurrency's level against ``model`` at ``url`` (gRPC), random images of its input shape (of ``size``
    where the model takes any H and W)."""
    import tritonclient.grpc.aio as grpc_aio

    client = grpc_aio.InferenceServerClient(url=url)
    try:
        try:
            spec = input_spec(model_config(await client.get_model_config(model, as_json=True)))
            server = (await client.get_server_metadata(as_json=True)).get("version", "?")
        except Exception as error:
            raise PipelineError(f"no Triton server serves {model} over gRPC at {url} "
                                f"({str(error).splitlines()[0][:200]}): start it, or pass --url and --model") from None
        dims = _image_dims(model, spec, size)
        images = np.random.default_rng(0).normal(size=(batch, *dims)).astype(spec.dtype)
        request = grpc_aio.InferInput(spec.name, list(images.shape), spec.datatype)
        request.set_data_from_numpy(images)
        levels = [await _level(client, model, [request], c, warmup_s, window_s) for c in concurrencies]
    finally:
        await client.close()
    return LoadReport(url, model, batch, warmup_s, tuple(levels), server, platform.node(), os.cpu_count() or 0,
                      platform.python_version(), metadata.version("tritonclient"),
                      datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                      None if spec.size is not None else (dims[1], dims[2]))


def parse_size_argument(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Throughput and latency percentiles of a model Triton serves, at "
                                                 "several concurrencies (tritonclient's async gRPC API)")
    parser.add_argument("--url", default="localhost:8001", help="the server's gRPC host:port")
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=10.0, help="each concurrency's measurement window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds sent and discarded before each window")
    parser.add_argument("--batch", type=int, default=1, help="images per request")
    parser.add_argument("--img-size", type=parse_size_argument, help="HxW of the images, for a model that takes any "
                                                                      "size (its config has -1 for H and W)")
    parser.add_argument("--out", type=Path, default=Path("build/bench"), help="folder of the JSON")
    args = parser.parse_args(argv)
    try:
        report = asyncio.run(measure(args.url, args.model, args.concurrency, args.seconds, args.warmup, args.batch,
                                     args.img_size))
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    stamp = report.measured_at.replace(":", "").replace("-", "").replace("+0000", "Z")
    path = write_json(args.out / f"triton_load_{args.model}_{stamp}.json", report.to_json())
    for level in report.levels:
        print(f"concurrency {level.concurrency}: {level.requests} requests, {level.errors} errors, "
              f"{level.throughput_per_s:.1f}/s, p50 {level.latency_ms_p50:.2f} ms, p95 {level.latency_ms_p95:.2f} ms, "
              f"p99 {level.latency_ms_p99:.2f} ms")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
