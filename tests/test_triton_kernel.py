"""The Triton window-attention kernel under Triton's interpreter against pipeline/kernels/reference.py, through the
public operator, and compiled ahead of time into the native libraries (pipeline/kernels/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import triton
import yaml
from plugin_build import TEST_CUDA_ARCH, native_libs_for, triton_images_for

import pipeline.kernels.ops
import pipeline.kernels.window_attention as kernel_module
from pipeline.kernels import aot
from pipeline.kernels.cmake import arch_build_dir
from pipeline.kernels.native import SwinAttention
from pipeline.kernels.reference import window_attention_torch
from pipeline.kernels.selection import CONFIGS, KERNEL_ENV, KernelConfig, kernel_choice, load_selection
from pipeline.kernels.window_attention import SPECIALIZED_WINDOWS, window_attention

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = yaml.safe_load((ROOT / "plugins/swin_window_attention/SwinWindowAttention_PluginConfig.yaml").read_text())
TOLERANCE = {dtype: float(CONTRACT["versions"]["1"]["configs"][name]["abs_tol"])
             for dtype, name in ((torch.float32, "float32"), (torch.float16, "float16"))}

CASES = {  # batch, height, width, window, shift, heads, head_dim
    "shifted": (1, 14, 14, 7, 3, 3, 32),
    "unshifted-batch3": (3, 14, 7, 7, 0, 2, 32),
    "padded-shifted-nonsquare": (1, 10, 13, 7, 3, 2, 32),
    "smaller-than-window": (2, 5, 6, 7, 0, 3, 16),
    "window12-padded-shifted": (1, 13, 17, 12, 6, 2, 32),
    "window12-unshifted": (1, 12, 12, 12, 0, 1, 64),
    "48-heads": (1, 7, 7, 7, 0, 48, 8),
    "head-dim-24": (1, 8, 9, 7, 3, 2, 24),
    "runtime-window-5": (1, 11, 9, 5, 2, 2, 32),
}


def random_node(batch, height, width, window, heads, head_dim, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    channels, n = heads * head_dim, window * window
    qkv = torch.randn(batch, height * width, 3 * channels, generator=generator)
    rel_bias = torch.randn(heads, n, n, generator=generator)
    qkv_bias = torch.randn(3 * channels, generator=generator)
    return qkv.to(dtype), rel_bias.to(dtype), qkv_bias.to(dtype)


def assert_matches_reference(out: torch.Tensor, inputs, dtype: torch.dtype, **attributes) -> None:
    """The contract's tolerance: absolute in FP32, relative to max(1, max |expected|) in FP16; the reference sees
    the same rounded inputs."""
    expected = window_attention_torch(*(t.float() for t in inputs), **attributes)
    assert out.dtype == dtype and out.shape == expected.shape
    bound = TOLERANCE[dtype] * (max(1.0, float(expected.abs().max())) if dtype == torch.float16 else 1.0)
    assert float((out.float() - expected).abs().max()) <= bound


@pytest.fixture
def interpreter() -> None:
    """CPU tensors through Triton's interpreter (conftest.py switches it on when there is no GPU)."""
    if isinstance(kernel_module.window_attention_kernel, triton.runtime.JITFunction):
        pytest.skip("Triton's interpreter is off in this session (a GPU is present; the gpu tests run the kernel)")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_kernel_matches_reference(interpreter, case, dtype) -> None:
    batch, height, width, window, shift, heads, head_dim = case
    inputs = random_node(batch, height, width, window, heads, head_dim, dtype)
    attributes = dict(height=height, width=width, window_size=window, shift_size=shift, num_heads=heads,
                      scale=head_dim ** -0.5)
    assert_matches_reference(window_attention(*inputs, **attributes), inputs, dtype, **attributes)


@pytest.mark.parametrize("config", CONFIGS[1:], ids=[config.name for config in CONFIGS[1:]])
@pytest.mark.parametrize("window", SPECIALIZED_WINDOWS)
def test_every_config_matches_reference(interpreter, config: KernelConfig, window: int) -> None:
    """The tuning space (several windows and heads per program, small tiles, key blocks of window 12)."""
    height, width, heads = window, 2 * window - 1, 3  # two windows, the second padded; an odd head count
    inputs = random_node(1, height, width, window, heads, 16, torch.float16, seed=window)
    attributes = dict(height=height, width=width, window_size=window, shift_size=window // 2, num_heads=heads,
                      scale=0.25)
    assert_matches_reference(window_attention(*inputs, **attributes, config=config), inputs, torch.float16,
                             **attributes)


