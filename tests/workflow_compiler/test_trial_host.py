"""The warm trial host (sweep/trial_host.py) as a real process: a test stands in for the Ray trial worker."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from workflow_compiler.store import pid_alive
from workflow_compiler.sweep import trial_host
from workflow_compiler.sweep.trial import TrialPlan, _meet_peers
from workflow_compiler.sweep.worker import TrialStopped

SOURCE = """\
import json, os, sys
import mlflow
with open(record, "a") as f:
    f.write(json.dumps({"pid": os.getpid(), "cwd": os.getcwd(), "marker": os.environ.get("NBSCALE_TEST_MARKER"),
                        "trial": os.environ.get("NBSCALE_TRIAL_ID"), "seen_before": "leftover" in globals()}) + "\\n")
leftover = True
for step in range(3):
    mlflow.log_metric("score", value + step, step=step)
mlflow.log_metric("other", 1.0)
if die:
    os._exit(3)
"""


@pytest.fixture()
def short_home() -> Iterator[Path]:
    """A home whose socket path fits a Unix socket (pytest's tmp paths can be too long); its host is stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="nbs-host-"))
    yield home
    trial_host.stop(home)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture()
def notebook(tmp_path: Path) -> Path:
    nb = new_notebook(cells=[new_code_cell("record = ''\nvalue = 0.0\ndie = False", metadata={"tags": ["parameters"]}),
                             new_code_cell(SOURCE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "host.ipynb"
    nbformat.write(nb, path)
    return path


def _request(notebook: Path, tmp_path: Path, n: int, *, interval: float = 60.0, **params: Any) -> dict[str, Any]:
    return {"notebook": str(notebook), "output": str(tmp_path / f"out-{n}" / "output.ipynb"),
            "params": {"record": str(tmp_path / "record.jsonl"), **params}, "cwd": str(tmp_path), "env": {"NBSCALE_TRIAL_ID": f"t{n}"},
            "run_id": "run-of-the-test", "metric": "score", "interval": interval, "kernel_name": "python3"}


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (tmp_path / "record.jsonl").read_text().splitlines()]


def _host(home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    path = trial_host.start_for_local_ray()
    assert path is not None
    return path


def test_a_child_runs_trials_warm_isolated_and_in_the_workers_environment(short_home: Path, notebook: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_TEST_MARKER", "from-the-worker")  # the host keeps none of its starter's variables but those of imports
    path = _host(short_home, monkeypatch)
    child = trial_host.HostChild.connect(path)
    assert child is not None
    host_pid = int((short_home / "agent" / trial_host.PID_NAME).read_text())
    assert b"NBSCALE_TEST_MARKER" not in Path(f"/proc/{host_pid}/environ").read_bytes()
    seen: list[tuple[str, float, int | None]] = []
    # a NumPy value, as a search algorithm may sample one, travels as the number it holds
    outcomes = [child.run(_request(notebook, tmp_path, n, value=np.int64(n)), on_metric=lambda *m: seen.append(m),
                          report=lambda *_: pytest.fail("no report is due within the interval")) for n in (1, 2)]
    assert [o.status for o in outcomes] == ["COMPLETED", "COMPLETED"], [o.error for o in outcomes]
    records = _records(tmp_path)
    assert {r["pid"] for r in records} == {child.pid} and child.pid not in (host_pid, os.getpid())
    assert [r["marker"] for r in records] == ["from-the-worker"] * 2
    assert [r["trial"] for r in records] == ["t1", "t2"] and {r["cwd"] for r in records} == {str(tmp_path)}
    assert [r["seen_before"] for r in records] == [False, False]  # a fresh namespace per trial, as in a worker
    assert seen[:4] == [("score", 1.0, 0), ("score", 2.0, 1), ("score", 3.0, 2), ("other", 1.0, None)]
    out = nbformat.read(tmp_path / "out-2" / "output.ipynb", as_version=4)
    assert "value = 2\n" in out.cells[1].source  # papermill's injected parameters
    child.close()
    _wait_until(lambda: not pid_alive(child.pid))  # the worker gone, its child leaves


def test_the_scheduler_stops_a_trial_part_way_and_the_child_runs_the_next(short_home: Path, notebook: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    child = trial_host.HostChild.connect(_host(short_home, monkeypatch))
    assert child is not None
    reported: list[float] = []

    def report(value: float, step: int | None) -> None:
        reported.append(value)
        if step == 1:
            raise TrialStopped()

    stopped = child.run(_request(notebook, tmp_path, 1, interval=0.0), on_metric=lambda *_: None, report=report)
    assert stopped.status == "EARLY_STOPPED" and reported == [0.0, 1.0]  # asked at every objective metric; no third step
    assert "trial stopped early" in (tmp_path / "out-1" / "output.ipynb").read_text()  # its partial output is kept
    after = child.run(_request(notebook, tmp_path, 2), on_metric=lambda *_: None, report=lambda *_: None)
    assert after.status == "COMPLETED" and after.pid == stopped.pid


def test_metrics_logged_from_the_notebooks_own_threads_all_arrive_and_a_refused_notebook_fails_alone(short_home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    source = ("import threading, mlflow\n"
              "def log(k):\n    for i in range(200):\n        mlflow.log_metric(f'm{k}', float(i), step=i)\n"
              "threads = [threading.Thread(target=log, args=(k,)) for k in range(4)]\n"
              "[t.start() for t in threads]\n"
              "for i in range(200):\n    mlflow.log_metric('score', float(i), step=i)\n"
              "[t.join() for t in threads]")
    nb = new_notebook(cells=[new_code_cell("record = ''", metadata={"tags": ["parameters"]}), new_code_cell(source)])
    nbformat.write(nb, tmp_path / "threads.ipynb")
    child = trial_host.HostChild.connect(_host(short_home, monkeypatch))
    assert child is not None
    # papermill refuses a file that is no notebook: the trial fails with that message, the child stays
    (tmp_path / "broken.ipynb").write_text("{not json", encoding="utf-8")
    refused = child.run(_request(tmp_path / "broken.ipynb", tmp_path, 0), on_metric=lambda *_: None, report=lambda *_: None)
    assert refused.status == "FAILED" and (refused.error or "").startswith("NotJSONError") and not child.closed
    # ... and one with no kernelspec (made with nbformat) runs, as under `nbscale run`
    seen: list[str] = []
    asked: list[float] = []
    outcome = child.run(_request(tmp_path / "threads.ipynb", tmp_path, 1, interval=0.0), on_metric=lambda name, *_: seen.append(name),
                        report=lambda value, step: asked.append(value))
    assert outcome.status == "COMPLETED", outcome.error
    assert sorted(set(seen)) == ["m0", "m1", "m2", "m3", "score"] and len(seen) == 1000
    assert asked == [float(i) for i in range(200)]  # every objective value asked about, answered in its turn


def test_a_child_that_dies_fails_its_trial_and_the_next_trial_gets_a_new_child(short_home: Path, notebook: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    path = _host(short_home, monkeypatch)
    child = trial_host.HostChild.connect(path)
    assert child is not None
    died = child.run(_request(notebook, tmp_path, 1, die=True), on_metric=lambda *_: None, report=lambda *_: None)
    assert died.status == "FAILED" and "process died" in (died.error or "") and child.closed
    again = trial_host.HostChild.connect(path)
    assert again is not None and again.pid != child.pid
    assert again.run(_request(notebook, tmp_path, 2), on_metric=lambda *_: None, report=lambda *_: None).status == "COMPLETED"
    again.close()


def test_a_worker_of_other_code_is_refused_and_stop_ends_the_host(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _host(short_home, monkeypatch)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(path)
        sock.sendall((json.dumps({"op": "hello", "version": "other-code", "environ": {}, "path": [], "cwd": "/"}) + "\n").encode())
        answer = json.loads(sock.makefile("r").readline())
    assert answer["ok"] is False and "code version" in answer["error"]
    assert trial_host.start_for_local_ray() == path  # one host per home
    pid = trial_host.stop(short_home)
    assert pid is not None and not pid_alive(pid) and not Path(path).exists()
    assert trial_host.HostChild.connect(path) is None  # no host: the worker runs its trials itself


def test_the_host_is_only_for_trial_workers_on_this_machine(short_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBSCALE_HOME", str(short_home))
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert trial_host.start_for_local_ray() is None
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv(trial_host.ENV_HOST, "0")
    assert trial_host.start_for_local_ray() is None
    assert not (short_home / "agent" / trial_host.SOCKET_NAME).exists()


def _returns_before(call: Any, deadline_s: float) -> bool:
    """Whether ``call()`` returned within ``deadline_s`` (it keeps running in a daemon thread if not)."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(deadline_s)
    return not thread.is_alive()


def test_a_workers_first_trial_waits_for_its_peers_but_not_for_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("workflow_compiler.sweep.trial.PEER_WAIT_S", 0.5)
    plan = TrialPlan(sweep_id="s", notebook="n", workdir="w", trials_dir="t", fixed={}, metric="m", tracking_uri="u",
                     experiment_id="0", parent_run_id="p", peers=2, peers_dir=str(tmp_path / "alone"))
    started = time.monotonic()
    assert _returns_before(lambda: _meet_peers(plan), 60)  # no peer came: it waited the bound, then went on
    assert time.monotonic() - started >= 0.5
    # From here on a wait would last 10 minutes: returning within a minute, however loaded the
    # machine, proves the call did not wait for its bound.
    monkeypatch.setattr("workflow_compiler.sweep.trial.PEER_WAIT_S", 600)
    assert _returns_before(lambda: _meet_peers(plan), 60), "waited again: the wait is once per worker"
    (tmp_path / "met").mkdir()
    (tmp_path / "met" / "12345").touch()  # a peer that announced itself
    assert _returns_before(lambda: _meet_peers(TrialPlan(**{**plan.__dict__, "peers_dir": str(tmp_path / "met")})), 60), \
        "waited although its peer was there"


def _wait_until(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
