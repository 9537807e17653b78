"""Admissions decided inside Postgres (``quota_admit_batch``) answer exactly what the Python check answers.

Each case sets up policies and usage the same way on SQLite (decided in Python, :mod:`hub_extension.policy`)
and on Postgres (decided in the server, :mod:`hub_extension.pg_admission`), asks once, and compares
the answers (outcome, refusal limit, message, usage) with each other and with the expected outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from hub_extension import group_ops
from hub_extension.admin import set_policy
from hub_extension.db import downgrade_database, make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.pg_admission import window_edges_plpgsql
from hub_extension.policy import DEFAULT_WINDOW_HOURS
from hub_extension.store import AdmissionRequest, Caller, QuotaStore
from hub_extension.store_values import window_edges

START = datetime(2026, 3, 10, 12, 0, 0)
ALICE = Caller(name="alice", groups=("ml", "vision"))


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def ask(rid: str, gpus: int = 1, pool: str = "a100", concurrency: int = 1, estimated_seconds: float = 3600,
        ttl: float | None = None) -> AdmissionRequest:
    return AdmissionRequest(gpus=gpus, pool=pool, concurrency=concurrency, estimated_seconds=estimated_seconds,
                            request_id=rid, ttl_seconds=ttl)


# (case, policies as (kind, name, fields), earlier requests (admitted and held; "+Ns" moves the clock,
#  "release" ends the last lease with its GPU-seconds), the request, the expected outcome)
CASES: list[tuple[str, list[tuple[str, str, dict[str, Any]]], list[Any], AdmissionRequest, str]] = [
    ("no policy at all", [], [], ask("r"), "admitted"),
    ("default max_gpus", [("default", "*", {"max_gpus": 2})], [], ask("r", gpus=3), "max_gpus"),
    ("most generous group wins", [("group", "ml", {"max_gpus": 2}), ("group", "vision", {"max_gpus": 4})],
     [], ask("r", gpus=3), "admitted"),
    ("group of someone else", [("group", "other", {"max_gpus": 8}), ("default", "*", {"max_gpus": 1})],
     [], ask("r", gpus=2), "max_gpus"),
    ("user override below group", [("group", "ml", {"max_gpus": 4}), ("user", "alice", {"max_gpus": 1})],
     [], ask("r", gpus=2), "max_gpus"),
    ("usage counts", [("user", "alice", {"max_gpus": 3})], [ask("e1", gpus=2)], ask("r", gpus=2), "max_gpus"),
    ("usage fits exactly", [("user", "alice", {"max_gpus": 4})], [ask("e1", gpus=2)], ask("r", gpus=2), "admitted"),
    ("sweep shape", [("default", "*", {"max_gpus": 3})], [], ask("r", gpus=2, concurrency=2), "max_gpus"),
    ("pool not allowed", [("default", "*", {"allowed_pools": ["a100"]})], [], ask("r", pool="h100"),
     "allowed_pools"),
    ("group pools replace the default", [("default", "*", {"allowed_pools": ["a100"]}),
                                         ("group", "vision", {"allowed_pools": ["h100"]})],
     [], ask("r", pool="h100"), "admitted"),
    ("union of group pools", [("group", "ml", {"allowed_pools": ["a100"]}),
                              ("group", "vision", {"allowed_pools": ["h100"]})], [], ask("r", pool="a100"),
     "admitted"),
    ("user allows no pool", [("user", "alice", {"allowed_pools": []})], [], ask("r"), "allowed_pools"),
    ("size per run", [("user", "alice", {"max_gpus_per_run": 2})], [], ask("r", gpus=3), "max_gpus_per_run"),
    ("runs at once", [("user", "alice", {"max_runs": 1})], [ask("e1")], ask("r"), "max_runs"),
    ("budget spent", [("user", "alice", {"gpu_hours_budget": 1.0})],
     [ask("e1", estimated_seconds=60, ttl=7200), "+1800s", "release"], ask("r", estimated_seconds=1801), "gpu_hours_budget"),
    ("budget met exactly", [("user", "alice", {"gpu_hours_budget": 1.0})],
     [ask("e1", estimated_seconds=60, ttl=7200), "+1800s", "release"], ask("r", estimated_seconds=1800), "admitted"),
    ("running leases count to the budget", [("user", "alice", {"gpu_hours_budget": 1.0})],
     [ask("e1", ttl=7200), "+2700s"], ask("r", estimated_seconds=1000), "gpu_hours_budget"),
    ("old use leaves a short window", [("user", "alice", {"gpu_hours_budget": 1.0, "window_hours": 1.0})],
     [ask("e1", estimated_seconds=60, ttl=7200), "+3000s", "release", "+5400s"], ask("r", estimated_seconds=3000),
     "admitted"),
    ("no GPUs, no budget needed", [("user", "alice", {"gpu_hours_budget": 0.0})], [], ask("r", gpus=0), "admitted"),
    ("a known request id", [], [ask("r")], ask("r"), "replayed"),
    ("an overdue lease is reclaimed first", [("user", "alice", {"max_gpus": 1})], [ask("e1", ttl=60), "+600s"],
     ask("r"), "admitted"),
]


@pytest.fixture
def engines(postgres_url: str, tmp_path: Path) -> Iterator[dict[str, Engine]]:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'q.sqlite'}")
    postgres = make_engine(postgres_url)
    drop_quota_schema(postgres)
    for engine in (sqlite, postgres):
        upgrade_database(engine)
    yield {"sqlite": sqlite, "postgresql": postgres}
    for engine in (sqlite, postgres):
        engine.dispose()


def _play(engine: Engine, policies: list[tuple[str, str, dict[str, Any]]], before: list[Any],
          request: AdmissionRequest) -> dict[str, Any]:
    clock = Clock()
    store = QuotaStore(engine, clock=clock)
    for kind, name, fields in policies:
        set_policy(store, "admin", kind, name, fields)
    last = None
    for step in before:
        if step == "release":
            store.release(ALICE, last)
        elif isinstance(step, str):
            clock.now += timedelta(seconds=float(step.strip("+s")))
        else:
            lease = store.admit(ALICE, step).lease
            assert lease is not None, f"setup request {step.request_id} refused"
            last = lease["id"]
    answer = store.admit(ALICE, request)
    if answer.refusal is not None:
        return {"outcome": answer.refusal.limit, "refusal": answer.refusal.to_dict()}
    lease = {key: value for key, value in (answer.lease or {}).items() if key != "id"}
    return {"outcome": "replayed" if answer.replayed else "admitted", "lease": lease}


@pytest.mark.parametrize(("case", "policies", "before", "request_", "expected"), CASES, ids=[c[0] for c in CASES])
def test_postgres_decides_as_the_python_check(engines: dict[str, Engine], monkeypatch: pytest.MonkeyPatch, case: str,
                                              policies: Any, before: Any, request_: AdmissionRequest,
                                              expected: str) -> None:
    outcomes: list[str] = []
    decide = group_ops.decide_batch

    def spy(*args: Any) -> list[dict[str, Any]]:
        answers = decide(*args)
        outcomes.extend(answer["outcome"] for answer in answers)
        return answers

    monkeypatch.setattr(group_ops, "decide_batch", spy)
    python = _play(engines["sqlite"], policies, before, request_)
    postgres = _play(engines["postgresql"], policies, before, request_)
    assert python["outcome"] == expected, python
    assert postgres == python
    # the last request was decided in the server (or, with a lease to reclaim, handed back to Python)
    assert outcomes[-1] == ("slow" if "overdue" in case else {"replayed": "known"}.get(expected, expected)
                            if expected in ("admitted", "replayed") else "refused")


def test_migration_0003_creates_the_functions_and_downgrades_without_them(engines: dict[str, Engine]) -> None:
    engine = engines["postgresql"]
    functions = "SELECT count(*) FROM pg_proc WHERE proname IN ('quota_step', 'quota_admit_batch')"
    with engine.connect() as conn:
        assert conn.exec_driver_sql(functions).scalar() == 2
    downgrade_database(engine, "0002")
    with engine.connect() as conn:
        assert conn.exec_driver_sql(functions).scalar() == 0
    upgrade_database(engine)  # and back: the store works again
    assert QuotaStore(engine).admit(ALICE, ask("after")).lease is not None


@pytest.mark.parametrize(("now", "hours"), [
    (datetime(2026, 3, 10, 12, 0, 0), 168.0),  # the window starts on a whole hour
    (datetime(2026, 3, 10, 12, 0, 0, 1), 168.0),  # a microsecond into the hour: the next one is the first whole
    (datetime(2026, 3, 10, 12, 59, 59, 999999), 1.0),
    (datetime(2026, 3, 10, 12, 30, 0), 0.5),
    (datetime(2026, 3, 10, 12, 10, 0), 1.25),
    (datetime(2026, 3, 10, 0, 0, 0), None),  # no policy sets it: the default window
])
def test_the_window_s_edges_are_the_same_in_python_and_in_the_server(engines: dict[str, Engine], now: datetime,
                                                                      hours: float | None) -> None:
    edges = window_edges_plpgsql("now_", "hours", "since", "first_whole")
    function = (f"CREATE FUNCTION pg_temp.edges(now_ timestamp, hours double precision) RETURNS timestamp[] "
                f"LANGUAGE plpgsql AS $$ DECLARE since timestamp; first_whole timestamp; BEGIN\n      {edges}\n"
                f"      RETURN ARRAY[since, first_whole]; END $$")
    with engines["postgresql"].connect() as conn:
        conn.exec_driver_sql(function)
        found = conn.exec_driver_sql("SELECT pg_temp.edges(%(now)s, %(hours)s)", {"now": now, "hours": hours}).scalar()
    assert tuple(found) == window_edges(now, DEFAULT_WINDOW_HOURS if hours is None else hours)


def _ledger_of_a_day(engine: Engine) -> list[tuple[Any, ...]]:
    """Admit, refuse, replay, heartbeat, release twice and let a lease expire; the ledger (lease ids as
    their request ids: they are random)."""
    clock = Clock()
    store = QuotaStore(engine, clock=clock)
    set_policy(store, "admin", "user", "alice", {"max_gpus": 2, "gpu_hours_budget": 10})
    first = store.admit(ALICE, ask("a", estimated_seconds=60)).lease
    second = store.admit(ALICE, ask("b", ttl=30)).lease
    assert first is not None and second is not None
    assert store.admit(ALICE, ask("c")).refusal is not None
    assert store.admit(ALICE, ask("a", estimated_seconds=60)).replayed
    clock.now += timedelta(seconds=20)
    store.heartbeat(ALICE, first["id"])
    store.release(ALICE, first["id"], gpu_seconds=7.25)
    store.release(ALICE, first["id"])
    clock.now += timedelta(seconds=3600)
    assert store.admit(ALICE, ask("d", gpus=2)).lease is not None  # after reclaiming "b"
    ids = {first["id"]: "a", second["id"]: "b"}
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT at, event, actor, \"user\", lease_id, request_id, label, pool, gpus_total, "
                                    "gpu_seconds, detail FROM quota_ledger WHERE event <> 'policy' ORDER BY id").all()
    text_json = engine.dialect.name == "sqlite"  # psycopg parses a json column itself
    return [(*row[:4], ids.get(row[4], row[4] and "new"), *row[5:10],
             json.loads(row[10]) if text_json and row[10] is not None else row[10]) for row in rows]


def test_the_ledger_reads_the_same_written_by_postgres_or_by_python(engines: dict[str, Engine]) -> None:
    ledgers = {name: _ledger_of_a_day(engine) for name, engine in engines.items()}
    assert [row[1] for row in ledgers["sqlite"]] == ["admitted", "admitted", "refused", "released", "expired",
                                                     "admitted"]
    at = {name: [datetime.fromisoformat(str(row[0])) for row in rows] for name, rows in ledgers.items()}
    assert at["sqlite"] == at["postgresql"]
    assert [row[1:] for row in ledgers["sqlite"]] == [row[1:] for row in ledgers["postgresql"]]
