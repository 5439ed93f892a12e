"""The static resource report of the kernels, without a GPU: registers, shared memory, local memory, stack, and the
occupancy that allows on the architecture's GPU (H100, Jetson Orin, RTX 4090).

Builds each architecture into build/native-sm<arch>/ and reads what ptxas allotted each kernel and Triton image
(``pipeline.kernels.cuobjdump``). Exit 1 names the kernels with local memory or a stack frame (register spills,
slow), so a kernel change is checked before it spends GPU time; exit 2: a build or usage error. Needs cmake, nvcc
and cuobjdump (the test extra); no GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.artifacts import write_json
from pipeline.kernels.cmake import arch_build_dir, build_native
from pipeline.kernels.cuobjdump import KernelResources, kernel_resources, triton_image_resources

#: H100/H200, Jetson Orin, RTX 4090 (Ada).
DEFAULT_ARCHITECTURES = ("90", "87", "89")


@dataclass(frozen=True)
class SmLimits:
    """What one SM of a GPU holds (CUDA C Programming Guide, compute capabilities table)."""

    gpu: str
    shared_bytes: int  #: shared memory per SM usable by blocks
    threads: int
    blocks: int
    registers: int = 65536
    reserved_shared_bytes: int = 1024  #: the driver's per-block reservation (sm_80 and later)


#: The GPU whose occupancy each architecture's report shows.
SM_LIMITS = {"sm_90": SmLimits("H100", 228 * 1024, 2048, 32), "sm_87": SmLimits("Jetson Orin", 164 * 1024, 1536, 16),
             "sm_89": SmLimits("RTX 4090", 100 * 1024, 1536, 24), "sm_86": SmLimits("RTX 3090", 100 * 1024, 1536, 16),
             "sm_80": SmLimits("A100", 164 * 1024, 2048, 32)}


def occupancy(kernel: KernelResources) -> float | None:
    """Resident warps per SM over the most it holds, from registers, shared memory, threads and blocks; None where
    the block size is chosen at launch (the CUDA kernels) or the architecture has no entry in SM_LIMITS."""
    limits = SM_LIMITS.get(kernel.arch)
    if limits is None or kernel.threads is None:
        return None
    warps = -(-kernel.threads // 32)
    registers_per_warp = -(-kernel.registers * 32 // 256) * 256  # allocated per warp in units of 256
    shared = kernel.shared_bytes + kernel.dynamic_shared_bytes + limits.reserved_shared_bytes
    blocks = min(limits.registers // (registers_per_warp * warps), limits.shared_bytes // shared,
                 limits.threads // (warps * 32), limits.blocks)
    return blocks * warps / (limits.threads // 32)


def spill_message(kernels: Sequence[KernelResources]) -> str | None:
    """One line naming every kernel that uses local memory or a stack frame; None when none does."""
    spilling = [f"{k.arch} {k.name} (local {k.local_bytes} B, stack {k.stack_bytes} B)"
                for k in kernels if k.local_bytes or k.stack_bytes]
    if not spilling:
        return None
    return f"kernel_resources: local memory or a stack frame (spills, slow) in {'; '.join(spilling)}"


def table(kernels: Sequence[KernelResources]) -> str:
    rows = [("arch", "kernel", "registers", "shared B", "local B", "stack B", "occupancy")]
    for k in kernels:
        share = occupancy(k)
        rows.append((k.arch, k.name, str(k.registers), str(k.shared_bytes + k.dynamic_shared_bytes),
                     str(k.local_bytes), str(k.stack_bytes),
                     "-" if share is None else f"{share:.0%} on {SM_LIMITS[k.arch].gpu}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # Names left-aligned, numbers right-aligned.
    return "\n".join("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths, strict=True))).rstrip() for row in rows)


def architecture(value: str) -> str:
    if not re.fullmatch(r"\d+[af]?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is no CUDA architecture (a number such as 90, 87 or 90a)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=architecture, default=list(DEFAULT_ARCHITECTURES),
                        help="CUDA architectures to build and report (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    kernels: list[KernelResources] = []
    for arch in args.arch:
        try:
            libs = build_native(arch_build_dir(arch), cuda_arch=arch)
            found = kernel_resources(libs.cuda) + triton_image_resources(arch_build_dir(arch))
        except RuntimeError as error:
            print(f"kernel_resources: sm_{arch}: {error}", file=sys.stderr)
            return 2
        if not found:
            print(f"kernel_resources: sm_{arch}: cuobjdump found no kernels in {libs.cuda}", file=sys.stderr)
            return 2
        kernels += found
    print(table(kernels))
    if args.json:
        print(f"wrote {write_json(args.json, {'kernels': [dataclasses.asdict(k) for k in kernels]})}")
    message = spill_message(kernels)
    if message:
        print(message, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
