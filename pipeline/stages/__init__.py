"""The pipeline's stages, one module each with ``run(job) -> <Stage>Report``: export, surgery, check, precision,
int8, build, verify."""
