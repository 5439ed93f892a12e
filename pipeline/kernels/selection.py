"""The committed kernel selection (``plugins/swin_window_attention/kernel_selection.json``): which kernel runs by
default and which Triton config is compiled per architecture, dtype and window; and the run-time choice."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.kernels.window_attention import DEFAULT_CONFIG, KernelConfig

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
