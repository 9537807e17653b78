"""Benchmarks of nbscale; each module runs with `python -m benchmarks.<name>` and writes benchmarks/results/<name>.json."""
