"""The admin usage overview: right with a long history in the database, and not slower for it."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert

from hub_extension.admin import set_policy, usage_overview
from hub_extension.db import make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.models import Lease, UsageHour
from hub_extension.store import AdmissionRequest, Caller, QuotaStore, hour_start

NOW = datetime(2026, 3, 10, 12, 34, 56, 789000)
GROUPS = {"alice": ["ml"], "bob": ["ml", "vision"], "carol": [], "dave": ["vision"]}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _ended(i: int, user: str, ended: datetime, gpu_seconds: float, groups: list[str]) -> dict[str, Any]:
    return {
        "id": f"lease-old-{i}", "user": user, "groups": groups, "request_id": f"old-{i}", "label": "",
        "pool": "default", "gpus": 1, "concurrency": 1, "gpus_total": 1, "estimated_seconds": 60.0,
        "ttl_seconds": 60.0, "status": "released" if i % 3 else "expired",
        "created_at": ended - timedelta(seconds=gpu_seconds), "expires_at": ended, "ended_at": ended,
        "gpu_seconds": gpu_seconds,
    }


def _history(count: int, seed: int, *, hours_back: tuple[float, float], first_id: int = 0) -> list[dict[str, Any]]:
    """Ended leases; a user's groups changed over time (the latest lease's groups are the current ones)."""
    rng = random.Random(seed)
    out = []
    for i in range(first_id, first_id + count):
        user = rng.choice(["alice", "bob", "carol"])
        ended = NOW - timedelta(hours=rng.uniform(*hours_back))
        out.append(_ended(i, user, ended, round(rng.uniform(1, 7200), 3), GROUPS[user] if i % 2 else ["old"]))
    return out


def _write_history(engine: Engine, leases: list[dict[str, Any]]) -> None:
    """Leases and the hourly rows the store would have written when they ended."""
    hours: dict[tuple[str, datetime], float] = defaultdict(float)
    for lease in leases:
        hours[lease["user"], hour_start(lease["ended_at"])] += lease["gpu_seconds"]
    with engine.begin() as conn:
        conn.execute(insert(Lease.__table__), leases)
        existing = {(u, h) for u, h in conn.execute(UsageHour.__table__.select().with_only_columns(
            UsageHour.user, UsageHour.hour))}
        new = [{"user": u, "hour": h, "gpu_seconds": s} for (u, h), s in hours.items() if (u, h) not in existing]
        assert len(new) == len(hours), "history batches must not share an hour"
        conn.execute(insert(UsageHour.__table__), new)


def _expected(history: list[dict[str, Any]], live: list[dict[str, Any]], window_hours: float) -> dict[str, Any]:
    """What the overview must say, summed from every lease (the brute force the store avoids)."""
    since = NOW - timedelta(hours=window_hours)
    users: dict[str, dict[str, Any]] = {}
    for lease in live:
        row = users.setdefault(lease["user"], {"gpus_in_use": 0, "runs_active": 0, "seconds": 0.0, "groups": set()})
        row["gpus_in_use"] += lease["gpus_total"]
        row["runs_active"] += 1
        row["seconds"] += lease["gpus_total"] * (NOW - lease["created_at"]).total_seconds()
        row["groups"] |= set(lease["groups"])
    latest: dict[str, dict[str, Any]] = {}
    for lease in history:
        if lease["ended_at"] < since:
            continue
        row = users.setdefault(lease["user"], {"gpus_in_use": 0, "runs_active": 0, "seconds": 0.0, "groups": set()})
        row["seconds"] += lease["gpu_seconds"]
        if lease["user"] not in latest or lease["ended_at"] > latest[lease["user"]]["ended_at"]:
            latest[lease["user"]] = lease
    for user, lease in latest.items():
        users[user]["groups"] |= set(lease["groups"])
    return {user: {"gpus_in_use": row["gpus_in_use"], "runs_active": row["runs_active"],
                   "gpu_hours_in_window": round(row["seconds"] / 3600, 4), "groups": sorted(row["groups"])}
            for user, row in sorted(users.items())}


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    upgrade_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Engine:
    """A migrated, empty quota database of each dialect (the overview's SQL is written by hand)."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'quotas.sqlite'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
        drop_quota_schema(engine)
    upgrade_database(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("window_hours", [0.5, 2.75, 24.0, 168.0, 1000.0])
def test_the_overview_equals_summing_every_lease(any_engine: Engine, window_hours: float) -> None:
    engine = any_engine
    history = _history(800, seed=11, hours_back=(0.01, 500))
    history.append(_ended(9999, "dave", NOW - timedelta(hours=3000), 3600.0, GROUPS["dave"]))  # long gone
    _write_history(engine, history)
    store = QuotaStore(engine, default_ttl_seconds=600, clock=Clock(NOW - timedelta(minutes=5)))
    set_policy(store, "admin", "default", "*", {"max_gpus": 100})
    live = []
    for user, gpus in (("alice", 2), ("erin", 1)):
        groups = tuple(GROUPS.get(user, ["ml"]))
        lease = store.admit(Caller(name=user, groups=groups), AdmissionRequest(
            gpus=gpus, pool="default", concurrency=1, estimated_seconds=60, request_id=f"live-{user}")).lease
        assert lease is not None
        live.append({"user": user, "gpus_total": gpus, "created_at": store.clock(), "groups": groups})
    store.clock = Clock(NOW)

    overview = usage_overview(store, window_hours)

    expected = _expected(history, live, window_hours)
    assert {u: {k: pytest.approx(v, abs=2e-4) if k == "gpu_hours_in_window" else v for k, v in row.items()}
            for u, row in expected.items()} == overview["users"]
    assert "dave" not in overview["users"]
    for group, totals in overview["groups"].items():
        members = [u for u, row in expected.items() if group in row["groups"]]
        assert totals["users"] == members
        assert totals["gpus_in_use"] == sum(expected[u]["gpus_in_use"] for u in members)
        assert totals["gpu_hours_in_window"] == pytest.approx(
            sum(expected[u]["gpu_hours_in_window"] for u in members), abs=1e-3)


def test_the_overview_does_not_grow_with_history(engine: Engine) -> None:
    steps = [0]

    @event.listens_for(engine, "connect")
    def _count(dbapi_connection: Any, _record: Any) -> None:
        def tick() -> int:
            steps[0] += 1
            return 0

        dbapi_connection.set_progress_handler(tick, 100)  # one tick per 100 SQLite VM instructions

    engine.dispose()  # connections from now on count
    _write_history(engine, _history(300, seed=3, hours_back=(0.01, 150)))
    store = QuotaStore(engine, clock=Clock(NOW))

    def cost() -> int:
        steps[0] = 0
        usage_overview(store, 168.0)
        return steps[0]

    recent = cost()
    _write_history(engine, _history(20_000, seed=4, hours_back=(200, 9000), first_id=100_000))
    assert cost() < 1.5 * recent + 10, "the overview reads history outside its window"
