"""Compile the Triton window-attention kernel ahead of time into images the plugin embeds (no Python at run time).

    python -m pipeline.kernels.aot --arch 75 80 86 90 --out build/plugin/triton [--jobs 2]

writes ``images/*.cubin`` (one per architecture, dtype and window the selection table names), the PTX of the
newest architecture-neutral target for GPUs newer than every cubin, ``manifest.json`` and
``swin_window_attention_triton_images.cpp``: the images as ``.incbin`` data and the table
``swin_window_attention_triton.cpp`` picks from. ``make plugin`` runs it (CMake); docs/design.md §8c.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.kernels.selection import KernelConfig, KernelSelection, load_selection
from pipeline.kernels.window_attention import SPECIALIZED_WINDOWS, head_dim_block

#: Image dtypes: the node's two (SwinAttnDtype values in swin_window_attention.h).
DTYPES = {"float32": 0, "float16": 1}
#: The head_dim Swin uses everywhere (T/S/B/L); other head dims run the CUDA kernel until generic images exist.
HEAD_DIM = 32
_TRITON_TYPES = {"float32": "*fp32", "float16": "*fp16"}
_RUNTIME_ARGS = ("height", "width", "window_size", "shift_size", "num_heads", "head_dim")


@dataclass(frozen=True)
class ImageSpec:
    """One compiled image: the kernel for ``arch`` (cubin) or, with ``ptx``, for every GPU at or above it."""

    arch: int
    dtype: str
    window: int
    head_dim_block: int
    config: KernelConfig
    ptx: bool = False

    @property
    def file_name(self) -> str:
        kind = "ptx" if self.ptx else "cubin"
        return f"sm{self.arch}_{self.dtype}_w{self.window}_d{self.head_dim_block}_{self.config.name}.{kind}"


@dataclass(frozen=True)
class CompiledImage:
    spec: ImageSpec
    kernel_name: str
    shared_bytes: int  #: dynamic shared memory the launch must pass
    num_warps: int


def image_specs(archs: list[int], selection: KernelSelection) -> list[ImageSpec]:
    """The cubins for ``archs`` and the PTX of the newest architecture-neutral one (below sm_90, whose Triton
    targets are sm_90a, sm_100a, ...: those PTX run on that one GPU only)."""
    shapes = [(dtype, window) for dtype in DTYPES for window in SPECIALIZED_WINDOWS]
    specs = [ImageSpec(arch, dtype, window, head_dim_block(HEAD_DIM), selection.config(arch, dtype, window))
             for arch in archs for dtype, window in shapes]
    neutral = [arch for arch in archs if arch < 90]
    if neutral:
        newest = max(neutral)
        specs += [ImageSpec(newest, dtype, window, head_dim_block(HEAD_DIM), selection.config(newest, dtype, window),
                            ptx=True) for dtype, window in shapes]
    return specs


def compile_image(spec: ImageSpec) -> tuple[bytes, CompiledImage]:
    """Compile one image with the pinned triton (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from pipeline.kernels.window_attention import window_attention_kernel

    triton.knobs.compilation.disable_line_info = True  # line tables would double the library's size
    signature = {name: _TRITON_TYPES[spec.dtype] for name in ("qkv", "rel_bias", "qkv_bias", "out")}
    signature |= {name: "i32" for name in _RUNTIME_ARGS} | {"scale": "fp32"}
    constants = {"WINDOW": spec.window, "HEAD_DIM_BLOCK": spec.head_dim_block, "BLOCK_M": spec.config.block_m,
                 "BLOCK_N": spec.config.block_n, "WINDOWS": spec.config.windows, "HEADS": spec.config.heads}
    signature |= {name: "constexpr" for name in constants}
    aligned = {(index,): [["tt.divisibility", 16]] for index in range(4)}  # the C ABI's 16-byte pointers
    compiled = triton.compile(ASTSource(window_attention_kernel, signature, constants, aligned),
                              target=GPUTarget("cuda", spec.arch, 32),
                              options={"num_warps": spec.config.num_warps, "num_stages": spec.config.num_stages})
    metadata = compiled.metadata
    if metadata.global_scratch_size or metadata.profile_scratch_size:
        raise RuntimeError(f"{spec.file_name}: the kernel asks for global scratch memory, which the plugin's "
                           "launcher does not provide")
    data = compiled.asm["ptx"].encode() + b"\0" if spec.ptx else compiled.asm["cubin"]
    return data, CompiledImage(spec, metadata.name, metadata.shared, metadata.num_warps)


@contextlib.contextmanager
def _compiler_pool(jobs: int) -> Iterator[ProcessPoolExecutor]:
    """Worker processes that compile: started afresh (spawn) without TRITON_INTERPRET, which a test session or a user
    may have set and which Triton reads once, at import."""
    saved = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
            yield pool
    finally:
        if saved is not None:
            os.environ["TRITON_INTERPRET"] = saved


def compile_images(specs: list[ImageSpec], jobs: int) -> list[tuple[bytes, CompiledImage] | Exception]:
    """:func:`compile_image` of each spec on ``jobs`` processes: the image, or the error that stopped it."""
    with _compiler_pool(jobs) as pool:
        futures = [pool.submit(compile_image, spec) for spec in specs]
        return [future.exception() or future.result() for future in futures]


def _cpp_source(images: list[CompiledImage], image_dir: Path, triton_default: bool) -> str:
    """The generated C++: each image's bytes through ``.incbin`` (hidden symbols), then the table."""
    lines = ['// Generated by pipeline/kernels/aot.py (make plugin): do not edit.',
             '#include "swin_window_attention_triton.h"', '']
    for index, image in enumerate(images):
        path = (image_dir / image.spec.file_name).resolve()
        lines += [f'__asm__(".section .rodata\\n.balign 16\\n.hidden swin_triton_image_{index}\\n'
                  f'.globl swin_triton_image_{index}\\nswin_triton_image_{index}:\\n.incbin \\"{path}\\"\\n'
                  f'.globl swin_triton_image_{index}_end\\n.hidden swin_triton_image_{index}_end\\n'
                  f'swin_triton_image_{index}_end:\\n.previous");',
                  f'extern "C" unsigned char const swin_triton_image_{index}[], swin_triton_image_{index}_end[];']
    lines += ['', 'namespace swin_attn', '{', 'TritonImage const kTritonImages[] = {']
    for index, image in enumerate(images):
        spec, config = image.spec, image.spec.config
        lines.append(f'    {{{spec.arch}, {str(spec.ptx).lower()}, {DTYPES[spec.dtype]}, {spec.window}, '
                     f'{spec.head_dim_block}, {config.windows}, {config.heads}, {image.num_warps}, '
                     f'{image.shared_bytes}, "{image.kernel_name}", "{config.name}", swin_triton_image_{index}, '
                     f'swin_triton_image_{index}_end}},')
    if not images:
        lines.append('    {0, false, 0, 0, 0, 0, 0, 0, 0, "", "", nullptr, nullptr},  // none: never matched')
    lines += ['};', f'int32_t const kNbTritonImages = {len(images)};',
              f'bool const kTritonIsDefault = {str(triton_default).lower()};', '} // namespace swin_attn', '']
    return "\n".join(lines)


def build_images(archs: list[int], out_dir: Path, jobs: int = 1) -> list[CompiledImage]:
    """Compile every image of :func:`image_specs` into ``out_dir`` and write the C++ table and manifest.json.

    An architecture the pinned triton cannot target is left out with a line on stderr; every file is written to a
    temporary name first, so an interrupted build leaves the previous table whole."""
    selection = load_selection()
    specs = image_specs(sorted(set(archs)), selection)
    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[CompiledImage] = []
    for spec, result in zip(specs, compile_images(specs, jobs), strict=True):
        if isinstance(result, Exception):  # an architecture this triton does not know: its images are left out
            print(f"triton: {spec.file_name} not compiled ({str(result).splitlines()[0][:200]})", file=sys.stderr)
            continue
        data, image = result
        _write(image_dir / spec.file_name, data)
        images.append(image)
    source = _cpp_source(images, image_dir, triton_default=selection.default_kernel == "triton")
    _write(out_dir / "swin_window_attention_triton_images.cpp", source.encode())
    manifest = [asdict(image) | {"file": image.spec.file_name} for image in images]
    _write(out_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    return images


def _write(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.kernels.aot", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", required=True,
                        help="CUDA architectures: 86 or CMake's 86-real / 90-virtual forms")
    parser.add_argument("--out", type=Path, required=True, help="folder for the images and the generated C++")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiler processes (default: cores)")
    args = parser.parse_args(argv)
    archs = sorted({int(arch.split("-")[0]) for text in args.arch for arch in text.replace(";", " ").split()})
    images = build_images(archs, args.out, args.jobs)
    held = sorted({image.spec.arch for image in images if not image.spec.ptx})
    print(f"triton: {len(images)} window-attention images for sm {', '.join(map(str, held)) or 'none'} in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
