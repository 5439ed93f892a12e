"""The build stage: the typed ONNX and the plugin library to an engine and its metadata (pipeline/tensorrt/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.tensorrt.build import build_checked
from pipeline.tensorrt.metadata import EngineMetadata

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob


def run(job: EngineJob) -> EngineMetadata:
    """make_engine's build stage: ``model.swin.<precision>.onnx`` to ``swin_<model>_<precision>.engine`` with the
    options ``recipe.validate`` checked (batch profile, backend and target, plugin library)."""
    assert job.build_options is not None, "make_engine validates the recipe up to the build before any stage"
    return build_checked(job.files.typed, job.files.engine, job.build_options, timing_cache=job.files.timing_cache)
