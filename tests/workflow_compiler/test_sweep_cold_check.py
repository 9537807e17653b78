"""``sweep/cold_check.py``: what an early check shows, and when it leaves the command to the driver's child."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import pytest

from workflow_compiler.sweep.cold_check import Refusal, refused_while_starting


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
