"""What `nbscale` tells a user about a sweep beside its results: how to resume it, where its log is, how far it is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workflow_compiler import cli
from workflow_compiler.spec import RunSpec
from workflow_compiler.store import Progress, RunRecord, RunStore
from workflow_compiler.sweep_record import recorded_sweep

SPEC = RunSpec.model_validate({"notebook": "objective.ipynb",
                               "sweep": {"space": {"x": "grid(1.0, 3.0)"}, "metric": "score", "mode": "max", "search": "grid"}})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NBSCALE_WARM_DRIVER", "0")  # the command runs here, not in the warm driver
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.mark.parametrize(("kind", "said"), [("run", "nbs-00000000c1 is a run, not a sweep"),
                                            ("pipeline", "nbs-00000000c1 is a pipeline, not a sweep")])
def test_resume_of_a_run_says_it_is_not_a_sweep(home: Path, capsys: pytest.CaptureFixture[str], kind: str, said: str) -> None:
    RunStore().create(RunRecord(id="nbs-00000000c1", notebook="train.ipynb", kind=kind, status="SUCCEEDED"))
    assert cli.main(["sweep", "--resume", "nbs-00000000c1"]) == cli.EXIT_USAGE
    err = " ".join(capsys.readouterr().err.split())
    assert said in err and "--resume takes a sweep's id" in err and "no sweep" not in err


def test_logs_of_a_sweep_name_its_driver_log(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with recorded_sweep(SPEC, run_id="nbs-00000000c2"):
        assert cli.main(["logs", "nbs-00000000c2"]) == 0
    out = capsys.readouterr().out
    assert str(home / "sweeps" / "nbs-00000000c2" / "driver.log") in out and "runs in the terminal" not in out


def test_status_of_a_running_sweep_shows_its_trials_and_log(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = home / "sweeps" / "nbs-00000000c3" / "driver.log"
    RunStore().create(RunRecord(id="nbs-00000000c3", notebook="objective.ipynb", kind="sweep", status="RUNNING", pid=os.getpid(),
                                progress=Progress(done=3, total=20, running=2, failed=1, unit="trials")))
    log.parent.mkdir(parents=True)
    log.write_text("")
    assert cli.main(["status", "nbs-00000000c3"]) == 0
    out = capsys.readouterr().out
    assert "trials" in out and "3 done, 2 running, 20 in all (1 failed)" in " ".join(out.split())
    assert str(log) in out