def test_kernel_refuses_what_it_cannot_run(interpreter) -> None:
    qkv, rel_bias, qkv_bias = random_node(1, 17, 17, 17, 1, 16, torch.float32)
    with pytest.raises(ValueError, match="window_size=17 is above the kernel's 16"):
        window_attention(qkv, rel_bias, qkv_bias, height=17, width=17, window_size=17, shift_size=0, num_heads=1,
                         scale=1.0)
    qkv, rel_bias, qkv_bias = random_node(1, 7, 7, 7, 1, 12, torch.float32)
    with pytest.raises(ValueError, match="head_dim=12 must be a multiple of 8"):
        window_attention(qkv, rel_bias, qkv_bias, height=7, width=7, window_size=7, shift_size=0, num_heads=1,
                         scale=1.0)


def test_cpu_tensors_need_the_interpreter() -> None:
    """A process that imported Triton without TRITON_INTERPRET=1 cannot run the kernel on CPU tensors."""
    code = ("import torch; from pipeline.kernels.window_attention import window_attention; "
            "t = torch.zeros; window_attention(t(1, 49, 48), t(1, 49, 49), t(48), height=7, width=7, window_size=7, "
            "shift_size=0, num_heads=1, scale=1.0)")
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)
    assert result.returncode == 1
    assert "start Python with TRITON_INTERPRET=1 in the environment" in result.stderr.splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------
# The public operator and the run-time choice


@pytest.mark.parametrize("op_name", ["window_attention", "window_attention_triton"])
def test_operator_runs_the_triton_kernel_when_selected(interpreter, monkeypatch: pytest.MonkeyPatch,
                                                       op_name: str) -> None:
    launches = []

    def counted(*args, **kwargs):
        launches.append(kwargs.get("config"))
        return window_attention(*args, **kwargs)

    monkeypatch.setattr(kernel_module, "window_attention", counted)
    monkeypatch.setenv(KERNEL_ENV, "triton")
    inputs = random_node(2, 10, 13, 7, 2, 32, torch.float32)
    out = getattr(torch.ops.swin, op_name)(*inputs, 10, 13, 7, 3, 2, 32 ** -0.5)
    assert len(launches) == 1
    assert_matches_reference(out, inputs, torch.float32, height=10, width=13, window_size=7, shift_size=3,
                             num_heads=2, scale=32 ** -0.5)
    monkeypatch.setenv(KERNEL_ENV, "cuda")  # on the CPU: the reference
    torch.ops.swin.window_attention(*inputs, 10, 13, 7, 3, 2, 32 ** -0.5)
    assert len(launches) == 1


def test_triton_op_is_a_valid_custom_op(interpreter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KERNEL_ENV, "triton")
    inputs = random_node(1, 9, 9, 7, 2, 16, torch.float32)
    torch.library.opcheck(torch.ops.swin.window_attention_triton, (*inputs, 9, 9, 7, 3, 2, 0.25))


def test_kernel_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    assert kernel_choice().kernel == load_selection().default_kernel == "cuda"  # until a GPU has timed both
    monkeypatch.setenv(KERNEL_ENV, "Triton")
    assert kernel_choice().kernel == "triton" and kernel_choice().source == KERNEL_ENV
    monkeypatch.setenv(KERNEL_ENV, "cutlass")
    with pytest.raises(ValueError, match="SWIN_ATTN_KERNEL='cutlass': expected one of cuda, triton"):
        pipeline.kernels.ops.triton_selected()


def test_selection_names_a_config_for_every_image() -> None:
    selection = load_selection()
    assert {config.name for config in CONFIGS} == {KernelConfig.parse(config.name).name for config in CONFIGS}
    for spec in aot.image_specs([75, 86, 90, 120], selection):
        assert spec.config == selection.config(spec.arch, spec.dtype, spec.window)
    assert selection.config(75, "float16", 7) == KernelConfig(block_m=16, block_n=32, num_warps=2)
    with pytest.raises(ValueError, match="not of the form m64n64w1h1x4s2"):
        KernelConfig.parse("m64n64")


# ---------------------------------------------------------------------------------------------------------
# Ahead of time: the images in the libraries


