"""Benchmarks: the end-to-end deployment-path comparison (``python -m benchmarks.bench``), its report and
profile commands, and the SwinWindowAttention kernel benchmark (``kernel_bench.py``)."""
