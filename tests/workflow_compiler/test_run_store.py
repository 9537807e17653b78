"""The run store: records persist, filter, update atomically, and lost runs are reconciled."""

from __future__ import annotations

import datetime
import enum
import json
import multiprocessing
import subprocess
import sys
import threading

import pytest
from pydantic import ValidationError

from workflow_compiler.errors import RunNotFound
from workflow_compiler.store import Progress, RunRecord, RunStore, StepState, record_from_row


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


def _full_record() -> RunRecord:
    """A record with every nested model filled in: a pipeline with steps, metrics, links and a queued detail."""
    return RunRecord(id="nbs-00000000aa", kind="pipeline", notebook="p.yaml", status="RUNNING", started="2026-12-01T00:00:00+00:00",
                     progress=Progress(done=1, total=3, unit="steps", queued=1, detail="queued in team-a"),
                     steps=[StepState(name="prep", status="SUCCEEDED", progress=Progress(done=2, total=2)), StepState(name="train")],
                     metrics={"accuracy": 0.9}, best={"trial": 3}, links={"mlflow": "http://127.0.0.1:5000/#/x"},
                     parameters={"lr": 0.1, "layers": [1, 2]}, pid=123, lease_id="lease-1", lease_gpus=2)


def test_a_stored_row_reads_back_equal_to_a_validated_one_with_nested_models():
    """The store builds its own rows without validating them again: same values, same models, same JSON."""
    row = _full_record().model_dump_json()
    record, validated = record_from_row(row), RunRecord.model_validate_json(row)
    assert record == validated and record.model_fields_set == validated.model_fields_set
    assert isinstance(record.progress, Progress) and all(isinstance(s, StepState) for s in record.steps)
    assert isinstance(record.steps[0].progress, Progress) and record.steps[0].progress.done == 2
    api, validated_api = record.to_api(), validated.to_api()
    assert validated_api.pop("duration") >= api.pop("duration")  # still running: the clock moves
    assert (record.status_label, api) == (validated.status_label, validated_api)


@pytest.mark.parametrize("change", [
    lambda d: d.pop("lease_gpus"),  # written by an nbscale without the field: its default is filled in
    lambda d: d.pop("pid_start"),  # likewise, read without validating (``runs`` reads every row)
    lambda d: d.update(retired_field=1),  # a field this nbscale no longer has: dropped, as validation drops it
    lambda d: d["progress"].pop("queued"),
    lambda d: d["steps"][1].pop("attempts"),
    lambda d: d["steps"][0]["progress"].pop("detail"),
])
def test_a_row_of_another_shape_is_validated(change):
    data = json.loads(_full_record().model_dump_json())
    change(data)
    assert record_from_row(json.dumps(data)) == RunRecord.model_validate(data)


def test_a_row_of_another_shape_that_is_invalid_fails_loudly():
    data = json.loads(_full_record().model_dump_json())
    del data["id"]
    with pytest.raises(ValidationError, match="id"):
        record_from_row(json.dumps(data))


class _Colour(enum.StrEnum):
    RED = "red"


@pytest.mark.parametrize("fields", [
    {},
    {"metrics": {"n": 3, "loss": 0.5}, "best": None, "pid": 7},  # an int where a float is declared
    {"parameters": {"shape": (2, 3)}},  # tuples, enums, dates and infinity are converted by pydantic's JSON mode
    {"parameters": {"colour": _Colour.RED}},
    {"best": {"when": datetime.date(2026, 12, 1)}},
    {"metrics": {"loss": float("inf")}},
])
def test_to_api_is_pydantics_json_dump(fields):
    """``to_api`` writes plain values itself and leaves every other one to pydantic: the same JSON either way."""
    record = RunRecord.model_validate({**_full_record().model_dump(), **fields})
    for candidate in (record, record_from_row(record.model_dump_json())):
        expected = {**candidate.model_dump(mode="json", exclude={"pid", "pid_start"}), "status_label": candidate.status_label,
                    "phase": candidate.phase}
        api = candidate.to_api()
        assert api.pop("duration") is not None and api == expected and json.dumps(api) == json.dumps(expected)


@pytest.mark.parametrize(("true_after", "early_wake", "expected"), [
    (3, False, True),  # true at the third look
    (None, False, False),  # never: gives up at the deadline, not an interval past it
    (None, True, False),  # a waiter that wakes at once (an exited worker's event) looks again, still until the deadline only
])
def test_wait_until_sleeps_through_the_given_waiter_never_past_its_deadline(true_after: int | None, early_wake: bool,
                                                                            expected: bool) -> None:
    """``Executor.wait`` and ``LocalExecutor.cancel`` pass their ``pause``: its wake-ups must not stretch the timeout."""
    import time

    from workflow_compiler.store import wait_until

    looks: list[float] = []
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        time.sleep(0.001 if early_wake else seconds)

    started = time.monotonic()
    found = wait_until(lambda: looks.append(time.monotonic()) or len(looks) == true_after, timeout=0.5, interval=0.2, sleep=nap)
    assert found is expected
    assert naps and all(0 < seconds <= 0.2 for seconds in naps)
    if not expected:
        assert 0.5 <= time.monotonic() - started < 0.65
        assert sum(naps) <= 0.5 + 1e-6 or early_wake  # the last nap is cut to what was left
