"""The collector pause of one-shot commands: off inside, as it was after, whatever happens inside."""

from __future__ import annotations

import gc
import shutil
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.cli import main
from workflow_compiler.compiler import output
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


def _compile_command(root: Path) -> None:
    assert main(["compile", "train.ipynb", "--validate", "-o", "wf.yaml"]) == 0
    assert (root / "wf.yaml").read_text(encoding="utf-8").startswith("apiVersion: argoproj.io/v1alpha1")


def _submit_path(root: Path) -> None:
    from workflow_compiler.spec import build_run_spec
    from workflow_compiler.submit import build_manifest

    assert build_manifest(build_run_spec("train.ipynb", root=root), root=root)["kind"] == "Workflow"


@pytest.mark.parametrize("caller", [_compile_command, _submit_path], ids=["nbscale compile", "submit"])
def test_compile_and_validate_run_with_the_collector_off_and_give_it_back(
        caller: Callable[[Path], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collecting: None) -> None:
    """The pause is on the one compile + validate path, so `nbscale compile` and every submit get it."""
    shutil.copy(EXAMPLE, tmp_path / "train.ipynb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    seen: list[tuple[str, bool]] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            seen.append((name, gc.isenabled()))
            return real(*args, **kwargs)
        return call

    for name in ("compile_workflow", "validate_workflow"):
        monkeypatch.setattr(output, name, spy(name, getattr(output, name)))
    gc.enable()
    caller(tmp_path)
    assert seen == [("compile_workflow", False), ("validate_workflow", False)]
    assert gc.isenabled()


def test_the_cli_pauses_over_its_imports_spec_and_submit_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               collecting: None) -> None:
    """Importing the compiler and the models is most of the burst: `compile` and `run` pause from their start
    (83 collections in `compile` of 500 cells with the pause on compile + validate alone, 16 with it here)."""
    from workflow_compiler import cli, submit
    from workflow_compiler.errors import ExecutionError

    shutil.copy(EXAMPLE, tmp_path / "train.ipynb")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    seen: list[tuple[str, bool]] = []
    real_spec = cli.spec_from_args
    monkeypatch.setattr(cli, "spec_from_args", lambda *a, **k: seen.append(("spec", gc.isenabled())) or real_spec(*a, **k))

    def no_submit(*args: Any, **kwargs: Any) -> Any:
        seen.append(("submit", gc.isenabled()))
        raise ExecutionError("not started in this test")

    monkeypatch.setattr(submit, "submit", no_submit)
    gc.enable()
    assert main(["compile", "train.ipynb", "-o", "wf.yaml"]) == 0 and gc.isenabled()
    assert main(["run", "train.ipynb", "--executor", "local"]) == 1 and gc.isenabled()
    assert seen == [("spec", False), ("spec", False), ("submit", False)]
