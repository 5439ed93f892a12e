"""The committed kernel selection (``plugins/swin_window_attention/kernel_selection.json``): which kernel runs by
default and which Triton config is compiled per architecture, dtype and window; and the run-time choice."""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelConfig:
    """One point of the tuning space: a ``block_m`` x ``block_n`` tile of queries x keys per window and head;
    ``windows`` x ``heads`` of them per program (more bytes per program, fewer programs); warps and stages."""

    block_m: int = 64
    block_n: int = 64
    windows: int = 1
    heads: int = 1
    num_warps: int = 4
    num_stages: int = 2

    @property
    def name(self) -> str:
        return f"m{self.block_m}n{self.block_n}w{self.windows}h{self.heads}x{self.num_warps}s{self.num_stages}"

    @classmethod
    def parse(cls, name: str) -> KernelConfig:
        """The config :attr:`name` spells (``m64n64w1h1x4s2``); ValueError for another text."""
        match = re.fullmatch(r"m(\d+)n(\d+)w(\d+)h(\d+)x(\d+)s(\d+)", name)
        if match is None:
            raise ValueError(f"kernel config {name!r} is not of the form m64n64w1h1x4s2 (block_m, block_n, windows, "
                             "heads per program, warps, stages)")
        return cls(*map(int, match.groups()))


#: The tuning space the kernel benchmark times on a GPU; the plugin compiles the one per architecture, dtype and window
#: that plugins/swin_window_attention/kernel_selection.json names. Window 7 (49 tokens) fits one 64x64 tile; window 12
#: (144 tokens) takes 3x3 tiles of 64, or 9x5 of 16x32 with less padding.
CONFIGS = (
    KernelConfig(),
    KernelConfig(windows=2, num_warps=8),
    KernelConfig(num_warps=8),
    KernelConfig(block_m=32, block_n=32, num_warps=8),
    KernelConfig(block_m=16, block_n=32, num_warps=2),
    KernelConfig(windows=4, heads=2, num_warps=8),
)
DEFAULT_CONFIG = CONFIGS[0]

SELECTION_FILE = Path(__file__).resolve().parents[2] / "plugins" / "swin_window_attention" / "kernel_selection.json"
#: Environment variable that picks the kernel at run time, in the plugin, the C ABI and the PyTorch operator.
KERNEL_ENV = "SWIN_ATTN_KERNEL"
KERNELS = ("cuda", "triton")


@dataclass(frozen=True)
class KernelSelection:
    default_kernel: str
    measured_on: str | None
    configs: dict[str, dict[str, str]]  #: dtype -> window -> config name
    arch_configs: dict[str, dict[str, dict[str, str]]]  #: arch -> dtype -> window -> config name

    def config(self, arch: int, dtype: str, window: int) -> KernelConfig:
        """The config compiled for ``arch``: the architecture's own entry, else the common one, else the default."""
        for table in (self.arch_configs.get(str(arch), {}), self.configs):
            if name := table.get(dtype, {}).get(str(window)):
                return KernelConfig.parse(name)
        return DEFAULT_CONFIG


@dataclass(frozen=True)
class KernelChoice:
    """The kernel that runs the node, and why (recorded in verify.json and the benchmarks' JSON)."""

    kernel: str
    source: str  #: "SWIN_ATTN_KERNEL" or the selection file
    measured_on: str | None

    def describe(self) -> str:
        """``triton (SWIN_ATTN_KERNEL)``: what verify.json records and the logs say."""
        return f"{self.kernel} ({self.source})"


@functools.cache
def load_selection(path: Path = SELECTION_FILE) -> KernelSelection:
    data = json.loads(path.read_text())
    return KernelSelection(data["default_kernel"], data["measured_on"], data["configs"], data["arch_configs"])


def kernel_choice(selection: KernelSelection | None = None) -> KernelChoice:
    """``$SWIN_ATTN_KERNEL`` when set, else the selection's default; ValueError naming the variable otherwise."""
    selection = selection or load_selection()
    requested = os.environ.get(KERNEL_ENV, "").strip().lower()
    if requested and requested not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={requested!r}: expected one of {', '.join(KERNELS)} (or unset for the "
                         f"default, {selection.default_kernel})")
    if requested:
        return KernelChoice(requested, KERNEL_ENV, selection.measured_on)
    return KernelChoice(selection.default_kernel, SELECTION_FILE.name, selection.measured_on)
