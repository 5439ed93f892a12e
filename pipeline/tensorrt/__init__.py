"""TensorRT and TensorRT-RTX: backends, engine building, engine metadata and loading."""
