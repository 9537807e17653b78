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
        (["--param", "x=uniform(5, 1)", "--metric", "score", "--mode", "max"], "swap them"),
        (["--param", "nope=choice(1, 2)", "--metric", "score", "--mode", "max"], "sweep parameter 'nope' is not a parameter"),
        (["--param", "x=choice(1.0, 2.0)", "--param", "steps=choice(1, 2)", "--samples", "5", "--metric", "score", "--mode", "max"],
         "samples 5 would repeat trials: the values listed for x, steps make only 4 different combinations. Use samples 4 or fewer"),
        (["--param", "x=__import__('os').system('id')", "--metric", "score", "--mode", "max"],
         "--param x: \"__import__('os').system('id')\" is not a search space: write it as a call"),
        (["--param", "x=uniform(0, 1)", "--metric", "loss"],  # never guessed: max would pick the worst loss
         "error: --metric loss: is a higher or a lower metric better? Choose max (accuracy) or min (loss): --mode max or --mode min"),
    ],
)
def test_bad_search_spaces_exit_2_before_ray_starts(work, args, message):
    result = nbscale("sweep", "objective.ipynb", *args, cwd=work, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in " ".join(result.stderr.split())
    assert "uid=" not in result.stdout + result.stderr  # the space was read, never evaluated


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("examples")
    for name in ("train.ipynb", "sweep.yaml"):
        shutil.copy(EXAMPLES / name, folder / name)
    return folder


def test_the_example_sweep_file_compiles_to_a_valid_rayjob(examples: Path) -> None:
    (examples / "tracked.yaml").write_text((examples / "sweep.yaml").read_text() + "tracking: {experiment: wine-sweeps}\n")
    result = nbscale("compile", "train.ipynb", "--sweep", "tracked.yaml", "-o", "wf.yaml", "--validate", cwd=examples, timeout=120)
    assert result.returncode == 0, result.stderr
    text = (examples / "wf.yaml").read_text()
    assert "RayJob" in text and "wine-sweeps" in text  # the file's tracking reaches the driver's spec


@pytest.mark.parametrize(("line", "message"), [
    ("earlystop: asha", "sweep.earlystop: unknown key; valid keys: concurrency, cpus_per_trial, early_stop,"),
    ("scheduler: fifo", "sweep keys 'early_stop' and 'scheduler' both set 'scheduler'; keep one of them."),
    ("\nparamters: {seed: 1}", "unknown key(s) 'paramters' beside 'sweep'; valid there: parameters, tracking, sweep."),
])
def test_a_wrong_sweep_key_lists_the_valid_ones(examples: Path, line: str, message: str) -> None:
    indent = "" if line.startswith("\n") else "  "  # a sweep field, or a key beside `sweep:`
    (examples / "bad.yaml").write_text((examples / "sweep.yaml").read_text() + f"{indent}{line}\n")
    result = nbscale("compile", "train.ipynb", "--sweep", "bad.yaml", cwd=examples, timeout=120)
    assert result.returncode != 0 and message in " ".join(result.stderr.split()), result.stderr


@pytest.mark.slow
def test_the_example_sweep_runs_and_a_failed_trial_is_a_short_line_not_tracebacks(examples: Path) -> None:
    # the example's grid, plus one point the notebook refuses: that trial fails, the others run
    result = nbscale("sweep", "train.ipynb", "--sweep", "sweep.yaml", "--param", "model=grid('forest', 'no-such-model')",
                     "--json", "--no-progress", cwd=examples)
    summary = json.loads(result.stdout)
    by_model: dict[str, list[dict]] = {}
    for trial in summary["trials"]:
        by_model.setdefault(trial["params"]["model"], []).append(trial)
    assert len(summary["trials"]) == 8 and summary["status"] == "SUCCEEDED", result.stderr[-3000:]
    assert all(t["run_id"] for t in summary["trials"])  # early-stopped ones too
    assert {t["status"] for t in by_model["forest"]} <= {"COMPLETED", "EARLY_STOPPED"}
    assert all(t["status"] == "FAILED" and "no-such-model" in t["error"] for t in by_model["no-such-model"])
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 15, result.stderr


def test_the_readme_documents_every_sweep_file_key() -> None:
    from workflow_compiler.sweep.spec import CLI_KEYS, SweepSpec

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Sweep files", 1)[1]
    table = "\n".join(line for line in section.split("\n\n")[2].splitlines() if line.startswith("| `"))
    documented = {row.split("`")[1] for row in table.splitlines() if row.startswith("| `")}
    assert documented == set(SweepSpec.model_fields)
    flags = {f"--{dest.replace('_', '-')}" for dest in CLI_KEYS}
    assert all(flag in table for flag in flags), sorted(f for f in flags if f not in table)
