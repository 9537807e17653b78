"""`nbscale sweep` through the real command: the embedded default starts its own local Ray."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).parent / "sweep_notebooks"
NBSCALE = str(Path(sys.executable).parent / "nbscale")


def nbscale(*args: str, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)  # the embedded default: a Ray of its own, not a test session's
    return subprocess.run([NBSCALE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("sweep-cli")
    shutil.copy(NOTEBOOKS / "objective.ipynb", work / "objective.ipynb")
    return work


@pytest.mark.slow
def test_grid_sweep_on_the_embedded_default_prints_the_best_trial(work):
    result = nbscale("sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0, 2.0)", "--search", "grid",
                     "--metric", "score", "--mode", "max", "--concurrency", "2", "--json", cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert summary["status"] == "SUCCEEDED"
    assert summary["best"]["params"] == {"x": 3.0}
    assert summary["best"]["value"] == pytest.approx(12.0)  # x * steps, the metric's last value
    assert summary["counts"]["COMPLETED"] == 3
    # the one run list: the sweep is a run of kind sweep for `nbscale status`, `nbscale runs` and the REST API
    status = nbscale("status", summary["sweep_id"], "--json", cwd=work, timeout=60)
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert (record["kind"], record["status"], record["notebook"]) == ("sweep", "SUCCEEDED", "objective.ipynb")
    assert record["progress"] == {**record["progress"], "done": 3, "total": 3, "unit": "trials"}
    assert record["best"]["params"] == {"x": 3.0} and record["mlflow_run_id"] == summary["parent_run_id"]
    listed = json.loads(nbscale("runs", "--json", cwd=work, timeout=60).stdout)
    assert summary["sweep_id"] in [r["id"] for r in listed["runs"] if r["kind"] == "sweep"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--param", "x=uniform(5, 1)", "--metric", "score"], "swap them"),
        (["--param", "nope=choice(1, 2)", "--metric", "score"], "sweep parameter 'nope' is not a parameter"),
        (["--param", "x=__import__('os').system('id')", "--metric", "score"], "x"),
    ],
)
def test_bad_search_spaces_exit_2_before_ray_starts(work, args, message):
    result = nbscale("sweep", "objective.ipynb", *args, cwd=work, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
