"""GPU kernels of the pipeline's custom node, written in Triton (docs/design.md §8c)."""
