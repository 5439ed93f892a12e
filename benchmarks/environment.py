"""Where a benchmark ran: host, CPU, GPU, clocks and power mode, driver, CUDA, TensorRT and library versions.

Everything is best effort: a field that cannot be read is ``None``, never an exception, so the same collector
serves CPU-only machines, datacenter GPUs and Jetson (where ``nvpmodel`` gives the power mode).
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from pipeline.kernels.selection import kernel_choice

#: nvidia-smi fields recorded per GPU: clocks and power state change latency by tens of percent. Read once, before
#: any path runs, so the clocks are an idle GPU's (345 MHz on an H100); benchmarks.gpu_load samples them under load.
_SMI_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.mem", "clocks.max.sm", "clocks.max.mem",
               "power.limit", "persistence_mode", "temperature.gpu")
_PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "tensorrt", "tensorrt-rtx-cu13-bindings",
             "polygraphy", "numpy")


def driver_version() -> int | None:
    """cuDriverGetVersion, e.g. 13000 for CUDA 13.0; None without a CUDA driver."""
    try:
        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
        return version.value
    except OSError:
        return None


def _run(command: list[str], timeout: float = 10) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):  # x86 and aarch64 spell it differently
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi() -> list[dict[str, str]] | None:
    output = _run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader"])
    if not output:
        return None
    return [dict(zip(_SMI_FIELDS, (v.strip() for v in line.split(",")), strict=False))
            for line in output.splitlines()]


def _jetson() -> dict[str, Any] | None:
    """L4T release and the nvpmodel power mode on Jetson; None elsewhere."""
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return None
    mode = _run(["nvpmodel", "-q"])
    return {"l4t": release.read_text().splitlines()[0].strip(), "nvpmodel": mode,
            "jetson_clocks_hint": "run `sudo jetson_clocks` before benchmarking to pin the clocks"}


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _nvcc_version() -> str | None:
    output = _run(["nvcc", "--version"])
    match = re.search(r"release ([0-9.]+)", output or "")
    return match.group(1) if match else None


def _torch_cuda() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cuda_available": torch.cuda.is_available(), "torch_cuda_runtime": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {"device": props.name, "compute_capability": f"{props.major}.{props.minor}",
                 "sms": props.multi_processor_count, "memory_gb": round(props.total_memory / 2**30, 1)}
    return info


def collect() -> dict[str, Any]:
    """The environment of this run, as a JSON-serializable dict."""
    return {
        "collected_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        # Other processes on the same cores skew CPU numbers: the load average says whether the machine was idle.
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "gpu": _torch_cuda(),
        "nvidia_smi": _nvidia_smi(),
        "cuda_driver": driver_version(),
        "nvcc": _nvcc_version(),
        "jetson": _jetson(),
        "packages": _versions(),
        # Which window-attention kernel the plugin and torch.ops.swin.window_attention run (SWIN_ATTN_KERNEL).
        "attention_kernel": dataclasses.asdict(kernel_choice()),
    }


def device_slug(environment: dict[str, Any]) -> str:
    """A file-name-safe name of the device the results belong to: the GPU, else the CPU model and core count."""
    gpu = environment["gpu"].get("device")
    name = gpu if gpu else f"cpu {environment['cpu']['model']} {environment['cpu']['cores']}c"
    for noise in ("(R)", "(TM)", "CPU", "Processor", "NVIDIA"):
        name = name.replace(noise, " ")
    name = re.sub(r"@.*?GHz", " ", name)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


if __name__ == "__main__":  # `python -m benchmarks.environment`: the record as JSON (benchmarks.device_check's env)
    import json

    print(json.dumps(collect(), indent=1))
