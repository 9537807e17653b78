"""``sweep/cold_check.py``: what an early check shows, and when it leaves the command to the driver's child."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

import pytest

from workflow_compiler.errors import ExecutionError, NbscaleError, NotebookError, SpecError
from workflow_compiler.sweep.cold_check import Refusal, refusal, refused_while_starting


def _refuse() -> int:
    print("error: refused", file=sys.stderr)
    return 2


def _warn_then(outcome: Refusal | None) -> Callable[[], Refusal | None]:
    def precheck() -> Refusal | None:
        warnings.warn("the notebook's cells have no ids", UserWarning, stacklevel=1)
        return outcome
    return precheck


def _fails() -> Refusal | None:
    raise RuntimeError("a bug in the check")


@pytest.mark.parametrize(("precheck", "code", "shown"), [
    (_warn_then(_refuse), 2, ["the notebook's cells have no ids", "error: refused"]),  # the warning first, as the command shows it
    (_warn_then(None), None, []),  # goes on: the driver's child shows the warning itself, once
    (_fails, None, []),  # not a usage error: the child meets it again and reports it
])
def test_a_refusal_shows_what_the_command_shows_and_anything_else_shows_nothing(
        capsys: pytest.CaptureFixture[str], precheck: Callable[[], Refusal | None], code: int | None, shown: list[str]) -> None:
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, file: object = None, line: str | None = None) -> None:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")

    with warnings.catch_warnings():  # shown on stderr, as by Python's own showwarning (pytest's records them)
        warnings.simplefilter("always")
        warnings.showwarning = show
        assert refused_while_starting(precheck) == code
    err = capsys.readouterr().err
    assert [text for text in shown if text in err] == shown
    assert [err.index(text) for text in shown] == sorted(err.index(text) for text in shown)
    if not shown:
        assert err == ""


def test_usage_errors_end_the_command_as_they_do_in_the_child() -> None:
    def exits() -> Refusal | None:
        raise SystemExit(2)  # argparse's error or --help: printed, and the command ends with its code

    with pytest.raises(SystemExit):
        refused_while_starting(exits)


def _cli_refuse(exc: NbscaleError) -> int:
    from workflow_compiler import cli_render

    return cli_render.error_exit(exc)


def _module_refuse(exc: NbscaleError) -> int:
    from workflow_compiler.sweep import __main__ as sweep_main

    return sweep_main._refuse(exc)


@pytest.mark.parametrize(("refuse", "error", "code"), [
    (_cli_refuse, SpecError("no --mode"), 2),  # a usage error, as `nbscale sweep`'s child ends it
    (_cli_refuse, NotebookError("missing.ipynb: no such notebook"), 2),
    (_cli_refuse, ExecutionError("the run failed"), 1),  # not a usage error: the CLI's child ends it with 1
    (_module_refuse, SpecError("no --mode"), 2),
    (_module_refuse, ExecutionError("the run failed"), 2),  # python -m workflow_compiler.sweep ends every one with 2
], ids=["cli-spec", "cli-notebook", "cli-other", "module-spec", "module-other"])
def test_both_sweep_commands_refuse_every_nbscale_error_with_their_childs_code(
        capsys: pytest.CaptureFixture[str], refuse: Callable[[NbscaleError], int], error: NbscaleError, code: int) -> None:
    def check() -> None:
        raise error

    found = refusal(check, refuse)
    assert found is not None
    assert found() == code
    assert f"error: {error.message}" in capsys.readouterr().err


def test_the_cli_refuses_what_its_child_would_end_with_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    """`nbscale sweep`'s early check once let any error but a spec's or notebook's through to wait for the driver."""
    from workflow_compiler import cli_sweep

    class Parser(argparse.ArgumentParser):
        def parse_args(self, *args: object, **kwargs: object) -> argparse.Namespace:  # type: ignore[override]
            raise ExecutionError("the store is unreadable")

    found = cli_sweep._sweep_refusal(["objective.ipynb"], Parser)
    assert found is not None and found() == 1
    assert "error: the store is unreadable" in capsys.readouterr().err


def test_a_passing_check_and_a_bug_are_no_refusal() -> None:
    assert refusal(lambda: None, _cli_refuse) is None
    with pytest.raises(RuntimeError):  # refused_while_starting leaves it to the driver's child
        refusal(lambda: (_ for _ in ()).throw(RuntimeError("bug")), _cli_refuse)
