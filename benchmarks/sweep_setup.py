"""What the sweep benchmarks run: their notebooks, the calibrated workload, and the baselines.

Every notebook times its own useful compute and appends it as one JSON line to the file named by
its ``record`` parameter, so each contender is scored from the same numbers whatever it does
with MLflow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

#: Cores of this machine: B2's overhead counts every core's time over the wall.
CORES = os.cpu_count() or 1

#: One unit of the B1 workload: a decision tree fitted on a pandas frame (single-threaded).
WORK_SOURCE = """\
import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeClassifier

def work(reps, seed):
    rng = np.random.RandomState(seed)
    frame = pd.DataFrame(rng.rand(1500, 12), columns=[f"f{i}" for i in range(12)])
    target = (frame["f0"] + frame["f1"] * frame["f2"] > 0.8).astype(int)
    score = 0.0
    for _ in range(reps):
        score += DecisionTreeClassifier(max_depth=8).fit(frame, target).score(frame, target)
    return score
"""

_RECORD = """\
useful_wall, useful_cpu = time.perf_counter() - t0, time.process_time() - c0
mlflow.log_metric("useful", useful_wall)
if record:
    with open(record, "a") as out:
        out.write(json.dumps({"useful": useful_wall, "cpu": useful_cpu, "pid": os.getpid(), "t": time.time()}) + "\\n")
"""


def _write(path: Path, params: str, cells: list[str]) -> Path:
    first = new_code_cell(params)
    first.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[first, *map(new_code_cell, cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def compute_notebook(path: Path) -> Path:
    """B1: import pandas and scikit-learn, fit ``reps`` trees (~2 s when calibrated), time and log it."""
    return _write(path, 'seed = 0  # data seed\nreps = 1  # trees to fit\nrecord = ""  # JSON-lines file for the benchmark', [
        "import json, os, time\nimport mlflow\n" + WORK_SOURCE,
        "t0, c0 = time.perf_counter(), time.process_time()\nscore = work(reps, seed)\n" + _RECORD,
    ])


def trivial_notebook(path: Path) -> Path:
    """B2: almost no compute (a sum), no heavy imports beyond mlflow to log it."""
    return _write(path, 'seed = 0  # trial number\nrecord = ""  # JSON-lines file for the benchmark', [
        "import json, os, time\nimport mlflow",
        "t0, c0 = time.perf_counter(), time.process_time()\ntotal = sum(range(1000))\n" + _RECORD,
    ])


def steps_notebook(path: Path) -> Path:
    """B3: a training loop of ``steps`` steps that logs the objective at every step when ``log``."""
    return _write(path, 'seed = 0  # unused\nsteps = 1000  # steps of the loop\nlog = True  # log a metric per step', [
        "import mlflow",
        "value = 0.0\nfor step in range(steps):\n    value = 1.0 - 1.0 / (step + 2)\n"
        "    if log:\n        mlflow.log_metric(\"score\", value, step=step)\nmlflow.log_metric(\"score\", value)",
    ])


def calibrate_reps(seconds: float) -> tuple[int, float]:
    """How many tree fits take ``seconds`` here (measured in this process, best of 3)."""
    namespace: dict[str, Any] = {}
    exec(WORK_SOURCE, namespace)  # noqa: S102 - our own constant source, shared with the notebook
    namespace["work"](1, 0)  # warm the imports
    best = min(_timed(namespace["work"], 5) for _ in range(3)) / 5
    return max(1, round(seconds / best)), best


def _timed(fn: Any, reps: int) -> float:
    started = time.perf_counter()
    fn(reps, 0)
    return time.perf_counter() - started


def read_records(path: Path) -> list[dict[str, float]]:
    """The JSON lines the notebooks appended."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def papermill_loop(notebook: Path, out_dir: Path, params: list[dict[str, Any]]) -> None:
    """Baseline (a): one ``papermill.execute_notebook`` after another, a new kernel each."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    for number, values in enumerate(params):
        papermill.execute_notebook(str(notebook), str(out_dir / f"{number}.ipynb"), parameters=values,
                                   progress_bar=False, kernel_name="python3", cwd=str(notebook.parent))


def tune_papermill(notebook: Path, out_dir: Path, params: list[dict[str, Any]], *, name: str) -> None:
    """Baseline (b): Ray Tune with its defaults, a function trainable calling papermill, concurrency 2."""
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        import papermill

        trial = config["trial"]
        papermill.execute_notebook(str(notebook), str(out_dir / f"{trial['number']}.ipynb"), parameters=trial["values"],
                                   progress_bar=False, kernel_name="python3", cwd=str(notebook.parent))

    out_dir.mkdir(parents=True, exist_ok=True)
    space = {"trial": tune.grid_search([{"number": n, "values": values} for n, values in enumerate(params)])}
    # One retry: once so far, one baseline trial's papermill kernel did not answer its first request
    # within 60 s, and that aborted a 40-minute benchmark run. A retried trial's time still counts.
    tuner = tune.Tuner(trainable, param_space=space, tune_config=tune.TuneConfig(max_concurrent_trials=2),
                       run_config=tune.RunConfig(name=name, storage_path=str(out_dir / "tune"), verbose=0,
                                                 failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    if grid.num_errors:
        raise RuntimeError(f"{grid.num_errors} Tune baseline trials failed: {grid.errors[0]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def mlflow_server(folder: Path) -> Iterator[str]:
    """A local ``mlflow server --workers 1`` on 127.0.0.1 (its own process group, stopped at exit)."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts")],
                            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def cli_sweep(root: Path, notebook: str, n: int, record: Path, env: dict[str, str]) -> dict[str, float]:
    """One ``nbscale sweep`` of ``n`` grid trials as a whole process, as a user runs it: its wall,
    its own CPU time (user + system), and when its first trial finished, from the command's start."""
    import resource
    import subprocess
    import sys
    import time

    command = [str(Path(sys.executable).with_name("nbscale")), "sweep", notebook, "--param",
               f"seed=grid({', '.join(map(str, range(n)))})", "--search", "grid", "--metric", "useful", "--mode", "max", "--concurrency", "2",
               "-p", f"record={record}", "--json"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_epoch, started = time.time(), time.perf_counter()
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0 or json.loads(done.stdout)["counts"].get("COMPLETED") != n:
        raise RuntimeError(f"nbscale sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    stamps = sorted(r["t"] for r in read_records(record))
    return {"wall_s": round(wall, 3), "cli_cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3),
            "first_trial_done_s": round(stamps[0] - started_epoch, 3), "useful_s": round(sum(r["useful"] for r in read_records(record)), 3)}


def overhead_per_trial(run: dict[str, Any], n: int) -> float:
    """B2's figure: what ``n`` trials cost beyond their own work, a trial: (cores x wall - sum(useful)) / n."""
    return round((CORES * run["wall_s"] - run["useful_s"]) / n, 4)


def median(runs: list[dict[str, Any]], key: str) -> float:
    """The median of ``key`` over ``runs``."""
    return float(statistics.median(r[key] for r in runs))
