"""Bad input through the real `nbscale` command: a specific one-line message and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NBSCALE = str(Path(sys.executable).parent / "nbscale")


def nbscale(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([NBSCALE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    (work / "train.ipynb").write_text((ROOT / "examples" / "train.ipynb").read_text())
    (work / "broken.ipynb").write_text('{"cells": [')
    (work / "notes.txt").write_text("not a notebook")
    (work / "cycle.yaml").write_text("steps:\n- {name: a, notebook: train.ipynb, after: [b]}\n- {name: b, notebook: train.ipynb, after: [a]}\n")
    (work / "ghost.yaml").write_text("steps:\n- {name: a, notebook: train.ipynb, after: [ghost]}\n")
    return work


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "broken.ipynb"], "broken.ipynb is not valid JSON (line 1"),
        (["run", "notes.txt"], "is neither a notebook (.ipynb) nor a pipeline"),
        (["inspect", "notes.txt"], "notes.txt is not a notebook"),
        (["run", "missing.ipynb"], "missing.ipynb: no such file"),
        (["run", "train.ipynb", "-p", "n_trees=5"], "unknown parameter 'n_trees'"),
        (["run", "train.ipynb", "-p", "n_estimators=many"], "parameter 'n_estimators' expects int, got 'many'"),
        (["run", "train.ipynb", "-p", "seed"], "is not NAME=VALUE"),
        (["run", "cycle.yaml"], "form a cycle"),
        (["run", "ghost.yaml"], "unknown step(s) 'ghost'"),
        (["run", "../outside.ipynb"], "is outside the working directory"),
        (["compile", "train.ipynb", "--gpus", "-1"], "resources.gpus"),
        (["compile", "train.ipynb", "--pool", "nonexistent"], "nonexistent"),
        (["run", "train.ipynb", "--gpus", "many"], "invalid int value: 'many'"),
        (["status", "nbs-0000000000"], "no run 'nbs-0000000000'"),
        (["run"], "the following arguments are required: NOTEBOOK_OR_PIPELINE"),
        (["cluster"], "the following arguments are required: {kueue}"),
    ],
)
def test_bad_input_exits_non_zero_with_a_specific_message(workdir, args, message):
    result = nbscale(*args, cwd=workdir)
    assert result.returncode != 0
    assert message in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.stderr
