"""`nbscale sweep`'s record: RUNNING while it goes, then the outcome the driver wrote, or why it stopped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from workflow_compiler.errors import ExecutionError
from workflow_compiler.spec import RunSpec
from workflow_compiler.store import RunRecord, RunStore, process_start
from workflow_compiler.sweep_record import recorded_sweep

SPEC = RunSpec.model_validate({"notebook": "objective.ipynb", "parameters": {"steps": 3},
                               "sweep": {"space": {"x": "grid(1.0, 3.0)"}, "metric": "score", "mode": "max", "search": "grid"}})


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path))
    return tmp_path


def _write(path: Path, data: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_a_sweep_is_running_then_ends_with_the_drivers_result(home: Path) -> None:
    store = RunStore()
    with recorded_sweep(SPEC, run_id="nbs-00000000a1") as record:
        running = store.get(record.id)
        assert (running.kind, running.status, running.pid, running.progress.unit) == ("sweep", "RUNNING", os.getpid(), "trials")
        assert running.pid_start and running.pid_start == process_start(os.getpid())  # `cancel` checks it before signalling
        _write(home / "sweeps" / record.id / "progress.json", {"counts": {"COMPLETED": 1, "RUNNING": 1}, "total": 2})
        _write(home / "sweeps" / record.id / "result.json", {
            "status": "SUCCEEDED", "metric": "score", "best": {"params": {"x": 3.0}, "value": 9.0},
            "parent_run_id": "p" * 32, "experiment_id": "7", "counts": {"COMPLETED": 2, "total": 2}})
    done = store.get("nbs-00000000a1")
    assert (done.status, done.error, done.progress.done, done.progress.total) == ("SUCCEEDED", None, 1, 2)
    assert done.best == {"params": {"x": 3.0}, "metric": "score", "value": 9.0} and done.metrics == {"score": 9.0}
    assert done.mlflow_run_id == "p" * 32 and done.links["mlflow"].endswith(f"/#/experiments/7/runs/{'p' * 32}")


@pytest.mark.parametrize(
    ("raised", "status", "error"),
    [
        (KeyboardInterrupt(), "KILLED", "cancelled"),
        (SystemExit(1), "KILLED", "cancelled"),  # SIGTERM through Ray's own handler
        (ExecutionError("Ray would not start"), "FAILED", "Ray would not start"),
    ],
)
def test_a_sweep_that_stops_early_says_why(home: Path, raised: BaseException, status: str, error: str) -> None:
    with pytest.raises(type(raised)), recorded_sweep(SPEC, run_id="nbs-00000000a2"):
        raise raised
    record = RunStore().get("nbs-00000000a2")
    assert (record.status, record.error) == (status, error) and record.finished


def test_a_failed_sweep_says_why_in_its_record(home: Path) -> None:
    """The panel and `nbscale status` show the record's error alone: it names the first failed trial's reason."""
    trial = {"trial_id": "t_00000", "number": 0, "params": {"x": 1.0}, "status": "FAILED",
             "error": "the notebook never logged the metric 'scor' (mlflow.log_metric)"}
    with recorded_sweep(SPEC, run_id="nbs-00000000a3") as record:
        _write(home / "sweeps" / record.id / "result.json", {
            "status": "FAILED", "metric": "scor", "best": None, "parent_run_id": "p" * 32, "experiment_id": "7",
            "counts": {"FAILED": 1, "total": 1}, "trials": [trial]})
    assert RunStore().get("nbs-00000000a3").error == (
        "no trial completed (1 of 1 failed; trial t_00000: the notebook never logged the metric 'scor' (mlflow.log_metric))")


def test_a_resumed_sweep_keeps_its_first_start(home: Path) -> None:
    """`nbscale runs` shows a resumed sweep's whole time, from its first start, not the last resume's alone."""
    store = RunStore()
    with pytest.raises(KeyboardInterrupt), recorded_sweep(SPEC, run_id="nbs-00000000a4"):
        raise KeyboardInterrupt
    cancelled = store.get("nbs-00000000a4")
    store.update(cancelled.id, started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:01:00+00:00")  # its first start, long ago
    with recorded_sweep(None, run_id=cancelled.id):
        assert store.get(cancelled.id).status == "RUNNING" and store.get(cancelled.id).finished is None
    resumed = store.get(cancelled.id)
    assert resumed.started == "2026-01-01T00:00:00+00:00" and resumed.finished is not None
    assert resumed.duration is not None and resumed.duration > 3600


@pytest.mark.slow
@pytest.mark.parametrize("driver", ["own-process", "warm-driver"])
def test_sigterm_before_ray_connects_ends_the_sweep_killed_at_once(tmp_path: Path, driver: str) -> None:
    """``timeout 10 nbscale sweep`` while it waits for a tracking server that does not answer: KILLED at once (it was FAILED "lost")."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile
    import time
    from datetime import UTC, datetime

    from workflow_compiler.sweep import ray_head, trial_host, warm_driver
    from workflow_compiler.tracking import agent

    home = Path(tempfile.mkdtemp(prefix="nbs-term-"))  # short: the daemons' socket paths have ~100 bytes
    shutil.copy(Path(__file__).parent / "sweep_notebooks" / "objective.ipynb", tmp_path / "objective.ipynb")
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)  # connects (the kernel's backlog) and never answers
    server = f"http://alice:pw@127.0.0.1:{silent.getsockname()[1]}/"
    env = {**os.environ, "NBSCALE_HOME": str(home), "MLFLOW_TRACKING_URI": server, "RAY_AUTH_MODE": "disabled",
           warm_driver.ENV_WARM_DRIVER: "0" if driver == "own-process" else "1", "PYTHONPATH": ":".join(sys.path)}
    for name in ("RAY_ADDRESS", "NBSCALE_WARM_RAY"):
        env.pop(name, None)
    command = [str(Path(sys.executable).parent / "nbscale"), "sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0)",
               "--metric", "score", "--mode", "max", "--no-progress"]
    try:
        with subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
            deadline = time.monotonic() + 120
            while not _runs(home) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert [r.status for r in _runs(home)] == ["RUNNING"], process.stderr.read() if process.poll() is not None else ""
            time.sleep(1.0)  # within the first look at the silent server (5 s), before Ray is reached
            signalled = datetime.now(UTC)
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=120)
        record = RunStore(home / "runs.db").get(_runs(home)[0].id)
        assert (process.returncode, record.status, record.error) == (143, "KILLED", "cancelled"), err[-2000:]
        assert record.finished is not None
        assert (datetime.fromisoformat(record.finished) - signalled).total_seconds() < 30  # its real end, not a later look's
    finally:
        silent.close()
        for stop in (warm_driver.stop, ray_head.stop, trial_host.stop, agent.stop):
            stop(home)
        shutil.rmtree(home, ignore_errors=True)


def _runs(home: Path) -> list[RunRecord]:
    if not (home / "runs.db").exists():
        return []
    return list(RunStore(home / "runs.db").list()[0])
