"""The admission path's driver-level SQL agrees with SQLAlchemy's view of the same rows, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub_extension.admin import set_policy
from hub_extension.db import make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.driver_sql import WriteConnection
from hub_extension.models import Lease, LedgerEntry, UsageHour
from hub_extension.store import AdmissionRequest, Caller, QuotaStore
from hub_extension.store_values import ledger_entry

# on the hour, to the microsecond: SQLite compares timestamps as text, so ".000000" must be written too
START = datetime(2026, 3, 10, 12, 0, 0)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def ask(rid: str, gpus: int = 1, pool: str = "a100", estimated_seconds: float = 60) -> AdmissionRequest:
    return AdmissionRequest(gpus=gpus, pool=pool, concurrency=1, estimated_seconds=estimated_seconds, request_id=rid)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'd.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    if request.param == "postgresql":
        drop_quota_schema(engine)
    upgrade_database(engine)
    yield engine
    engine.dispose()


def test_rows_written_on_the_driver_read_back_the_same_through_sqlalchemy(engine: Engine) -> None:
    clock = Clock(START)
    store = QuotaStore(engine, clock=clock)
    alice = Caller(name="alice", groups=("ml", "vision"))
    set_policy(store, "admin", "group", "ml", {"max_gpus": 2, "allowed_pools": ["a100", "h100"]})
    lease = store.admit(alice, ask("one")).lease
    assert lease is not None and lease["pool"] == "a100"  # allowed_pools (JSON) read on the driver
    refusal = store.admit(alice, ask("two", gpus=2)).refusal
    assert refusal is not None and refusal.limit == "max_gpus"
    clock.now += timedelta(seconds=30)
    released = store.release(alice, lease["id"], gpu_seconds=12.5)
    with Session(engine) as session:
        row = session.get(Lease, lease["id"])
        assert row is not None
        assert (row.groups, row.created_at, row.expires_at, row.ended_at) == (
            ["ml", "vision"], START, START + timedelta(seconds=120), START + timedelta(seconds=30))
        assert released["ended_at"] == row.ended_at.isoformat() + "Z" and row.gpu_seconds == 12.5
        events = {e.event: e for e in session.scalars(select(LedgerEntry).where(LedgerEntry.user == "alice"))}
        assert events["refused"].detail["limit"] == "max_gpus" and events["admitted"].detail is None
        assert events["released"].detail == {"reported_gpu_seconds": 12.5}
        assert events["admitted"].at == START
        assert session.scalars(select(UsageHour.gpu_seconds).where(UsageHour.hour == START)).all() == [12.5]
        # an ORM query with a timestamp bound finds what the driver wrote (same text form on SQLite)
        assert session.scalars(select(Lease.id).where(Lease.created_at >= START)).all() == [lease["id"]]
    quota = store.quota_for("alice", alice.groups)
    assert quota["usage"]["gpu_hours_in_window"] == pytest.approx(12.5 / 3600, abs=1e-4)
    assert quota["limits"]["allowed_pools"] == ["a100", "h100"]


def test_a_changed_window_is_read_again_not_taken_from_the_last_decision(engine: Engine) -> None:
    clock = Clock(START)
    store = QuotaStore(engine, clock=clock, default_ttl_seconds=7200, max_ttl_seconds=7200)
    bob = Caller(name="bob")
    set_policy(store, "admin", "user", "bob", {"gpu_hours_budget": 1.0})  # the default window: 168 h
    first = store.admit(bob, ask("a", pool="default")).lease
    assert first is not None
    clock.now += timedelta(hours=1)
    store.release(bob, first["id"], gpu_seconds=1800)  # half the budget, ended at 13:00
    clock.now += timedelta(hours=2)
    big = ask("b", pool="default", estimated_seconds=2700)  # 0.75 GPU-hours more: over the budget in 168 h
    assert store.admit(bob, big).refusal is not None
    set_policy(store, "admin", "user", "bob", {"gpu_hours_budget": 1.0, "window_hours": 1.0})
    assert store.admit(bob, big).lease is not None  # within 1 h the earlier use no longer counts


class _Recording:
    """The DB-API connection, with every statement its cursors execute recorded (to count them)."""

    def __init__(self, driver: Any, sent: list[str]) -> None:
        self._driver, self._sent = driver, sent

    def cursor(self) -> Any:
        return _RecordingCursor(self._driver.cursor(), self._sent)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


class _RecordingCursor:
    def __init__(self, cursor: Any, sent: list[str]) -> None:
        self._cursor, self._sent = cursor, sent

    def execute(self, query: str, *args: Any) -> Any:
        self._sent.append(query)
        return self._cursor.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def test_a_transactions_ledger_entries_go_in_one_insert_at_the_commit(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    drop_quota_schema(engine)
    upgrade_database(engine)
    sent: list[str] = []
    try:
        with WriteConnection(engine, step=True).transaction() as sql:
            sql._driver = _Recording(sql._driver, sent)
            for rid in ("first", "second"):  # ledger, write, read, ledger, write, read: as a batch of two
                sql.write("insert_ledger", ledger_entry(sql.json, START, "refused", "alice", "alice", ask(rid)))
                sql.write("lock_user", {"user": "alice"})
                assert sql.query("active_of_user", {"user": "alice"}) == []
        with engine.connect() as conn:
            written = conn.exec_driver_sql("SELECT request_id FROM quota_ledger WHERE event = 'refused' ORDER BY id")
            assert [row[0] for row in written] == ["first", "second"]
    finally:
        engine.dispose()
    assert [query.split(" (")[0] for query in sent if "quota_ledger" in query] == ["INSERT INTO quota_ledger"]
    assert sent.index(next(q for q in sent if "quota_ledger" in q)) == len(sent) - 1  # after the last read: at the commit
