"""The collector pause of one-shot commands: off inside, as it was after, whatever happens inside."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler import compiler
from workflow_compiler.cli import main
from workflow_compiler.gc_pause import collector_paused

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "train.ipynb"


@pytest.fixture
def collecting() -> Iterator[None]:
    """Whatever a test does to the collector, the session gets it back on."""
    yield
    gc.enable()


@pytest.mark.parametrize("before", [True, False])
@pytest.mark.parametrize("raises", [False, True])
def test_the_collector_is_off_inside_and_as_it_was_after(before: bool, raises: bool, collecting: None) -> None:
    (gc.enable if before else gc.disable)()
    inside = []
    with pytest.raises(RuntimeError) if raises else nullcontext():
        with collector_paused():
            inside.append(gc.isenabled())
            with collector_paused():  # a nested pause keeps it off
                pass
            inside.append(gc.isenabled())
            if raises:
                raise RuntimeError("boom")
    assert inside == [False, False]
    assert gc.isenabled() is before


def test_compile_runs_with_the_collector_off_and_gives_it_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               collecting: None) -> None:
    shutil.copy(EXAMPLE, tmp_path / "train.ipynb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    seen = []
    real = compiler.compile_to_file

    def spy(*args: Any, **kwargs: Any) -> str:
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(compiler, "compile_to_file", spy)
    gc.enable()
    assert main(["compile", "train.ipynb", "--validate", "-o", "wf.yaml"]) == 0
    assert seen == [False] and gc.isenabled()
    assert (tmp_path / "wf.yaml").read_text(encoding="utf-8").startswith("apiVersion: argoproj.io/v1alpha1")

