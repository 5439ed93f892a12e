"""The static resource report of the CUDA kernels, without a GPU: registers, shared memory, local memory and stack.

Builds the native libraries for each architecture into build/native-sm<arch>/ (``build_native``) and
reads what ptxas allotted each kernel of the CUDA library (``pipeline.native.kernel_resources``: ``cuobjdump
--dump-resource-usage``). Local memory or a stack frame means register spills to device memory, slow: the command
then exits 1 naming those kernels, so a kernel change is checked here before it spends GPU time. Exit 2: a build or
usage error. Needs cmake, nvcc and cuobjdump (the test extra); no GPU.

    python -m benchmarks.kernel_resources [--arch 90 87 86] [--json PATH]
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.artifacts import write_json
from pipeline.native import KernelResources, arch_build_dir, build_native, kernel_resources

#: H100/H200, Jetson Orin, Ampere (the tests' and TensorRT-RTX's SM86).
DEFAULT_ARCHITECTURES = ("90", "87", "86")


def spill_message(kernels: Sequence[KernelResources]) -> str | None:
    """One line naming every kernel that uses local memory or a stack frame; None when none does."""
    spilling = [f"{k.arch} {k.name} (local {k.local_bytes} B, stack {k.stack_bytes} B)"
                for k in kernels if k.local_bytes or k.stack_bytes]
    if not spilling:
        return None
    return f"kernel_resources: local memory or a stack frame (spills, slow) in {'; '.join(spilling)}"


def table(kernels: Sequence[KernelResources]) -> str:
    rows = [("arch", "kernel", "registers", "shared B", "local B", "stack B")]
    rows += [(k.arch, k.name, str(k.registers), str(k.shared_bytes), str(k.local_bytes), str(k.stack_bytes))
             for k in kernels]
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
            found = kernel_resources(libs.cuda)
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
