"""A notebook is read and parsed once per command, and never remembered past a change of its file."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from file_times import restore_old_times
from test_inspection import write_notebook

from workflow_compiler import home_cache, inspection
from workflow_compiler.inspection import inspect_notebook, notebook_sha256
from workflow_compiler.submit import build_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train.ipynb"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often notebook files were read and parsed; files count as settled at once (no racy window)."""
    counts = {"read": 0, "parse": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            counts[name] += 1
            return real(*args)
        return call

    monkeypatch.setattr(inspection, "_read_bytes", counting("read", inspection._read_bytes))
    monkeypatch.setattr(inspection, "_parse_notebook", counting("parse", inspection._parse_notebook))
    monkeypatch.setattr(home_cache, "RACY_SECONDS", 0.0)
    inspection._READS.clear()
    yield counts
    inspection._READS.clear()


def _compile_command(root: Path) -> str:
    from workflow_compiler.cli import main

    assert main(["compile", "train.ipynb", "-p", "n_estimators=5", "--validate", "-o", "wf.yaml"]) == 0
    return (root / "wf.yaml").read_text(encoding="utf-8")


def _run_submit_path(root: Path) -> str:
    from workflow_compiler.cli import build_parser
    from workflow_compiler.cli_args import spec_from_args

    args = build_parser().parse_args(["run", "train.ipynb", "-p", "n_estimators=5"])
    return str(build_manifest(spec_from_args(args, root=str(root)), root=root))  # what `nbscale run` submits


@pytest.mark.parametrize("command", [_compile_command, _run_submit_path], ids=["compile", "run"])
def test_run_and_compile_read_and_parse_the_notebook_once(command: Callable[[Path], str], reads: dict[str, int],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(EXAMPLE, tmp_path / "train.ipynb")
    monkeypatch.chdir(tmp_path)
    text = command(tmp_path)
    assert reads == {"read": 1, "parse": 1}
    assert hashlib.sha256(EXAMPLE.read_bytes()).hexdigest() in text  # the step config's digest, from that one read


def test_a_changed_notebook_is_read_again_even_at_its_old_size_and_mtime(reads: dict[str, int], tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", "alpha = 1")
    assert [p.name for p in inspect_notebook(path).parameters] == ["alpha"]
    before, times = notebook_sha256(path), os.stat(path)
    write_notebook(path, "gamma = 1")
    restore_old_times(path, times)
    assert os.stat(path).st_size == times.st_size
    assert [p.name for p in inspect_notebook(path).parameters] == ["gamma"]
    assert notebook_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() != before
    assert reads == {"read": 2, "parse": 2}


def test_a_notebook_changed_a_moment_ago_is_not_remembered(reads: dict[str, int], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(home_cache, "RACY_SECONDS", 3600.0)
    path = write_notebook(tmp_path / "nb.ipynb", "alpha = 1")
    inspect_notebook(path)
    inspect_notebook(path)
    assert reads == {"read": 2, "parse": 2}


def test_each_caller_gets_its_own_signature(reads: dict[str, int], tmp_path: Path) -> None:
    path = write_notebook(tmp_path / "nb.ipynb", "sizes = [1, 2]")
    first = inspect_notebook(path)
    first.parameters[0].default.append(3)
    first.parameters.clear()
    again = inspect_notebook(tmp_path / "." / "nb.ipynb")
    assert [(p.name, p.default) for p in again.parameters] == [("sizes", [1, 2])]
    assert again.path == str(tmp_path / "." / "nb.ipynb") and reads["read"] == 1
