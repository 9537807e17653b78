"""Runs outlive the server: a restart keeps every record, lets live runs finish, and marks lost ones FAILED."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest
from nbplugin_helpers import JupyterProcess, write_notebook

from workflow_compiler.store import RunStore, pid_alive

pytestmark = pytest.mark.slow


def test_restart_keeps_records_and_reconciles(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    write_notebook(root / "quick.ipynb", "greeting = 'hello'", "print(greeting)")
    write_notebook(root / "sleepy.ipynb", "seconds = 1", "import time\ntime.sleep(seconds)\nprint('woke up')")
    home = {"NBSCALE_HOME": str(state / "home")}  # its own run list: the server's store is $NBSCALE_HOME/runs.db
    first = JupyterProcess("server", root, state, extra_env=home).start()
    try:
        status, quick = first.api("POST", "runs", {"notebook": "quick.ipynb", "parameters": {"greeting": "before restart"}})
        assert status == 201, quick
        # Finish one run first: concurrent first uses of a fresh MLflow SQLite store race on its migrations.
        first.wait_for(quick["id"], {"SUCCEEDED"})
        _, survivor = first.api("POST", "runs", {"notebook": "sleepy.ipynb", "parameters": {"seconds": 25}})
        _, doomed = first.api("POST", "runs", {"notebook": "sleepy.ipynb", "parameters": {"seconds": 300}})
        first.wait_for(survivor["id"], {"RUNNING"})
        first.wait_for(doomed["id"], {"RUNNING"})
    finally:
        first.stop()

    store = RunStore(state / "home" / "runs.db")
    survivor_pid, doomed_pid = store.get(survivor["id"]).pid, store.get(doomed["id"]).pid
    assert pid_alive(survivor_pid) and pid_alive(doomed_pid), "runs must not die with the server"
    os.killpg(doomed_pid, signal.SIGKILL)  # as a machine restart would: the worker and its kernel vanish
    shutil.copy(store.path, tmp_path / "before.db")

    second = JupyterProcess("server", root, state, extra_env=home).start()
    try:
        status, listing = second.api("GET", "runs?per_page=10")
        assert status == 200 and listing["total"] == 3
        by_id = {r["id"]: r for r in listing["runs"]}
        assert by_id[quick["id"]]["status"] == "SUCCEEDED"
        assert by_id[doomed["id"]]["status"] == "FAILED"
        assert "lost" in by_id[doomed["id"]]["error"]
        assert by_id[survivor["id"]]["status"] == "RUNNING"
        done = second.wait_for(survivor["id"], {"SUCCEEDED", "FAILED"}, timeout=120)
        assert done["status"] == "SUCCEEDED", done
        status, _ = second.api("GET", f"runs/{quick['id']}/outputs/output.ipynb")
        assert status == 200
    finally:
        second.stop()
    assert "reconcil" in second.log_path.read_text() or "lost while the server was down" in second.log_path.read_text()
