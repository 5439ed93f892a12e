"""SM clock and board power sampled while a GPU route is being timed (why and how: docs/design.md §8d).

``nvidia-smi -lms`` runs in the background for the whole route, and only the samples taken inside a batch's warm-up
and timed loop count; without nvidia-smi nothing is sampled and the record says why. Parsing and aggregation are
pure functions, tested on synthetic samples.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import IO

from benchmarks.records import GpuLoad, Spread
from benchmarks.stats import percentile

#: nvidia-smi fields, in this order; ``nounits`` strips "MHz" and "W". Every GPU is queried (no ``-i``, which
#: would need nvidia-smi's numbering: PCI order, not CUDA's) and the samples of the benchmarked one kept.
QUERY = ("timestamp", "index", "uuid", "clocks.sm", "power.draw")
_TIME_FORMAT = "%Y/%m/%d %H:%M:%S.%f"  # nvidia-smi's timestamp, local time, to the millisecond


@dataclasses.dataclass(frozen=True)
class Sample:
    time: float  #: seconds since the epoch (time.time()'s clock)
    index: str  #: nvidia-smi's index of the GPU
    uuid: str  #: GPU-…
    sm_clock_mhz: float | None
    power_w: float | None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_sample(line: str) -> Sample | None:
    """One line of ``nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits``; None for anything else (a
    header, an error message, a line cut short when the process was stopped)."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != len(QUERY):
        return None
    try:
        stamp = datetime.datetime.strptime(parts[0], _TIME_FORMAT).timestamp()  # naive: local time, as nvidia-smi
    except ValueError:
        return None
    clock, power = _number(parts[3]), _number(parts[4])
    return None if clock is None and power is None else Sample(stamp, parts[1], parts[2], clock, power)


def _spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    ordered = sorted(values)
    return Spread(ordered[0], round(percentile(ordered, 50), 1), ordered[-1])


def in_windows(samples: Iterable[Sample], windows: Iterable[tuple[float, float]]) -> list[Sample]:
    """The samples taken inside any of ``windows`` ((start, end) in time.time() seconds)."""
    spans = list(windows)
    return [s for s in samples if any(start <= s.time <= end for start, end in spans)]


def summarize_samples(samples: Iterable[Sample]) -> GpuLoad:
    """Min/median/max SM clock (MHz) and power (W) of ``samples``; ``samples`` 0 and no statistics for none."""
    kept = list(samples)
    return GpuLoad(len(kept), _spread([s.sm_clock_mhz for s in kept if s.sm_clock_mhz is not None]),
                   _spread([s.power_w for s in kept if s.power_w is not None]))


def device_matcher(visible_devices: str | None, uuid: str | None) -> Callable[[Sample], bool]:
    """Which nvidia-smi rows are CUDA device 0: by UUID when torch knows it; else the first CUDA_VISIBLE_DEVICES
    entry (an index or a UUID); else index 0 (nvidia-smi numbers by PCI order, so only a guess on a machine with
    several different GPUs and CUDA_DEVICE_ORDER unset)."""
    def normal(text: str) -> str:
        return text.strip().lower().removeprefix("gpu-")

    wanted = uuid or (visible_devices or "").split(",")[0].strip() or "0"
    if wanted.isdigit():
        return lambda sample: sample.index == wanted
    return lambda sample: normal(sample.uuid) == normal(wanted)


def _cuda_device_uuid() -> str | None:
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    except Exception:  # no CUDA here, or an older torch
        return None
    return str(uuid) if uuid else None


def _read_lines(stream: IO[str], sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(line)


class GpuLoadSampler:
    """``nvidia-smi -lms <interval>`` in the background while a route runs: ``start()``, time batches, ``stop()``.

    Not available (no nvidia-smi, or it exits at once): ``reason`` says why and ``samples`` stays empty; a benchmark
    never fails for want of a clock reading.
    """

    def __init__(self, device: Callable[[Sample], bool] | None = None, interval_ms: int = 50,
                 executable: str | None = "nvidia-smi") -> None:
        self.device = device
        self.interval_ms = interval_ms
        self.executable = shutil.which(executable) if executable else None
        self.samples: list[Sample] = []
        self.windows: dict[int, tuple[float, float]] = {}  #: by batch: (start, end) of its warm-up and timed loop
        self.reason: str | None = None if self.executable else "nvidia-smi not found: clocks and power not sampled"
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        # stdbuf: line-buffered output into the pipe where the C library would otherwise buffer 4 KiB (a minute of
        # samples); the time stamps come from nvidia-smi either way, so a late line is still placed right.
        line_buffered = [stdbuf, "-oL"] if (stdbuf := shutil.which("stdbuf")) else []
        return [*line_buffered, str(self.executable), f"--query-gpu={','.join(QUERY)}",
                "--format=csv,noheader,nounits", "-lms", str(self.interval_ms)]

    def _collect(self, line: str) -> None:
        sample = parse_sample(line)
        if sample is not None and self.device is not None and self.device(sample):
            self.samples.append(sample)

    def start(self) -> GpuLoadSampler:
        if self.executable is None:
            return self
        if self.device is None:
            self.device = device_matcher(os.environ.get("CUDA_VISIBLE_DEVICES"), _cuda_device_uuid())
        try:
            self._process = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                             stdin=subprocess.DEVNULL, text=True)
        except OSError as error:
            self.reason = f"nvidia-smi did not start: {error}"
            return self
        assert self._process.stdout is not None
        self._reader = threading.Thread(target=_read_lines, args=(self._process.stdout, self._collect),
                                        name="gpu-load-sampler", daemon=True)
        self._reader.start()
        return self

    def stop(self) -> list[Sample]:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # loop mode runs "until Ctrl+C": it exits with its output out
            try:
                process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if self._reader is not None:
                self._reader.join(timeout=5)
            if not self.samples and self.reason is None:
                self.reason = f"nvidia-smi gave no samples (exit status {process.returncode})"
        return self.samples

    def summary(self, windows: Iterable[tuple[float, float]]) -> GpuLoad:
        """summarize_samples over the samples inside ``windows``, with the reason where there are none."""
        summary = summarize_samples(in_windows(self.samples, windows))
        if summary.samples:
            return summary
        return dataclasses.replace(summary, reason=self.reason or (
            f"no sample fell inside the timed loops (shorter than nvidia-smi's {self.interval_ms} ms interval)"))

    def __enter__(self) -> GpuLoadSampler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
