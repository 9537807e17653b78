"""The warm tracking agent (tracking/agent.py) against a real MLflow SQLite store and real runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from workflow_compiler.errors import ExecutionError
from workflow_compiler.store import pid_alive
from workflow_compiler.tracking import agent
from workflow_compiler.tracking.step_tracker import TrackerProcess
from workflow_compiler.tracking.trial_tracker import AgentTracker
from workflow_compiler.tracking_uri import open_client

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


@pytest.mark.parametrize(("kind", "opt_out", "started"), [
    ("run", None, True),  # the first run of a session: the agent imports MLflow while the run compiles
    ("pipeline", None, True),
    ("run", "0", False),  # NBSCALE_TRACKING_AGENT=0 turns it off here too
    ("sweep", None, False),  # the sweep driver starts what it uses
])
def test_submitting_starts_the_agent_before_the_worker(short_home: Path, monkeypatch: pytest.MonkeyPatch, kind: str,
                                                       opt_out: str | None, started: bool) -> None:
    from workflow_compiler.executors.local import LocalExecutor
    from workflow_compiler.store import RunRecord

    if opt_out is not None:
        monkeypatch.setenv(agent.ENV_SOCKET, opt_out)
    LocalExecutor(root=str(short_home)).prepare(RunRecord(id="nbs-00000000aa", kind=kind, notebook="x.ipynb"))  # type: ignore[arg-type]
    for thread in threading.enumerate():
        if thread.name == "start-tracking-agent":
            thread.join(timeout=60)
    path = agent.socket_path(short_home)
    assert path is not None and (agent._probe(path) == "current") is started


def test_a_step_that_vanishes_leaves_its_run_failed_not_running(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = agent.ensure_started(short_home)
    assert path is not None
    monkeypatch.setenv(agent.ENV_SOCKET, str(path))
    tracker = TrackerProcess(_uri(short_home))
    assert tracker.warm
    opened = tracker.request("open", experiment="agent-test", run_name="gone", tags={"nbscale.user": "t"}, params={"a": "1"},
                             parent_run_id=None)
    tracker.close()  # as if the step died: no finish, no abort
    again = TrackerProcess(_uri(short_home))
    assert again.warm and again.ready  # the agent has imported MLflow by now: the next step may start its kernel ahead
    again.close()
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


def test_the_agent_refuses_a_protocol_it_was_not_given(short_home: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger=agent.__name__)
    path = agent.ensure_started(short_home)
    assert path is not None
    assert agent.connect(path, _uri(short_home), wait=5.0, serve="jobs") is None  # the client then writes itself
    assert "serves no 'jobs' protocol; it serves: step, trials" in caplog.text
    connection = agent.connect(path, _uri(short_home), serve="trials")
    assert connection is not None
    for handle in connection:
        handle.close()


def test_serve_handlers_name_what_they_have() -> None:
    handlers = agent.ServeHandlers()
    with pytest.raises(ExecutionError, match="serves no 'step' protocol; it serves: none"):
        handlers.get("step")
    handlers.register("step", lambda requests, answers, *, uri: None)
    assert handlers.get("step") is not None


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


def _trial_fields(mc: MlflowClient, trial_id: str, **params: object) -> dict[str, object]:
    from workflow_compiler.sweep import tracking

    experiment_id = tracking.ensure_experiment(mc, "agent-trials", str(mc.tracking_uri))
    parent = mc.create_run(experiment_id, run_name="sweep").info.run_id
    return {"experiment_id": experiment_id, "parent_run_id": parent, "sweep_id": "nbs-test", "trial_id": trial_id,
            "name": trial_id, "params": params, "tags": {"nbscale.worker_pid": str(os.getpid())}}


def _trial_connection(home: Path) -> tuple[AgentTracker, MlflowClient]:
    """A trial worker's connection to the home's agent (started now), and a client on its store."""
    path = agent.ensure_started(home)
    assert path is not None
    tracker = AgentTracker.connect(str(path), _uri(home))
    assert tracker is not None
    return tracker, open_client(_uri(home))  # under the store's init lock: the agent may be creating the schema now


def test_trial_workers_hand_their_runs_to_the_agent_without_waiting_for_the_end(short_home: Path, tmp_path: Path) -> None:
    from workflow_compiler.sweep import tracking
    tracker, mc = _trial_connection(short_home)
    output = tmp_path / "output.ipynb"
    output.write_text("{}")
    run_id, artifact_uri = tracker.open(**_trial_fields(mc, "t1", lr=0.1, name="a b"))
    # params are in before the answer: a notebook logging a swept parameter anew is refused in its own cell
    assert mc.get_run(run_id).data.params == {"lr": "0.1", "name": "a b"}
    tracker.log_metrics(run_id, [("loss", 0.5, 1000, 0), ("loss", 0.25, 1001, 1)])
    tracker.finish(run_id, "COMPLETED", error=None, artifacts=(str(output),), metrics=[("loss", 0.125, 1002, 2)],
                   artifact_uri=artifact_uri, wait=False)  # returns at once: the answer is read with the next request
    assert len(tracker._unanswered) == 2
    second, _ = tracker.open(**_trial_fields(mc, "t2"))
    assert not tracker._unanswered  # the open's answer came after every earlier one
    run = mc.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.TAG_STATUS] == "COMPLETED"
    assert run.data.params == {"lr": "0.1", "name": "a b"} and run.data.tags["mlflow.parentRunId"]
    assert [m.value for m in mc.get_metric_history(run_id, "loss")] == [0.5, 0.25, 0.125]
    assert [a.path for a in mc.list_artifacts(run_id)] == ["output.ipynb"]
    assert "serving a sweep's trial worker" in (short_home / "agent" / "agent.log").read_text()

    # The agent goes away with an end it may not have written: the worker writes it again itself.
    tracker.finish(second, "COMPLETED", error=None, artifacts=(), metrics=[("loss", 1.0, 1003, 0)], artifact_uri=None, wait=False)
    os.kill(int((short_home / "agent" / "agent.pid").read_text()), 9)
    third, _ = tracker.open(**_trial_fields(mc, "t3", lr=0.3))
    assert tracker._fallback is not None
    assert mc.get_run(second).info.status == "FINISHED" and mc.get_run(second).data.metrics["loss"] == 1.0
    tracker.finish(third, "FAILED", error="ValueError: boom", artifacts=(), metrics=[], artifact_uri=None, wait=True)
    run = mc.get_run(third)
    assert run.info.status == "FAILED" and run.data.tags["nbscale.error"] == "ValueError: boom" and run.data.params == {"lr": "0.3"}


def test_a_trial_worker_uses_its_own_client_where_the_agent_cannot_serve(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow_compiler.tracking import trial_tracker

    path = agent.ensure_started(short_home)
    assert path is not None
    uri = _uri(short_home)
    assert trial_tracker.AgentTracker.connect(str(path), "http://127.0.0.1:5000") is None
    assert trial_tracker.AgentTracker.connect(str(short_home / "agent" / "missing.sock"), uri) is None
    monkeypatch.setattr(agent, "code_version", lambda: "some-other-code")
    assert trial_tracker.AgentTracker.connect(str(path), uri) is None
    monkeypatch.setattr(trial_tracker, "_TRACKERS", {})
    tracker = trial_tracker.trial_tracker(uri, str(path))
    assert isinstance(tracker, trial_tracker.DirectTracker) and trial_tracker.trial_tracker(uri, str(path)) is tracker
    mc = MlflowClient(uri)
    run_id, _ = tracker.open(**_trial_fields(mc, "t1", lr=0.1))
    tracker.finish(run_id, "EARLY_STOPPED", error=None, artifacts=(), metrics=[("loss", 2.0, 1000, 0)], artifact_uri=None, wait=False)
    run = mc.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["nbscale.trial_status"] == "EARLY_STOPPED" and run.data.params == {"lr": "0.1"}


def test_the_driver_waits_for_completed_trials_runs_before_closing_what_dangles(tmp_path: Path) -> None:
    import threading

    from workflow_compiler.sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mc = tracking.client(uri)
    fields = _trial_fields(mc, "done")
    experiment_id, parent = str(fields["experiment_id"]), str(fields["parent_run_id"])
    done = tracking.open_trial_run(mc, **{**fields, "params": {}}).run_id  # type: ignore[arg-type]
    lost = tracking.open_trial_run(mc, **{**fields, "trial_id": "lost", "params": {}}).run_id  # type: ignore[arg-type]
    late = threading.Timer(0.5, lambda: tracking.finish_trial_run(mc, done, "COMPLETED"))
    late.start()
    tracking.settle_children(mc, experiment_id=experiment_id, parent_run_id=parent, trial_ids={"done"})
    assert mc.get_run(done).info.status == "FINISHED"  # waited for the agent's write, not closed as FAILED
    assert mc.get_run(lost).info.status == "RUNNING"  # not a completed trial: not waited for
    assert tracking.close_open_children(mc, experiment_id=experiment_id, parent_run_id=parent, status="FAILED") == [lost]
    late.join()


def test_the_agent_serves_a_request_a_worker_waits_for_before_one_it_does_not() -> None:
    import threading
    import time

    from workflow_compiler.tracking.trial_tracker import _Turns

    turns, order, release = _Turns(), [], threading.Event()

    def request(name: str, urgent: bool) -> None:
        with turns.turn(urgent=urgent):
            order.append(name)
            if name == "finish-1":
                release.wait(60)

    def waiting() -> int:
        with turns._changed:
            return turns._urgent

    def queued() -> int:  # threads asleep in the condition (CPython's Condition keeps one lock per waiter)
        with turns._changed:
            return len(turns._changed._waiters)  # type: ignore[attr-defined]

    first = threading.Thread(target=request, args=("finish-1", False))
    first.start()
    while not order:
        time.sleep(0.01)
    later = [threading.Thread(target=request, args=("finish-2", False))]
    later[0].start()
    deadline = time.monotonic() + 30
    while queued() == 0:  # finish-2 queues first (a fixed sleep could end before it queued, testing nothing)...
        assert time.monotonic() < deadline, "finish-2 never queued"
        time.sleep(0.01)
    later.append(threading.Thread(target=request, args=("open", True)))
    later[1].start()
    while waiting() == 0:  # ...then an open, which a worker waits for
        assert time.monotonic() < deadline, "the open never queued"
        time.sleep(0.01)
    release.set()
    for thread in (first, *later):
        thread.join(10)
    assert order == ["finish-1", "open", "finish-2"]


def _wait_gone(pid: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_worker_whose_agent_dies_while_opening_takes_up_the_run_it_created(short_home: Path) -> None:
    from workflow_compiler.sweep import tracking
    tracker, mc = _trial_connection(short_home)
    fields = {**_trial_fields(mc, "t1", lr=0.1), "name": "t1-attempt-1"}
    created = tracking.open_trial_run(mc, **fields).run_id  # what the agent wrote before it died unanswered
    pid = int((short_home / "agent" / "agent.pid").read_text())
    os.kill(pid, 9)
    _wait_gone(pid)
    run_id, _ = tracker.open(**fields)
    assert run_id == created  # no orphan left RUNNING, no second run for the attempt
    runs = mc.search_runs([str(fields["experiment_id"])], filter_string="tags.`nbscale.trial_id` = 't1'")
    assert [r.info.run_id for r in runs] == [created] and runs[0].data.params == {"lr": "0.1"}
    retry, _ = tracker.open(**{**fields, "name": "t1-attempt-2"})  # another attempt: a run of its own
    assert retry != created


def test_a_write_the_agent_refuses_sends_the_worker_direct_and_closes_its_connection(short_home: Path) -> None:
    tracker, mc = _trial_connection(short_home)
    run_id, _ = tracker.open(**_trial_fields(mc, "t1"))
    tracker.log_metrics(run_id, [("loss", 0.5, 1000, 0)])  # unanswered when the refusal comes: written again
    assert tracker._call({"op": "unknown-to-the-agent"}, wait=True) == {}  # the agent answers ok: false
    assert tracker._fallback is not None and tracker._sock.fileno() == -1  # no idle connection kept
    tracker.log_metrics(run_id, [("loss", 0.25, 1001, 1)])
    assert [m.value for m in mc.get_metric_history(run_id, "loss")] == [0.5, 0.25]
