"""The bounded GPU-hour window (hourly usage rows + the first partial hour), migration 0002, group commit."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, select, text

from hub_extension.admin import set_policy
from hub_extension.db import downgrade_database, make_engine, upgrade_database
from hub_extension.errors import LeaseNotFound
from hub_extension.group_commit import GroupCommit
from hub_extension.models import Base, Lease, UsageHour
from hub_extension.store import AdmissionRequest, Caller, QuotaStore

NOW = datetime(2026, 3, 10, 12, 34, 56, 789000)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _ended_lease(i: int, user: str, ended: datetime, gpu_seconds: float) -> dict[str, object]:
    return {
        "id": f"lease-old-{i}", "user": user, "groups": [], "request_id": f"old-{i}", "label": "", "pool": "default",
        "gpus": 1, "concurrency": 1, "gpus_total": 1, "estimated_seconds": 60.0, "ttl_seconds": 60.0,
        "status": "released" if i % 3 else "expired", "created_at": ended - timedelta(seconds=gpu_seconds),
        "expires_at": ended, "ended_at": ended, "gpu_seconds": gpu_seconds,
    }


def _history(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    return [_ended_lease(i, rng.choice(["alice", "bob"]), NOW - timedelta(seconds=rng.uniform(0, 400 * 3600)),
                         round(rng.uniform(1, 7200), 3)) for i in range(count)]


def _wait_for_queue(writes: GroupCommit, length: int) -> None:
    deadline = time.monotonic() + 30
    while len(writes._queue) < length:
        assert time.monotonic() < deadline, f"only {len(writes._queue)} of {length} operations queued"
        time.sleep(0.01)


def _join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads), "an operation never got its result"


def _brute_force(history: list[dict[str, object]], user: str, since: datetime) -> float:
    return sum(float(h["gpu_seconds"]) for h in history if h["user"] == user and h["ended_at"] >= since)  # type: ignore[operator, arg-type]


@pytest.fixture
def old_database(tmp_path: Path) -> Engine:
    """A database at revision 0001 holding 600 ended leases of alice and bob over ~17 days."""
    engine = make_engine(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    upgrade_database(engine, "0001")
    with engine.begin() as conn:
        conn.execute(insert(Lease.__table__), _history(600, seed=7))
    yield engine
    engine.dispose()


def test_migration_0002_fills_hourly_usage_from_history_and_downgrades(old_database: Engine) -> None:
    history = _history(600, seed=7)
    upgrade_database(old_database)
    with old_database.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        rows = conn.execute(select(UsageHour.user, UsageHour.hour, UsageHour.gpu_seconds)).all()
    expected: dict[tuple[str, datetime], float] = {}
    for h in history:
        key = (str(h["user"]), h["ended_at"].replace(minute=0, second=0, microsecond=0))  # type: ignore[attr-defined]
        expected[key] = expected.get(key, 0.0) + float(h["gpu_seconds"])  # type: ignore[arg-type]
    assert {(user, hour): pytest.approx(seconds) for user, hour, seconds in rows} == expected
    upgrade_database(old_database)  # idempotent at head


    downgrade_database(old_database, "0001")
    with old_database.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        assert "quota_usage_hours" not in {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master"))}


@pytest.mark.parametrize("window_hours", [0.5, 1.0, 2.75, 24.0, 168.0, 200.0 + 1 / 3600, 1000.0])
def test_the_bounded_window_equals_summing_the_whole_history(old_database: Engine, window_hours: float) -> None:
    history = _history(600, seed=7)
    upgrade_database(old_database)
    store = QuotaStore(old_database, clock=Clock(NOW))
    for user in ("alice", "bob"):
        set_policy(store, "admin", "user", user, {"window_hours": window_hours})
        used = store.quota_for(user, ())["usage"]["gpu_hours_in_window"]
        assert used == pytest.approx(round(_brute_force(history, user, NOW - timedelta(hours=window_hours)) / 3600, 4))


def test_releases_and_expiries_are_charged_to_their_hour_and_refuse_over_budget(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 3, 10, 11, 59, 0))
    engine = make_engine(f"sqlite:///{tmp_path / 'q.sqlite'}")
    upgrade_database(engine)
    store = QuotaStore(engine, default_ttl_seconds=60, clock=clock)
    alice = Caller(name="alice")
    set_policy(store, "admin", "user", "alice", {"gpu_hours_budget": 1.0, "window_hours": 1.0})
    ask = lambda rid, gpus=1: AdmissionRequest(  # noqa: E731
        gpus=gpus, pool="default", concurrency=1, estimated_seconds=60, request_id=rid)
    first = store.admit(alice, ask("a", gpus=2)).lease
    clock.now += timedelta(seconds=120)  # 12:01: crosses the hour; expired at 12:00 after 2 × 60 s
    assert store.reclaim_expired() == 1
    second = store.admit(alice, ask("b")).lease
    clock.now += timedelta(seconds=30)
    store.release(alice, second["id"], gpu_seconds=20)
    with engine.connect() as conn:
        hours = dict(conn.execute(select(UsageHour.hour, UsageHour.gpu_seconds).where(UsageHour.user == "alice")).all())
    assert hours == {datetime(2026, 3, 10, 12): pytest.approx(120 + 20)}
    assert store.quota_for("alice", ())["usage"]["gpu_hours_in_window"] == pytest.approx(140 / 3600, abs=1e-4)
    refused = store.admit(alice, AdmissionRequest(gpus=60, pool="default", concurrency=1,
                                                  estimated_seconds=3600, request_id="c"))
    assert refused.refusal is not None and refused.refusal.limit == "gpu_hours_budget"
    assert first["id"] != second["id"]
    engine.dispose()


def test_a_failing_operation_does_not_spoil_the_others_in_its_transaction(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'g.sqlite'}")
    upgrade_database(engine)
    store = QuotaStore(engine)
    bob = Caller(name="bob")
    set_policy(store, "admin", "user", "bob", {"max_gpus": 3})
    gate, running, results, errors = threading.Event(), threading.Event(), [], []

    def hold_the_lock() -> None:  # while this runs, the others queue up and then share one transaction
        store._writes.run(lambda conn: (running.set(), gate.wait(5)))

    def admit(i: int) -> None:
        results.append(store.admit(bob, AdmissionRequest(gpus=1, pool="default", concurrency=1,
                                                         estimated_seconds=60, request_id=f"r{i}")))

    def bad_release() -> None:
        try:
            store.release(bob, "lease-nobody")
        except LeaseNotFound as exc:
            errors.append(exc)

    commits: list[object] = []
    begin = store._writes.begin

    @contextmanager
    def counted() -> Iterator[object]:
        with begin() as sql:
            yield sql
        commits.append(sql)  # reached only when the transaction committed

    store._writes.begin = counted
    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert running.wait(10)  # the holder's transaction runs: whatever comes now waits for the next one
    workers = [threading.Thread(target=admit, args=(i,), daemon=True) for i in range(6)] + [
        threading.Thread(target=bad_release, daemon=True)]
    for t in workers:
        t.start()
    _wait_for_queue(store._writes, len(workers))
    gate.set()
    _join_all([holder, *workers])
    assert len(errors) == 1 and sum(r.lease is not None for r in results) == 3
    assert len(commits) == 2  # the holder's transaction, then one shared by all seven
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM quota_leases WHERE status = 'active'")).scalar() == 3
    engine.dispose()


def test_a_database_error_reruns_the_batch_one_by_one(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'e.sqlite'}")
    lock, gate, out = threading.Lock(), threading.Event(), {}
    writes = GroupCommit(engine.begin, lock=lock)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (k INTEGER PRIMARY KEY)"))

    def put(k: int) -> None:
        try:
            out[k] = writes.run(lambda conn: conn.execute(text(f"INSERT INTO t VALUES ({k % 4})")).rowcount)
        except Exception as exc:  # the duplicate key
            out[k] = type(exc).__name__

    running = threading.Event()
    holder = threading.Thread(target=lambda: writes.run(lambda conn: (running.set(), gate.wait(5))), daemon=True)
    holder.start()
    assert running.wait(10)
    threads = [threading.Thread(target=put, args=(k,), daemon=True) for k in (1, 2, 5)]  # 5 % 4 == 1: a duplicate
    for t in threads:
        t.start()
    _wait_for_queue(writes, len(threads))
    gate.set()
    _join_all([holder, *threads])
    assert sorted(map(str, out.values())) == ["1", "1", "IntegrityError"]
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT k FROM t")).scalars()) == [1, 2]
    engine.dispose()


def test_a_thread_waiting_behind_an_admin_write_is_woken_when_it_ends(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.sqlite'}")
    upgrade_database(engine)
    store = QuotaStore(engine)
    results: list[object] = []
    with store._write():  # an admin write holds the mutex the first group commit shares
        waiter = threading.Thread(target=lambda: results.append(store.admit(Caller(name="bob"), AdmissionRequest(
            gpus=1, pool="default", concurrency=1, estimated_seconds=60, request_id="r"))), daemon=True)
        waiter.start()
        _wait_for_queue(store._writes, 1)
    _join_all([waiter])  # nobody polls: letting go of the lock handed the waiting thread its turn
    assert len(results) == 1
    engine.dispose()
