"""The run store: records persist, filter, update atomically, and lost runs are reconciled."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from workflow_compiler.errors import RunNotFound
from workflow_compiler.store import RunRecord, RunStore


def test_records_round_trip_filter_and_page(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    for i in range(5):
        store.create(RunRecord(id=f"nbs-{i:010d}", notebook="a.ipynb" if i % 2 else "b.ipynb", status="SUCCEEDED" if i < 3 else "FAILED"))
    records, total = store.list(limit=2)
    assert total == 5 and [r.id for r in records] == ["nbs-0000000004", "nbs-0000000003"]
    assert store.list(notebook="a.ipynb")[1] == 2 and store.list(status="failed")[1] == 2
    assert RunStore(tmp_path / "runs.db").get("nbs-0000000001").notebook == "a.ipynb"  # survives a reopen


def test_missing_run():
    with pytest.raises(RunNotFound, match="nbscale runs"):
        RunStore().get("nbs-nope")


def test_concurrent_updates_do_not_lose_writes(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    store.create(RunRecord(id="nbs-x", notebook="n.ipynb"))

    def set_step(i: int) -> None:
        for _ in range(10):
            store.update("nbs-x", **{"metrics": {"m": float(i)}, "error": f"t{i}"})

    threads = [threading.Thread(target=set_step, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = store.get("nbs-x")
    assert record.error == f"t{int(record.metrics['m'])}", "each update must land whole, never half of two"


def test_reconcile_marks_runs_without_a_process_as_lost(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        store.create(RunRecord(id="nbs-dead", notebook="n.ipynb", status="RUNNING", pid=dead.pid))
        store.create(RunRecord(id="nbs-alive", notebook="n.ipynb", status="RUNNING", pid=alive.pid))
        store.create(RunRecord(id="nbs-done", notebook="n.ipynb", status="SUCCEEDED", pid=dead.pid))
        assert store.reconcile() == ["nbs-dead"]
        assert store.get("nbs-dead").status == "FAILED" and "lost" in (store.get("nbs-dead").error or "")
        assert store.get("nbs-alive").status == "RUNNING" and store.get("nbs-done").status == "SUCCEEDED"
    finally:
        alive.kill()
        alive.wait()
