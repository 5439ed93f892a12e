"""The kernels' static resource report (``pipeline.kernels.cuobjdump.kernel_resources``,
``benchmarks.kernel_resources``): the parser on a fixed cuobjdump sample, the real report of the SM86 test build (no
kernel spills), and the spill verdict and exit codes of the command."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from plugin_build import TEST_CUDA_ARCH

from benchmarks import kernel_resources as command
from pipeline.kernels.cmake import NativeLibs, find_nvcc
from pipeline.kernels.cuobjdump import KernelResources, kernel_resources, parse_resource_usage, triton_image_resources

HALF4 = ("_ZN9swin_attn64_GLOBAL__N__3de0069d_31_swin_window_attention_kernel_cu_0f6b2ebc25windowAttentionHalfKernel"
         "ILi4EEEvNS0_10KernelArgsE")
FLOAT = ("_ZN9swin_attn64_GLOBAL__N__3de0069d_31_swin_window_attention_kernel_cu_0f6b2ebc26windowAttentionFloatKernel"
         "ENS0_10KernelArgsE")
#: ``cuobjdump --dump-resource-usage`` of a two-architecture build, trimmed, with an extern "C" kernel that spills
#: added. A PTX section (no resource usage) comes first, as cuobjdump prints it.
SAMPLE = f"""
Fatbin ptx code:
================
arch = sm_90
code version = [9,0]
host = linux
compile_size = 64bit
compressed
ptxasOptions =

Fatbin elf code:
================
arch = sm_86
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function {HALF4}:
  REG:47 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:432 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function {FLOAT}:
  REG:40 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:432 TEXTURE:0 SURFACE:0 SAMPLER:0

Fatbin elf code:
================
arch = sm_90
code version = [1,8]
host = linux
compile_size = 64bit

Resource usage:
 Common:
  GLOBAL:0
 Function {HALF4}:
  REG:62 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:608 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function swin_plain_c_kernel:
  REG:255 STACK:16 SHARED:0 LOCAL:24 CONSTANT[0]:608 CONSTANT[3]:8 TEXTURE:0 SURFACE:0 SAMPLER:0
"""


def test_parse_resource_usage_reads_every_architecture():
    assert parse_resource_usage(SAMPLE) == [
        KernelResources("sm_86", HALF4, "windowAttentionHalfKernel<4>", 47, 0, 0, 0, 432),
        KernelResources("sm_86", FLOAT, "windowAttentionFloatKernel", 40, 0, 0, 0, 432),
        KernelResources("sm_90", HALF4, "windowAttentionHalfKernel<4>", 62, 1024, 0, 0, 608),
        KernelResources("sm_90", "swin_plain_c_kernel", "swin_plain_c_kernel", 255, 0, 24, 16, 616),
    ]
    assert parse_resource_usage("") == []


def test_spilling_kernels_fail_the_command(monkeypatch, tmp_path, capsys):
    parsed = parse_resource_usage(SAMPLE)
    assert command.spill_message(parsed[:3]) is None
    assert command.spill_message(parsed) == ("kernel_resources: local memory or a stack frame (spills, slow) in "
                                             "sm_90 swin_plain_c_kernel (local 24 B, stack 16 B)")

    # The command on that report: no build, no cuobjdump.
    monkeypatch.setattr(command, "build_native", lambda build_dir, cuda_arch: NativeLibs(tmp_path, tmp_path, None))
    monkeypatch.setattr(command, "kernel_resources", lambda library: parsed)
    monkeypatch.setattr(command, "triton_image_resources", lambda build_dir: [])
    assert command.main(["--arch", "90", "--json", str(tmp_path / "report.json")]) == 1
    out, err = capsys.readouterr()
    assert "swin_plain_c_kernel" in out and err.strip() == command.spill_message(parsed)
    assert (tmp_path / "report.json").exists()
    monkeypatch.setattr(command, "kernel_resources", lambda library: parsed[:3])
    assert command.main(["--arch", "90"]) == 0


@pytest.mark.skipif(shutil.which("cmake") is None or find_nvcc() is None,
                    reason="needs cmake and nvcc (the CUDA toolkit) to build the kernels")
def test_no_kernel_of_the_test_build_spills(native_libs: NativeLibs):
    kernels = kernel_resources(native_libs.cuda)
    assert {k.arch for k in kernels} == {f"sm_{TEST_CUDA_ARCH}"}
    # The half kernel comes in one instance per head-dim tile count, the float kernel in one.
    names = sorted(k.name for k in kernels)
    assert names == ["windowAttentionFloatKernel"] + [f"windowAttentionHalfKernel<{n}>" for n in range(1, len(names))]
    assert len(names) >= 2
    for k in kernels:
        assert (k.local_bytes, k.stack_bytes) == (0, 0), f"{k.name} spills: {k}"
        assert 1 <= k.registers <= 255, k
    assert kernel_resources(native_libs.reference) == []


def test_errors_exit_2_in_one_line(monkeypatch, tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        command.main(["--arch", "sm90"])
    assert exited.value.code == 2
    assert "'sm90' is no CUDA architecture" in capsys.readouterr().err
    monkeypatch.setattr("pipeline.kernels.cuobjdump.find_cuobjdump", lambda: None)
    monkeypatch.setattr(command, "build_native", lambda build_dir, cuda_arch: NativeLibs(tmp_path, tmp_path, None))
    assert command.main(["--arch", "90"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "kernel_resources: sm_90: cuobjdump not found; install the test extra (pip install -e '.[test]') or the CUDA "
        "toolkit"]


def test_occupancy_follows_the_scarcest_resource():
    kernel = KernelResources("sm_90", "k", "k", 128, 1024, 0, 0, 0, threads=128, dynamic_shared_bytes=12288)
    assert command.occupancy(kernel) == 4 * 4 / 64  # registers: 65536 / (128 · 128) = 4 blocks of 4 warps
    small = dataclasses.replace(kernel, registers=32, dynamic_shared_bytes=100 * 1024)
    assert command.occupancy(small) == 2 * 4 / 64  # shared memory: 228 KiB / (100 + 1 + 1 KiB) = 2 blocks
    assert command.occupancy(dataclasses.replace(kernel, threads=None)) is None  # the CUDA kernels: set at launch
    assert command.occupancy(dataclasses.replace(kernel, arch="sm_75")) is None


@pytest.mark.skipif(shutil.which("cmake") is None or find_nvcc() is None,
                    reason="needs cmake and nvcc (the CUDA toolkit) to build the kernels")
def test_every_triton_image_of_the_test_build_is_reported_without_spills(native_libs: NativeLibs):
    kernels = triton_image_resources(native_libs.cuda.parent)
    assert sorted(k.name.split()[1:3] for k in kernels) == [["float16", "w12"], ["float16", "w7"],
                                                            ["float32", "w12"], ["float32", "w7"]]
    for k in kernels:
        assert k.arch == f"sm_{TEST_CUDA_ARCH}" and k.threads in (64, 128, 256) and k.dynamic_shared_bytes > 0
        assert (k.local_bytes, k.stack_bytes) == (0, 0), f"{k.name} spills: {k}"
        assert 0 < command.occupancy(k) <= 1
    assert "on RTX 3090" in command.table(kernels)
