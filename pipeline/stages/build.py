"""The build stage: the typed ONNX and the plugin library to an engine and its metadata (pipeline/tensorrt/)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.tensorrt.build import build_engine
from pipeline.tensorrt.metadata import EngineMetadata

if TYPE_CHECKING:
    from pipeline.recipe import EngineJob


def run(job: EngineJob) -> EngineMetadata:
    """make_engine's build stage: ``model.swin.<precision>.onnx`` to ``swin_<model>_<precision>.engine`` with the
    recipe's batch profile, backend and target."""
    recipe, files = job.recipe, job.files
    return build_engine(files.typed, files.engine, plugin_library=recipe.plugin, batch=recipe.batch,
                        backend=recipe.backend, sm=recipe.sm, timing_cache=files.timing_cache,
                        opt_level=recipe.opt_level, embed_plugin=recipe.embed_plugin,
                        detailed_profile=recipe.detailed_profile)
