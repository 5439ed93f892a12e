"""The CUDA architectures the CMake project builds: the default list survives a re-configure (issue 8: it used to
fall back to nvcc's own default, sm_75 only), and the built libraries hold exactly the requested architectures."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from plugin_build import TEST_CUDA_ARCH

from pipeline.kernels.cmake import NativeLibs, configure_native, find_nvcc
from pipeline.kernels.cuobjdump import device_code

pytestmark = pytest.mark.skipif(shutil.which("cmake") is None or find_nvcc() is None,
                                reason="needs cmake and nvcc (the CUDA toolkit) to configure the plugin build")

#: SWIN_WANTED_ARCHITECTURES in CMakeLists.txt.
PROJECT_ARCHITECTURES = (75, 80, 86, 87, 89, 90, 100, 110, 120)


def cached_architectures(build_dir: Path) -> str:
    cache = (build_dir / "CMakeCache.txt").read_text()
    # The type is UNINITIALIZED when a user's -D gave none.
    match = re.search(r"^CMAKE_CUDA_ARCHITECTURES:\w+=(.*)$", cache, flags=re.MULTILINE)
    assert match, f"no CMAKE_CUDA_ARCHITECTURES in {build_dir / 'CMakeCache.txt'}"
    return match.group(1)


def test_reconfigure_keeps_the_default_and_a_user_choice(tmp_path):
    supported = subprocess.run([str(find_nvcc()), "--list-gpu-arch"], capture_output=True, text=True,
                               check=True).stdout.split()
    wanted = [arch for arch in PROJECT_ARCHITECTURES if f"compute_{arch}" in supported]
    # SASS for each, PTX of the newest too.
    default = ";".join([f"{arch}-real" for arch in wanted[:-1]] + [str(wanted[-1])])

    configure_native(tmp_path)
    first = cached_architectures(tmp_path)
    configure_native(tmp_path)
    assert (first, cached_architectures(tmp_path)) == (default, default)

    # One folder for both keeps the test short: a fresh configure costs seconds, a re-configure a fraction.
    configure_native(tmp_path, cuda_arch="87")
    first = cached_architectures(tmp_path)
    configure_native(tmp_path)
    assert (first, cached_architectures(tmp_path)) == ("87", "87")


@pytest.mark.parametrize("library", ["cuda", "plugin"])
def test_built_library_holds_exactly_the_requested_architecture(native_libs: NativeLibs, library):
    path = getattr(native_libs, library)
    assert path is not None, "CMake found no TensorRT headers, so no plugin library was built"
    # A plain architecture number means SASS and PTX for it.
    assert device_code(path, "elf") == [f"sm_{TEST_CUDA_ARCH}"]
    assert device_code(path, "ptx") == [f"sm_{TEST_CUDA_ARCH}"]


def test_host_reference_has_no_device_code(native_libs: NativeLibs):
    assert device_code(native_libs.reference) == []


def test_install_puts_the_libraries_in_lib_and_the_c_header_in_include(native_libs: NativeLibs, tmp_path):
    # The libraries stay where pipeline.kernels.cmake finds them (the top of the build folder), and `cmake --install`
    # of that build copies them (no rebuild) under the prefix.
    built = [native_libs.reference, native_libs.cuda, native_libs.plugin]
    build_dir = native_libs.reference.parent
    subprocess.run([shutil.which("cmake"), "--install", str(build_dir), "--prefix", str(tmp_path)], check=True,
                   capture_output=True, text=True)
    installed = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())
    expected = sorted([f"lib/{path.name}" for path in built if path is not None] + ["include/swin_window_attention.h"])
    assert installed == expected
    assert all(path.parent == build_dir for path in built if path is not None)
