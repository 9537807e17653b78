"""The warm tracking agent (runtime/agent.py) against a real MLflow SQLite store and real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workflow_compiler.runtime import agent
from workflow_compiler.runtime.tracker import TrackerProcess
from workflow_compiler.store import pid_alive

NBSCALE = str(Path(sys.executable).parent / "nbscale")
NOTEBOOKS = Path(__file__).parent / "notebooks"


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An NBSCALE_HOME whose socket path fits a Unix socket; its agent is stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="nbs-agent-"))
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield home
    agent.stop(home)


def _uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def test_two_runs_share_one_agent_and_both_land_in_mlflow(short_home: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "echo.ipynb").write_bytes((NOTEBOOKS / "echo.ipynb").read_bytes())
    env = {**os.environ, "COLUMNS": "200"}
    answers = []
    for count in (1, 2):
        done = subprocess.run([NBSCALE, "run", "echo.ipynb", "-p", f"count={count}", "--json"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        answers.append(json.loads(done.stdout))
    pid = int((short_home / "agent" / "agent.pid").read_text())
    logs = [(short_home / "runs" / a["id"] / "log.txt").read_text() for a in answers]
    assert all("warm tracking agent" in log for log in logs)  # the second run found the first one's agent
    mc = MlflowClient(_uri(short_home))
    for count, answer in zip((1, 2), answers, strict=True):
        run = mc.get_run(answer["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.params["count"] == str(count)
        assert run.data.metrics["count_seen"] == count
        assert {a.path for a in mc.list_artifacts(run.info.run_id)} >= {"output.ipynb", "output.html"}
    assert agent.stop(short_home) == pid
    assert not (short_home / "agent" / "tracking.sock").exists() and not pid_alive(pid)


def test_a_step_that_vanishes_leaves_its_run_failed_not_running(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = agent.ensure_started(short_home)
    assert path is not None
    monkeypatch.setenv(agent.ENV_SOCKET, str(path))
    tracker = TrackerProcess(_uri(short_home))
    assert tracker.warm
    opened = tracker.request("open", experiment="agent-test", run_name="gone", tags={"nbscale.user": "t"}, params={"a": "1"},
                             parent_run_id=None)
    tracker.close()  # as if the step died: no finish, no abort
    mc = MlflowClient(_uri(short_home))
    run = _wait_for(lambda: mc.get_run(opened["run_id"]), lambda r: r.info.status != "RUNNING")
    assert run.info.status == "FAILED"
    assert run.data.tags["nbscale.error"] == "the step runtime stopped without reporting an outcome"
    assert run.data.params == {"a": "1"}


def test_refusals_fall_back_to_a_helper_of_the_step(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = agent.ensure_started(short_home)
    assert path is not None and agent.ensure_started(short_home) == path  # one agent per home
    assert agent._probe(path) == "current"
    assert agent.connect(path, "http://127.0.0.1:5000") is None  # a tracking server: credentials would go stale
    monkeypatch.setattr(agent, "code_version", lambda: "some-other-code")
    assert agent.connect(path, _uri(short_home)) is None  # an agent of other code is not used
    monkeypatch.undo()
    monkeypatch.setenv("NBSCALE_HOME", str(short_home))
    monkeypatch.setenv(agent.ENV_SOCKET, str(short_home / "agent" / "missing.sock"))
    tracker = TrackerProcess(_uri(short_home))  # nothing listens there: the step starts its own helper
    try:
        assert not tracker.warm
        assert tracker.request("open", experiment="agent-test", run_name="helper", tags={}, params={}, parent_run_id=None)["run_id"]
        tracker.request("finish", status="FINISHED", tags={}, artifacts=[])
    finally:
        tracker.close()


def test_no_agent_where_the_socket_path_would_be_too_long(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    assert agent.socket_path(deep) is None and agent.ensure_started(deep) is None
    assert not agent.serves("http://127.0.0.1:5000") and agent.serves(_uri(tmp_path))


def _wait_for(get, ready, timeout: float = 30):  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if ready(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
