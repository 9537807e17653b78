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
        (["run", "missing.ipynb"], "error: missing.ipynb: no such file"),
        (["inspect", "sub/missing.ipynb"], "error: sub/missing.ipynb: no such file"),  # as typed, like the other messages
        (["sweep", "missing.ipynb", "--param", "x=grid(1)", "--metric", "m", "--mode", "max"], "error: missing.ipynb: no such file"),
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


@pytest.mark.parametrize("command", [[], ["run"], ["sweep"], ["inspect"], ["compile"], ["status"], ["logs"], ["daemons"]])
def test_help_is_plain_text(workdir: Path, command: list[str]) -> None:
    """--help shows no reStructuredText markup (``nbscale``) copied from a docstring."""
    result = nbscale(*command, "--help", cwd=workdir)
    assert result.returncode == 0 and "usage: nbscale" in result.stdout, result.stderr
    assert "``" not in result.stdout and ":class:" not in result.stdout, result.stdout


@pytest.mark.parametrize(("tagged", "hint"), [(True, False), (False, True)])
def test_inspect_says_how_to_tag_a_parameters_cell_when_none_is(workdir: Path, tagged: bool, hint: bool) -> None:
    import nbformat

    cell = nbformat.v4.new_code_cell("lr = 0.1", metadata={"tags": ["parameters"]} if tagged else {})
    name = f"tagged-{tagged}.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell, nbformat.v4.new_code_cell("print(lr)")]), workdir / name)
    result = nbscale("inspect", name, cwd=workdir)
    said = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stderr
    assert ("No cell is tagged 'parameters'" in said) is hint
    assert ("Property Inspector" in said and "Notebook 7: View > Right Sidebar > Show Notebook Tools" in said) is hint
