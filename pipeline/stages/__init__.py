"""The pipeline's stages, one module each: export, surgery, check, precision, int8, verify."""
