"""A run record's pid names one process, not whichever process the kernel gives that number next.

pid_max is 32768 on many machines, so a finished run's pid soon belongs to something else. The
record keeps the worker's start time beside its pid (``pid_start``); ``status`` and ``cancel`` treat
a pid whose start time differs as gone, and never signal it. Real processes throughout: a ``sleep``
plays the unrelated process that now holds the pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.executors.local import LocalExecutor
from workflow_compiler.store import RunRecord, RunStore, pid_alive, process_start

NBSCALE = str(Path(sys.executable).parent / "nbscale")


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    """A process nbscale did not start, as the pid of a finished run may now name."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def gone_start() -> str:
    """The start identity of a process that has ended: what a record of a finished worker holds."""
    time.sleep(0.05)  # start times count clock ticks (10 ms): two processes started within one tick look alike
    proc = subprocess.Popen(["sleep", "300"])
    start = process_start(proc.pid)
    proc.kill()
    proc.wait()
    assert start
    return start


def _record(home: Path, pid: int, pid_start: str | None) -> str:
    store = RunStore(home / "runs.db")
    record = RunRecord(id="nbs-stale0001", notebook="echo.ipynb", status="RUNNING", executor="local", pid=pid,
                       pid_start=pid_start, run_dir=str(home))
    store.create(record)
    return record.id


def _nbscale(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBSCALE, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "300"})


def test_the_start_identity_is_the_process_s_own(unrelated: subprocess.Popen[bytes], gone_start: str) -> None:
    start = process_start(unrelated.pid)
    assert start and start != gone_start and start == process_start(unrelated.pid)
    assert pid_alive(unrelated.pid, start) and pid_alive(unrelated.pid)
    assert not pid_alive(unrelated.pid, gone_start)
    assert process_start(None) is None


@pytest.mark.parametrize(("matches", "status"), [(True, "RUNNING"), (False, "FAILED"), (None, "RUNNING")],
                         ids=["same-process", "pid-reused", "old-record-without-start"])
def test_status_trusts_a_pid_only_while_it_names_the_same_process(tmp_path: Path, unrelated: subprocess.Popen[bytes],
                                                                   gone_start: str, matches: bool | None, status: str) -> None:
    start = None if matches is None else process_start(unrelated.pid) if matches else gone_start
    run_id = _record(tmp_path / "home", unrelated.pid, start)
    done = _nbscale(tmp_path / "home", "status", run_id, "--json")
    assert done.returncode == 0, done.stderr
    assert f'"status": "{status}"' in done.stdout, done.stdout
    if status == "FAILED":
        assert f"its worker (pid {unrelated.pid}) is gone" in done.stdout, done.stdout
    assert unrelated.poll() is None


def test_cancel_of_a_reused_pid_signals_nothing_and_says_the_worker_is_gone(tmp_path: Path, unrelated: subprocess.Popen[bytes],
                                                                           gone_start: str) -> None:
    run_id = _record(tmp_path / "home", unrelated.pid, gone_start)
    done = _nbscale(tmp_path / "home", "cancel", run_id)
    assert done.returncode == 0, done.stderr
    assert f"{run_id}: already FAILED, nothing to cancel" in done.stdout, done.stdout
    assert unrelated.poll() is None, "cancel signalled a process that is not the run's worker"
    record = RunStore(tmp_path / "home" / "runs.db").get(run_id)
    assert record.error and "is gone" in record.error


def test_cancel_of_an_old_record_still_stops_its_worker(tmp_path: Path, unrelated: subprocess.Popen[bytes]) -> None:
    """A record written before ``pid_start`` existed: its pid is trusted, as before."""
    run_id = _record(tmp_path / "home", unrelated.pid, None)
    done = _nbscale(tmp_path / "home", "cancel", run_id, "--wait", "10")
    assert done.returncode == 0, done.stderr
    assert unrelated.wait(timeout=10) == -signal.SIGTERM
    assert "KILLED" in done.stdout


def test_a_cancel_through_the_api_leaves_a_reused_pid_alone_and_records_why(tmp_path: Path, unrelated: subprocess.Popen[bytes],
                                                                           gone_start: str) -> None:
    """What the REST API and the magics call: no ``get`` first, so ``cancel`` itself must tell."""
    run_id = _record(tmp_path / "home", unrelated.pid, gone_start)
    record = LocalExecutor(store=RunStore(tmp_path / "home" / "runs.db")).cancel(run_id, wait=5)
    assert record.status == "KILLED"
    assert record.error == f"cancelled: its worker (pid {unrelated.pid}) was already gone, nothing was signalled"
    assert unrelated.poll() is None


def _cancel_as_this_user(home: Path, pid: int) -> tuple[str, str | None]:
    """In a child running as another user: a record of ``pid`` (no start time, as an old record) cancelled."""
    home.mkdir(mode=0o700)
    run_id = _record(home, pid, None)
    record = LocalExecutor(store=RunStore(home / "runs.db")).cancel(run_id, wait=5)
    return record.status, record.error


def test_another_user_s_process_is_no_worker_of_ours_and_cancel_leaves_it_alone(other_user, shared_tmp: Path,
                                                                                unrelated: subprocess.Popen[bytes]) -> None:
    """``kill(pid, 0)`` says EPERM: the pid is not this user's, so not a worker this user started (``/proc`` may even show it)."""
    assert not other_user.run(pid_alive, unrelated.pid)
    status, error = other_user.run(_cancel_as_this_user, shared_tmp / "home", unrelated.pid)
    assert (status, error) == ("KILLED", f"cancelled: its worker (pid {unrelated.pid}) was already gone, nothing was signalled")
    assert unrelated.poll() is None


@pytest.mark.parametrize("call", ["cancel", "get"])
def test_a_worker_that_records_its_end_just_as_it_is_found_gone_keeps_that_end(tmp_path: Path, gone_start: str,
                                                                               monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """The worker writes SUCCEEDED and exits between the caller's read of the record and its look at the pid."""
    from workflow_compiler.executors import local

    run_id = _record(tmp_path / "home", os.getpid(), gone_start)
    store = RunStore(tmp_path / "home" / "runs.db")

    def finishes_then_gone(pid: int | None, started: str | None = None) -> bool:
        store.update(run_id, status="SUCCEEDED")
        return False

    monkeypatch.setattr(local, "pid_alive", finishes_then_gone)
    executor = LocalExecutor(store=store)
    record = executor.cancel(run_id, wait=5) if call == "cancel" else executor.get(run_id)
    assert record.status == "SUCCEEDED" and not record.error
    assert store.get(run_id).status == "SUCCEEDED"


def test_reconcile_keeps_the_end_a_worker_recorded_just_before_it_exited(tmp_path: Path, gone_start: str,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``reconcile`` lists RUNNING records, then looks at each pid: a worker may finish in between."""
    from workflow_compiler import store as store_module

    run_id = _record(tmp_path / "home", os.getpid(), gone_start)
    store = RunStore(tmp_path / "home" / "runs.db")

    def finishes_then_gone(pid: int | None, started: str | None = None) -> bool:
        store.update(run_id, status="SUCCEEDED")
        return False

    monkeypatch.setattr(store_module, "pid_alive", finishes_then_gone)
    assert store.reconcile() == []
    assert store.get(run_id).status == "SUCCEEDED" and not store.get(run_id).error