def default_architectures() -> list[int]:
    """The plugin's default CUDA architecture list (CMakeLists.txt)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    line = next(line for line in text.splitlines() if "set(SWIN_WANTED_ARCHITECTURES" in line)
    return [int(arch) for arch in line.split("ARCHITECTURES")[1].strip(" )").split()]


def test_triton_compiles_every_default_architecture() -> None:
    """Each architecture of the default list gets a cubin from the pinned triton (one shape each; the build
    compiles the rest the same way), and the PTX goes to the newest architecture-neutral target."""
    archs = default_architectures()
    specs = [spec for spec in aot.image_specs(archs, load_selection()) if spec.dtype == "float16" and spec.window == 7]
    assert [spec.arch for spec in specs if not spec.ptx] == archs
    assert [spec.arch for spec in specs if spec.ptx] == [max(arch for arch in archs if arch < 90)]
    for spec, result in zip(specs, aot.compile_images(specs, jobs=2), strict=True):
        assert not isinstance(result, Exception), f"{spec.file_name}: {result}"
        data, image = result
        assert image.spec == spec and image.kernel_name == "window_attention_kernel"
        assert data.startswith(b"\x7fELF") if not spec.ptx else b".target sm_89" in data
        assert image.shared_bytes <= 48 * 1024  # no opt-in needed for the FP16 images


def test_native_libraries_embed_the_images() -> None:
    """The test build (SM86) holds a cubin per dtype and window, and the PTX, byte for byte in both libraries;
    building again rebuilds nothing."""
    libs = native_libs_for(TEST_CUDA_ARCH)
    images = triton_images_for(TEST_CUDA_ARCH)
    held = sorted((entry["spec"]["arch"], entry["spec"]["ptx"], entry["spec"]["dtype"], entry["spec"]["window"])
                  for entry in images.values())
    assert held == sorted((86, ptx, dtype, window) for ptx in (False, True) for dtype in aot.DTYPES
                          for window in SPECIALIZED_WINDOWS)
    for library in (libs.cuda, libs.plugin):
        content = library.read_bytes()
        for image in images:
            assert Path(image).read_bytes() in content, (library.name, image)
    rebuild = subprocess.run(["cmake", "--build", str(arch_build_dir(TEST_CUDA_ARCH))], capture_output=True,
                             text=True, check=True).stdout
    assert "Triton" not in rebuild and "Building" not in rebuild


def test_generated_table_matches_the_images(tmp_path: Path) -> None:
    """The C++ table lists each image with its launch parameters; no image at all is a valid (empty) table."""
    spec = aot.ImageSpec(86, "float16", 7, 32, KernelConfig(windows=2, heads=3, num_warps=8))
    image = aot.CompiledImage(spec, "window_attention_kernel", 12288, 8)
    source = aot._cpp_source([image], tmp_path, triton_default=False)
    assert f'.incbin \\"{tmp_path / spec.file_name}\\"' in source
    assert '{86, false, 1, 7, 32, 2, 3, 8, 12288, "window_attention_kernel", "m64n64w2h3x8s2"' in source
    assert "kNbTritonImages = 1;" in source and "kTritonIsDefault = false;" in source
    assert "kNbTritonImages = 0;" in aot._cpp_source([], tmp_path, triton_default=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_kernel_on_cuda_matches_reference(case, dtype) -> None:
    """The JIT-compiled kernel, the AOT image through the C ABI, and the triton_op under torch.compile."""
    batch, height, width, window, shift, heads, head_dim = case
    inputs = random_node(batch, height, width, window, heads, head_dim, dtype)
    attributes = dict(height=height, width=width, window_size=window, shift_size=shift, num_heads=heads,
                      scale=head_dim ** -0.5)
    cuda_inputs = [t.cuda() for t in inputs]
    assert_matches_reference(window_attention(*cuda_inputs, **attributes).cpu(), inputs, dtype, **attributes)
    values = list(attributes.values())
    compiled = torch.compile(torch.ops.swin.window_attention_triton, fullgraph=True)(*cuda_inputs, *values)
    assert_matches_reference(compiled.cpu(), inputs, dtype, **attributes)
    if window in SPECIALIZED_WINDOWS and head_dim <= aot.HEAD_DIM:
        major, minor = torch.cuda.get_device_capability()
        library = SwinAttention(native_libs_for(f"{major}{minor}").cuda)
        out = torch.empty(batch, height * width, heads * head_dim, device="cuda", dtype=dtype)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(KERNEL_ENV, "triton")
            library.forward(*cuda_inputs, out, **attributes)
        torch.cuda.synchronize()
        assert_matches_reference(out.cpu(), inputs, dtype, **attributes)
