"""The driver's live state of a sweep: how often it redraws and rewrites ``progress.json``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from workflow_compiler.sweep.progress import SweepProgress
from workflow_compiler.sweep.results import TrialRow
from workflow_compiler.sweep.session import SweepSession as _Session
from workflow_compiler.sweep.session import sweeps_dir


def _row(number: int, status: str) -> TrialRow:
    return TrialRow(trial_id=f"t{number}", number=number, params={"x": number}, status=status, value=float(number))


def test_refresh_is_throttled_but_a_forced_one_always_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path))
    monkeypatch.setattr("workflow_compiler.sweep.session.REFRESH_S", 3600.0)
    session = _Session("s1", spec=None, client=None, experiment_id="1", parent_run_id="p",  # type: ignore[arg-type]
                       progress=SweepProgress(sweep_id="s1", metric="score", mode="max", total=3, enabled=False))
    progress = sweeps_dir() / "s1" / "progress.json"

    def counts() -> dict[str, int]:
        return dict(json.loads(progress.read_text())["counts"])

    session.rows["t1"] = _row(1, "RUNNING")
    session.refresh()
    assert counts().get("RUNNING") == 1
    session.rows["t1"] = _row(1, "COMPLETED")
    session.refresh()  # too soon after the last one: nothing is redrawn or written
    assert counts()["COMPLETED"] == 0
    session.refresh(force=True)
    assert counts().get("COMPLETED") == 1
    session.rows["t2"] = _row(2, "COMPLETED")
    monkeypatch.setattr("workflow_compiler.sweep.session.REFRESH_S", 0.0)
    session.refresh()
    assert counts().get("COMPLETED") == 2


def test_the_last_frame_ends_its_line_when_the_output_is_a_file() -> None:
    """`nbscale sweep ... 2>&1 | tee log`: the results table must not start on the panel's last line."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=80)
    with SweepProgress(sweep_id="s1", metric="score", mode="max", total=1, console=console) as progress:
        progress.update([_row(1, "COMPLETED")])
    assert out.getvalue().endswith("(x=1)\n")
