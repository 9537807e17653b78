"""The store without a hub: migrations, append-only ledger, atomic admission in threads and processes, expiry."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc, text

from hub_extension.admin import ledger_page, set_policy, usage_overview
from hub_extension.db import alembic_config, make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.errors import LeaseGone, LeaseNotFound, RequestIdConflict
from hub_extension.models import Base
from hub_extension.store import AdmissionRequest, Caller, QuotaStore

ALICE = Caller(name="alice", groups=("ml",))


def request(rid: str, gpus: int = 1, **kw: object) -> AdmissionRequest:
    return AdmissionRequest(gpus=gpus, pool="default", concurrency=1, estimated_seconds=60, request_id=rid, **kw)  # type: ignore[arg-type]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'quotas.sqlite'}"


@pytest.fixture
def store(db_url: str) -> QuotaStore:
    engine = make_engine(db_url)
    upgrade_database(engine)
    yield QuotaStore(engine)
    engine.dispose()


def test_migrations_create_exactly_the_model_schema_and_rerun_cleanly(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade_database(engine)
    upgrade_database(engine)  # the service runs this at every start
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
    engine.dispose()


def test_ledger_is_append_only_in_the_database(store: QuotaStore) -> None:
    store.admit(ALICE, request("r1"))
    for statement in ("UPDATE quota_ledger SET user = 'mallory'", "DELETE FROM quota_ledger"):
        with store.engine.begin() as conn, pytest.raises(exc.DatabaseError, match="append-only"):
            conn.execute(text(statement))
    assert [e["event"] for e in ledger_page(store)] == ["admitted"]


def test_fifty_threads_against_quota_four_admit_exactly_four_every_time(store: QuotaStore) -> None:
    set_policy(store, "admin", "user", "alice", {"max_gpus": 4})
    for round_no in range(10):
        results = []
        barrier = threading.Barrier(50)

        def ask(rid: str, barrier: threading.Barrier, results: list) -> None:
            barrier.wait()
            results.append(store.admit(ALICE, request(rid)))

        threads = [threading.Thread(target=ask, args=(f"t{round_no}-{i}", barrier, results)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted = [r.lease for r in results if r.lease]
        assert len(admitted) == 4, f"round {round_no}: {len(admitted)} admitted"
        assert all(r.refusal.limit == "max_gpus" for r in results if r.refusal)
        for lease in admitted:
            store.release(ALICE, lease["id"], 1.0)


def _admit_in_process(db_url: str, tag: str, n: int, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:
    store = QuotaStore(make_engine(db_url))  # its own process: only BEGIN IMMEDIATE stands between them
    start.wait()
    admitted = 0
    for i in range(n):
        admitted += store.admit(ALICE, request(f"{tag}-{i}")).lease is not None
    out.put(admitted)


@pytest.mark.slow
def test_separate_processes_sharing_the_sqlite_file_never_over_admit(store: QuotaStore, db_url: str) -> None:
    set_policy(store, "admin", "user", "alice", {"max_gpus": 3})
    ctx = multiprocessing.get_context("spawn")
    for round_no in range(2):
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_admit_in_process, args=(db_url, f"p{round_no}-{k}", 10, start, out)) for k in range(4)]
        for p in procs:
            p.start()
        start.set()
        total = sum(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
        assert total == 3, f"round {round_no}: {total} admitted across processes"
        for lease in store.quota_for("alice", ("ml",))["leases"]:
            store.release(ALICE, lease["id"])


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, 0)

    def __call__(self) -> datetime:
        return self.now


def test_expired_leases_are_reclaimed_charged_and_cannot_be_revived(db_url: str) -> None:
    clock = Clock()
    engine = make_engine(db_url)
    upgrade_database(engine)
    store = QuotaStore(engine, default_ttl_seconds=60, clock=clock)
    set_policy(store, "admin", "user", "alice", {"max_gpus": 2})
    first = store.admit(ALICE, request("a", gpus=2)).lease
    assert store.admit(ALICE, request("b")).refusal is not None
    clock.now += timedelta(seconds=30)
    store.heartbeat(ALICE, first["id"])  # alive: extended to t+90
    clock.now += timedelta(seconds=50)
    assert store.admit(ALICE, request("c")).refusal is not None  # still held at t+80
    clock.now += timedelta(seconds=200)  # the run died: no heartbeat since t+30
    assert store.reclaim_expired() == 1
    assert store.admit(ALICE, request("d", gpus=2)).lease is not None
    with pytest.raises(LeaseGone, match="expired"):
        store.heartbeat(ALICE, first["id"])
    events = [e for e in ledger_page(store, user="alice") if e["lease_id"] == first["id"]]
    assert [e["event"] for e in events] == ["expired", "admitted"]
    assert events[0]["gpu_seconds"] == pytest.approx(2 * 90)  # held until its last expiry
    assert usage_overview(store)["users"]["alice"]["gpus_in_use"] == 2
    engine.dispose()


def test_idempotent_request_ids_and_ownership(store: QuotaStore) -> None:
    one = store.admit(ALICE, request("same"))
    again = store.admit(ALICE, request("same"))
    assert again.replayed and again.lease["id"] == one.lease["id"]
    with pytest.raises(RequestIdConflict, match="already used"):
        store.admit(ALICE, request("same", gpus=3))
    bob = Caller(name="bob")
    assert store.admit(bob, request("same")).lease["id"] != one.lease["id"]  # ids are per user
    with pytest.raises(LeaseNotFound):
        store.release(bob, one.lease["id"])
    released = store.release(ALICE, one.lease["id"], gpu_seconds=10**9)
    assert released["status"] == "released" and released["gpu_seconds"] < 60  # capped at wall time × GPUs
    assert store.release(ALICE, one.lease["id"])["gpu_seconds"] == released["gpu_seconds"]


@pytest.fixture
def pg_store(postgres_url: str) -> QuotaStore:
    engine = make_engine(postgres_url, pool_size=60, max_overflow=10)
    drop_quota_schema(engine)  # the session's Postgres may hold another test's schema
    upgrade_database(engine)
    yield QuotaStore(engine)
    engine.dispose()


@pytest.mark.slow
def test_postgres_row_locks_alone_admit_exactly_four_of_fifty(pg_store: QuotaStore) -> None:
    with pg_store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    # prove the row lock, not the process's mutex: ten stores (as ten replicas) share the database,
    # each with its own group commits and connections, five threads each
    replicas = [pg_store, *(QuotaStore(pg_store.engine) for _ in range(9))]
    set_policy(pg_store, "admin", "user", "alice", {"max_gpus": 4})
    for round_no in range(10):
        results: list = []
        barrier = threading.Barrier(50)

        def ask(rid: str, barrier: threading.Barrier, results: list) -> None:
            barrier.wait()
            results.append(replicas[int(rid.rsplit("-", 1)[1]) % 10].admit(ALICE, request(rid)))

        threads = [threading.Thread(target=ask, args=(f"pg{round_no}-{i}", barrier, results)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        admitted = [r.lease for r in results if r.lease]
        assert len(admitted) == 4, f"round {round_no}: {len(admitted)} admitted"
        for lease in admitted:
            pg_store.release(ALICE, lease["id"])
    with pg_store.engine.begin() as conn, pytest.raises(exc.DatabaseError, match="append-only"):
        conn.execute(text("DELETE FROM quota_ledger"))


def test_users_take_the_postgres_lanes_in_turn_and_keep_theirs(pg_store: QuotaStore) -> None:
    count = 3 * len(pg_store._lanes)
    lanes = [pg_store._lane(f"user-{i}") for i in range(count)]  # any names: five users once shared two of four lanes
    assert len(pg_store._lanes) > 1 and [lanes.count(lane) for lane in pg_store._lanes] == [3] * len(pg_store._lanes)
    assert all(pg_store._lane(f"user-{i}") is lane for i, lane in enumerate(lanes))


def test_the_periodic_reclaim_runs_in_the_background_and_logs_a_failure(db_url: str,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    engine = make_engine(db_url)
    upgrade_database(engine)
    store = QuotaStore(engine, default_ttl_seconds=60, clock=clock)
    lease = store.admit(ALICE, request("a")).lease
    clock.now += timedelta(seconds=600)
    store.reclaim_in_background()  # what the service's timer calls on the event loop: it does not wait
    deadline = time.monotonic() + 20
    while [e["event"] for e in ledger_page(store, user="alice")] != ["expired", "admitted"]:
        assert time.monotonic() < deadline, "the background reclaim never expired the lease"
        time.sleep(0.05)
    assert ledger_page(store, user="alice")[0]["lease_id"] == lease["id"]

    def broken(sql: object) -> int:
        raise RuntimeError("database gone")

    store._reclaim_expired = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="hub_extension.store"):
        store.reclaim_in_background()
        deadline = time.monotonic() + 20
        while "database gone" not in caplog.text:
            assert time.monotonic() < deadline, "a failed reclaim was not logged"
            time.sleep(0.05)
    engine.dispose()
