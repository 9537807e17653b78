"""`nbscale run` end to end: CLI -> compiler -> local executor -> nbscale-step -> MLflow (SQLite)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workflow_compiler.store import RunStore, process_start

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = Path(__file__).parent / "notebooks"
NBSCALE = str(Path(sys.executable).parent / "nbscale")
# Every way a value could reach a shell, a YAML reader, Argo or SQL, each told to create CANARY (a path
# filled in per test): the file appearing would prove the value was run, not passed.
HOSTILE = ("\"; touch CANARY; \" $(touch CANARY) `touch CANARY` '; touch CANARY; ' {{workflow.name}} {{inputs.parameters.text}}\n"
           "key: [yaml, !!python/object/apply:os.system ['touch CANARY']]\n'; DROP TABLE runs; --")


def nbscale(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBSCALE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runs")
    for name in ("train.ipynb", "prepare.ipynb", "pipeline.yaml"):
        shutil.copy(ROOT / "examples" / name, work / name)
    for name in ("echo.ipynb", "behave.ipynb"):
        shutil.copy(NOTEBOOKS / name, work / name)
    return work


@pytest.fixture(scope="module")
def mlflow_client(nbscale_home: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{nbscale_home / 'mlflow.db'}")


def test_run_logs_params_metrics_and_both_artifacts(work, mlflow_client):
    result = nbscale("run", "train.ipynb", "-p", "n_estimators=20", "-p", "model=forest", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "SUCCEEDED" and summary["kind"] == "run"
    assert 0.5 < summary["metrics"]["val_accuracy"] <= 1.0
    assert Path(summary["links"]["output_notebook"]).is_file() and Path(summary["links"]["html"]).is_file()
    run = mlflow_client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["n_estimators"] == "20" and run.data.params["model"] == "forest"
    assert len(mlflow_client.get_metric_history(run.info.run_id, "val_accuracy")) == 5  # one per report step
    assert run.data.tags["nbscale.notebook"] == "train.ipynb"
    assert len(run.data.tags["nbscale.notebook_sha256"]) == 64
    artifacts = {a.path for a in mlflow_client.list_artifacts(run.info.run_id)}
    assert {"output.ipynb", "output.html"} <= artifacts, artifacts


def test_pipeline_nests_step_runs_under_one_parent(work, mlflow_client):
    result = nbscale("run", "pipeline.yaml", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kind"] == "pipeline" and summary["status"] == "SUCCEEDED"
    assert [s["status"] for s in summary["steps"]] == ["SUCCEEDED", "SUCCEEDED"]
    parent = mlflow_client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = mlflow_client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags.get("nbscale.step") for c in children) == ["prepare", "train"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert (work / "data" / "wine" / "train.csv").is_file(), "steps share the workspace: prepare's output feeds train"


def test_hostile_value_reaches_the_notebook_byte_for_byte(work, tmp_path):
    canary = tmp_path / "pwned"
    hostile = HOSTILE.replace("CANARY", str(canary))
    result = nbscale("run", "echo.ipynb", "-p", f"text={hostile}", "--no-html", "--json", cwd=work)
    assert result.returncode == 0, result.stderr
    assert (work / "received-text.bin").read_bytes() == hostile.encode()
    assert not canary.exists(), "a part of the value was run as a command"


def test_cell_error_fails_with_the_cell_named_and_keeps_partial_output(work, mlflow_client):
    result = nbscale("run", "behave.ipynb", "-p", "mode=raise", "--json", cwd=work)
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["status"] == "FAILED"
    assert "ValueError" in summary["error"] and "boom 42" in summary["error"]
    assert "ValueError" in result.stderr.replace("\n", " ")
    partial = json.loads(Path(summary["links"]["output_notebook"]).read_text())
    assert any("started" in "".join(o.get("text", "")) for c in partial["cells"] for o in c.get("outputs", []))
    run = mlflow_client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["nbscale.error.ename"] == "ValueError"


def test_detached_run_can_be_followed_listed_and_cancelled(work, mlflow_client, nbscale_home):
    started = nbscale("run", "behave.ipynb", "-p", "mode=sleep", "--detach", "--json", cwd=work)
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["id"]
    deadline = time.monotonic() + 120
    while "sleeping" not in nbscale("logs", run_id, cwd=work).stdout:
        assert time.monotonic() < deadline, "the notebook never started"
        time.sleep(1)
    listed = json.loads(nbscale("runs", "--json", cwd=work).stdout)
    assert any(r["id"] == run_id and r["status"] == "RUNNING" for r in listed["runs"])
    record = RunStore(nbscale_home / "runs.db").get(run_id)
    assert record.pid_start and record.pid_start == process_start(record.pid)  # who the pid names, kept for status and cancel
    cancelled = nbscale("cancel", run_id, cwd=work)
    assert cancelled.returncode == 0 and "KILLED" in cancelled.stdout
    status = json.loads(nbscale("status", run_id, "--json", cwd=work).stdout)
    assert status["status"] == "KILLED"
    run = mlflow_client.get_run(status["mlflow_run_id"])
    assert run.info.status == "KILLED"
    partial = Path(status["links"]["output_notebook"]).read_text()
    assert "sleeping" in partial, "the cancelled run keeps its partial output"


def test_cancel_says_so_when_the_run_is_still_stopping_and_when_it_had_already_ended(work, nbscale_home):
    from workflow_compiler.store import RunRecord, RunStore

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert stubborn.stdout is not None and stubborn.stdout.readline().strip() == "ready"
        store = RunStore(nbscale_home / "runs.db")
        record = store.create(RunRecord(id="nbs-0123456789", notebook="echo.ipynb", status="RUNNING", pid=stubborn.pid))
        cancelled = nbscale("cancel", record.id, "--wait", "1", cwd=work)
        assert cancelled.returncode == 1, cancelled.stdout + cancelled.stderr
        assert "still stopping after 1 s" in cancelled.stderr and f"kill -9 {stubborn.pid}" in cancelled.stderr
        assert store.get(record.id).status == "RUNNING"  # not called KILLED while its worker lives
    finally:
        stubborn.kill()
        stubborn.wait()
    # killed for good (as the message said): its worker died without recording an end, so the run failed
    again = nbscale("cancel", record.id, cwd=work)
    assert again.returncode == 0 and f"{record.id}: already FAILED, nothing to cancel" in again.stdout


def test_without_json_the_run_prints_its_progress_and_a_summary(work, mlflow_client):
    result = nbscale("run", "echo.ipynb", "-p", "count=3", "--no-html", cwd=work)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    run_id = re.search(r"nbs-[0-9a-f]{10}", result.stdout).group(0)
    assert re.search(rf"{run_id} succeeded .* (\d+)/\1 cells", result.stdout), result.stdout  # the bar, ended full
    assert re.search(rf"^SUCCEEDED {run_id} in \d+s$", result.stdout, re.M), result.stdout  # format_duration: whole seconds
    assert re.search(r"^count_seen\s+3$", result.stdout, re.M), result.stdout  # the metrics the notebook logged
    mlflow_line = next(line for line in lines if line.startswith("mlflow run "))
    assert mlflow_client.get_run(mlflow_line.split()[2].rstrip(":")).info.status == "FINISHED"
    output = Path(lines[lines.index("output notebook:") + 1].strip())
    assert output.is_file() and output.name == "output.ipynb"


def _terminal_text(seen: list[bytes]) -> str:
    """What a terminal was sent, without its colour and cursor codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(seen).decode(errors="replace"))


