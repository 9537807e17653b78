"""Benchmark: `nbscale run` against the plain `papermill` CLI on the same small notebook.

Both run side by side in one session, alternating, and we report the median of each and their
ratio, on a trivial notebook and on examples/train.ipynb (scikit-learn, metrics logged to MLflow).
`nbscale run` does more (compiles and validates the workflow, logs params, metrics, the output
notebook and its HTML to MLflow); the target is under 1.5x plain papermill.

`nbscale run` is measured as a user meets it: after the first run, the local executor's warm
tracking agent (workflow_compiler/tracking/agent.py) has MLflow imported. "nbscale_cold" runs with
NBSCALE_TRACKING_AGENT=0, as every run would without the agent (and as the first run of a session
does), each step importing MLflow in its own helper.

    python -m benchmarks.run_overhead [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

RESULTS = Path(__file__).parent / "results"
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train.ipynb"
BIN = Path(sys.executable).parent


def small_notebook(path: Path) -> Path:
    """Three cells, one parameter, one metric: the shape of a quick experiment."""
    params = new_code_cell("x = 1  # a number")
    params.metadata["tags"] = ["parameters"]
    cells = [params, new_code_cell("y = x * 2"), new_code_cell("print(y)")]
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def machine() -> str:
    """A label for the figures: cores, memory, Python."""
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem_gb:.0f} GB, Python {platform.python_version()}, {platform.machine()}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small_notebook(work / "small.ipynb")
        env = {**os.environ, "NBSCALE_HOME": str(work / "home")}
        env.pop("MLFLOW_TRACKING_URI", None)
        shutil.copy(EXAMPLE, work / "train.ipynb")
        commands = {
            "papermill": [str(BIN / "papermill"), "small.ipynb", "out.ipynb", "-p", "x", "3"],
            "nbscale": [str(BIN / "nbscale"), "run", "small.ipynb", "-p", "x=3"],
            "nbscale_cold": [str(BIN / "nbscale"), "run", "small.ipynb", "-p", "x=3"],
            # the realistic case: a notebook that imports scikit-learn and logs metrics to MLflow itself
            "papermill_train": [str(BIN / "papermill"), "train.ipynb", "out.ipynb", "-p", "n_estimators", "20"],
            "nbscale_train": [str(BIN / "nbscale"), "run", "train.ipynb", "-p", "n_estimators=20"],
        }
        envs = {name: {**env, "NBSCALE_TRACKING_AGENT": "0"} if name == "nbscale_cold" else env for name in commands}
        try:
            for name, argv_ in commands.items():  # warm the OS caches once, untimed
                timed(argv_, work, envs[name])
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.repeats):
                for name, argv_ in commands.items():
                    times[name].append(timed(argv_, work, envs[name]))
        finally:
            from workflow_compiler.tracking import agent

            agent.stop(work / "home")  # the agent we started, by its pid file
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "benchmark": "run_overhead",
        "machine": machine(),
        "repeats": args.repeats,
        "seconds": times,
        "median_seconds": medians,
        "ratio_nbscale_over_papermill": medians["nbscale"] / medians["papermill"],
        "ratio_nbscale_cold_over_papermill": medians["nbscale_cold"] / medians["papermill"],
        "ratio_train_nbscale_over_papermill": medians["nbscale_train"] / medians["papermill_train"],
        "load_average_1min": os.getloadavg()[0],
        "target_ratio": 1.5,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "run_overhead.json").write_text(json.dumps(result, indent=2))
    print(f"papermill CLI   median {medians['papermill']:.2f}s")
    print(f"nbscale run     median {medians['nbscale']:.2f}s  (MLflow logging and HTML included)")
    print(f"ratio           {result['ratio_nbscale_over_papermill']:.2f}x  (target < 1.5x)   [{result['machine']}]")
    print(f"without the warm tracking agent: {medians['nbscale_cold']:.2f}s, "
          f"{result['ratio_nbscale_cold_over_papermill']:.2f}x (every step imports MLflow itself)")
    print(f"train.ipynb: papermill {medians['papermill_train']:.2f}s, nbscale run {medians['nbscale_train']:.2f}s, "
          f"ratio {result['ratio_train_nbscale_over_papermill']:.2f}x  (load average {result['load_average_1min']:.1f})")
    return result


if __name__ == "__main__":
    main()
