"""What a built library's device code holds, read with ``cuobjdump``.

``device_code``: the CUDA architectures compiled into a library; ``kernel_resources`` and ``triton_image_resources``:
each kernel's registers, shared, local and stack bytes per architecture (``--dump-resource-usage``), which the
resource report and the tests hold against spills.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.kernels.selection import KernelConfig


def find_cuobjdump() -> Path | None:
    """cuobjdump of the pinned ``nvidia-cuda-cuobjdump`` wheel (the ``test`` extra), else the one on PATH."""
    try:
        files = importlib.metadata.files("nvidia-cuda-cuobjdump") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == "cuobjdump":
            return Path(str(file.locate()))
    found = shutil.which("cuobjdump")
    return Path(found) if found else None


def _cuobjdump(option: str, library: Path) -> str:
    """cuobjdump's output for ``option`` on ``library``; "" when the library holds no device code."""
    cuobjdump = find_cuobjdump()
    if cuobjdump is None:
        raise RuntimeError("cuobjdump not found; install the test extra (pip install -e '.[test]') or the CUDA toolkit")
    result = subprocess.run([str(cuobjdump), option, str(library)], capture_output=True, text=True, check=False)
    if "does not contain device code" in result.stderr:
        return ""
    if result.returncode != 0:
        raise RuntimeError(f"cuobjdump {option} {library} failed: {' '.join(result.stderr.split())}")
    return result.stdout


def device_code(library: Path, kind: Literal["elf", "ptx"] = "elf") -> list[str]:
    """The architectures of a library's SASS (``elf``) or PTX, in cuobjdump's order: ``["sm_75", "sm_86"]``."""
    # Lines read "ELF file    1: libname.1.sm_86.cubin" (PTX: "... .sm_86.ptx").
    return re.findall(r"\.(sm_\w+)\.(?:cubin|ptx)$", _cuobjdump(f"--list-{kind}", library), flags=re.MULTILINE)


@dataclass(frozen=True)
class KernelResources:
    """What ptxas allotted one function of one architecture's SASS (``cuobjdump --dump-resource-usage``)."""

    arch: str  #: "sm_86"
    function: str  #: mangled
    name: str  #: readable: "windowAttentionHalfKernel<4>"
    registers: int  #: per thread
    shared_bytes: int  #: static shared memory per block
    local_bytes: int  #: per thread; > 0 means register spills (or local arrays), slow
    stack_bytes: int  #: per thread call stack frame
    constant_bytes: int  #: all constant banks (bank 0 holds the kernel parameters)
    threads: int | None = None  #: per block, where the image fixes it (Triton); the CUDA kernels choose at launch
    dynamic_shared_bytes: int = 0  #: per block at launch, where the image fixes it (Triton)


def kernel_resources(library: Path) -> list[KernelResources]:
    """Every function of every architecture of a library's SASS, in cuobjdump's order ([] without device code)."""
    return parse_resource_usage(_cuobjdump("--dump-resource-usage", library))


def triton_image_resources(build_dir: Path) -> list[KernelResources]:
    """The Triton cubins ``make plugin`` compiled into ``build_dir`` (its ``triton/manifest.json``), each named by
    dtype, window and config, with the block size and dynamic shared memory it launches with ([] without triton)."""
    manifest = build_dir / "triton" / "manifest.json"
    if not manifest.is_file():
        return []
    kernels = []
    for entry in json.loads(manifest.read_text()):
        spec = entry["spec"]
        if spec["ptx"]:
            continue
        found = parse_resource_usage(_cuobjdump("--dump-resource-usage", build_dir / "triton" / "images" /
                                                entry["file"]))
        name = f"triton {spec['dtype']} w{spec['window']} {KernelConfig(**spec['config']).name}"
        kernels += [dataclasses.replace(k, arch=f"sm_{spec['arch']}", name=name, threads=32 * entry["num_warps"],
                                        dynamic_shared_bytes=entry["shared_bytes"]) for k in found]
    return kernels


def parse_resource_usage(text: str) -> list[KernelResources]:
    """Parse ``cuobjdump --dump-resource-usage``: an "arch = sm_XX" line opens each architecture's section, then
    " Function <mangled>:" followed by a line of "KEY:value" pairs (REG, STACK, SHARED, LOCAL, CONSTANT[n], ...)."""
    kernels, arch = [], ""
    for match in re.finditer(r"^arch = (\S+)$|^\s*Function (\S+):\s*\n(.*)$", text, flags=re.MULTILINE):
        if match.group(1):
            arch = match.group(1)
            continue
        function, line = match.group(2), match.group(3)
        usage = {key: int(value) for key, value in re.findall(r"([A-Z]+(?:\[\d+\])?):(\d+)", line)}
        if missing := {"REG", "SHARED", "LOCAL", "STACK"} - usage.keys():
            raise RuntimeError(f"cuobjdump's resource usage of {function} lacks {sorted(missing)}: {line.strip()!r}")
        kernels.append(KernelResources(
            arch=arch, function=function, name=readable_name(function), registers=usage["REG"],
            shared_bytes=usage["SHARED"], local_bytes=usage["LOCAL"], stack_bytes=usage["STACK"],
            constant_bytes=sum(value for key, value in usage.items() if key.startswith("CONSTANT"))))
    return kernels


#: Itanium codes of the builtin types a template argument may name.
_BUILTIN_TYPES = {"b": "bool", "c": "char", "a": "signed char", "h": "unsigned char", "s": "short",
                  "t": "unsigned short", "i": "int", "j": "unsigned", "l": "long", "m": "unsigned long",
                  "x": "long long", "y": "unsigned long long", "f": "float", "d": "double"}


def readable_name(mangled: str) -> str:
    """A kernel's identifier and its template arguments where they are integers, builtin or plainly named types
    (``windowAttentionHalfKernel<4>``, ``kernel<__half, 2>``), ``<...>`` for other arguments; the name as is when it
    is not Itanium-mangled (extern "C"). Parsed here because c++filt is not always installed."""
    prefix = re.match(r"_Z(N?)L?", mangled)  # L: internal linkage (a static function)
    if prefix is None:
        return mangled
    rest, identifier = mangled[prefix.end():], None
    # <length><identifier> components: namespaces, then the function; an unnested name has one, then its parameters.
    while (component := re.match(r"\d+", rest)) and (identifier is None or prefix.group(1)):
        length, start = int(component.group()), component.end()
        identifier, rest = rest[start:start + length], rest[start + length:]
    if identifier is None:
        return mangled
    if not rest.startswith("I"):
        return identifier
    arguments, rest = [], rest[1:]
    while rest and not rest.startswith("E"):
        argument, rest = _template_argument(rest)
        if argument is None:
            return f"{identifier}<...>"
        arguments.append(argument)
    return f"{identifier}<{', '.join(arguments)}>"


def _template_argument(text: str) -> tuple[str | None, str]:
    """The first template argument of ``text`` readable, and the text after it; None when it is not a simple one."""
    if literal := re.match(r"L[a-z](n?)(\d+)E", text):  # an integer: Li4E, Lin1E (-1), Lj2E (2u), Lb1E (true)
        return ("-" if literal.group(1) else "") + literal.group(2), text[literal.end():]
    if text[0] in _BUILTIN_TYPES:
        return _BUILTIN_TYPES[text[0]], text[1:]
    if named := re.match(r"\d+", text):  # a class named at namespace scope: 6__half
        length, start = int(named.group()), named.end()
        return text[start:start + length], text[start + length:]
    return None, text
