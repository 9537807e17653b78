"""The run store: records persist, filter, update atomically, and lost runs are reconciled."""

from __future__ import annotations

import multiprocessing
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


# Each writer owns one field and counts in it: an update that read the record before another
# writer's commit and wrote it back after would put that writer's count back. (The old version
# checked only that two fields written together stayed together.)
WRITERS = {"error": lambda n: f"update {n}", "mlflow_run_id": lambda n: f"run-{n}", "namespace": lambda n: f"ns-{n}",
           "metrics": lambda n: {"m": float(n)}}
UPDATES = 25


def _count_in(field: str, store_path: str) -> None:
    store = RunStore(store_path)
    for n in range(1, UPDATES + 1):
        store.update("nbs-x", **{field: WRITERS[field](n)})


@pytest.mark.parametrize("workers", ["threads", "processes"])
def test_concurrent_updates_do_not_lose_writes(tmp_path, workers):
    store = RunStore(tmp_path / "runs.db")
    store.create(RunRecord(id="nbs-x", notebook="n.ipynb"))
    if workers == "threads":
        threads = [threading.Thread(target=_count_in, args=(field, str(store.path))) for field in WRITERS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        with multiprocessing.get_context("fork").Pool(len(WRITERS)) as pool:
            pool.starmap(_count_in, [(field, str(store.path)) for field in WRITERS])
    record = store.get("nbs-x").model_dump()
    assert {field: record[field] for field in WRITERS} == {field: make(UPDATES) for field, make in WRITERS.items()}


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