def _read_until(fd: int, pattern: str, seen: list[bytes], timeout: float = 180) -> re.Match[str]:
    """Read a pseudo-terminal until ``pattern`` appears in everything read so far."""
    deadline = time.monotonic() + timeout
    while not (found := re.search(pattern, _terminal_text(seen))):
        assert time.monotonic() < deadline, f"never printed {pattern!r}: {_terminal_text(seen)[-2000:]!r}"
        if select.select([fd], [], [], 1)[0]:
            try:
                seen.append(os.read(fd, 65536))
            except OSError:  # the other end closed: the process has ended
                time.sleep(0.2)
    return found


def test_ctrl_c_on_run_kills_it_keeps_partial_output_and_exits_130(work, mlflow_client):
    """In a terminal the bar moves while the notebook runs; SIGINT (Ctrl-C) cancels the run, as the README says."""
    primary, replica = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    cli = subprocess.Popen([NBSCALE, "run", "behave.ipynb", "-p", "mode=sleep"], cwd=work, stdin=replica, stdout=replica,
                           stderr=replica, env=env)
    os.close(replica)
    seen: list[bytes] = []
    try:
        live = _read_until(primary, r"(nbs-[0-9a-f]{10}) running .*? ([1-9]\d*)/(\d+) cells", seen)  # redrawn mid-run
        run_id = live.group(1)
        assert 0 < int(live.group(2)) < int(live.group(3)), live.group(0)
        deadline = time.monotonic() + 120
        while "sleeping" not in nbscale("logs", run_id, cwd=work).stdout:
            assert time.monotonic() < deadline, "the notebook never started sleeping"
            time.sleep(1)
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=120) == 130
        _read_until(primary, rf"KILLED {run_id}", seen, timeout=10)
    finally:
        if cli.poll() is None:
            cli.kill()
        os.close(primary)
    assert f"interrupted: cancelling {run_id} (partial output is kept)" in _terminal_text(seen)
    status = json.loads(nbscale("status", run_id, "--json", cwd=work).stdout)
    assert status["status"] == "KILLED"
    assert mlflow_client.get_run(status["mlflow_run_id"]).info.status == "KILLED"
    assert "sleeping" in Path(status["links"]["output_notebook"]).read_text(), "the interrupted run keeps its partial output"
