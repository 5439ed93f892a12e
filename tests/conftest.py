"""Shared fixtures: one perturbed random-weight Swin-T, exported and surgered once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models import build_swin, perturb_weights_

# The native build fixtures (native_libs, plugin_library) live with the ctypes binding they serve.
pytest_plugins = ("plugin_build",)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@pytest.fixture(scope="session")
def swin_t() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb_weights_(build_swin("T"))


@pytest.fixture(scope="session")
def swin_t_onnx(swin_t: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(model.onnx, model.swin.onnx, surgery report) of Swin-T with a dynamic batch up to 4."""
    # Imported here so that the GPU kernel tests also run where onnx-graphsurgeon is not installed.
    from pipeline.export import export_onnx
    from pipeline.surgery import replace_window_attention

    folder = tmp_path_factory.mktemp("swin_t")
    onnx_path = export_onnx(swin_t, folder / "model.onnx", max_batch=4)
    report = replace_window_attention(onnx_path, folder / "model.swin.onnx")
    return onnx_path, folder / "model.swin.onnx", report
