"""Benchmarks of nbscale; each module runs with `python -m benchmarks.<name>` and writes benchmarks/results/<name>.json."""

import os

# Benchmarks talk to 127.0.0.1 only. MLflow 3's usage telemetry would reach out to its vendor from
# every process that imports it: ours (nbscale turns it off already) and the baselines' kernels, so
# it is off for both, set before anything imports MLflow.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
