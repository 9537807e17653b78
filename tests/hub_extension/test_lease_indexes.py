"""Postgres reads of a user's leases stay bounded by their active leases before any ``ANALYZE``.

A new database has no statistics until autovacuum runs; a plan kept by a connection then must not
read a user's whole history. Each read of the admission path runs as a generic plan (what plpgsql
keeps) against a never-analyzed table holding many ended leases of the user, and may touch no more
rows than the user's active leases and the one it looks for (migration 0004's partial indexes).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg.sql import Literal
from sqlalchemy import Engine

from hub_extension.db import downgrade_database, make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.driver_sql import STATEMENTS

NOW = datetime(2026, 3, 10, 12, 0, 0)
ENDED, ACTIVE = 300, 3

# (read, its parameters): each names its parameters as the store does
READS: list[tuple[str, dict[str, Any]]] = [
    ("active_or_known", {"user": "alice", "request_id": "new"}),
    ("active_of_user", {"user": "alice"}),
    ("overdue_of_user", {"user": "alice", "now": NOW}),
    ("ended_since", {"user": "alice", "since": NOW - timedelta(minutes=30), "first_whole_hour": NOW}),
]


@pytest.fixture
def history(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    drop_quota_schema(engine)
    upgrade_database(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO quota_leases SELECT 'lease-' || i, 'alice', '[]', 'r' || i, '', 'a100', 1, 1, 1, 60, 120, "
            "CASE WHEN i < %(active)s THEN 'active' ELSE 'released' END, %(t)s, %(t)s, "
            "CASE WHEN i < %(active)s THEN NULL ELSE %(t)s - interval '2 hours' END, 60 "
            "FROM generate_series(0, %(n)s - 1) i", {"active": ACTIVE, "n": ACTIVE + ENDED, "t": NOW})
    yield engine
    engine.dispose()


def _rows_touched(plan: dict[str, Any]) -> int:
    """Rows the plan's scans returned or threw away, over the whole tree."""
    own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0) if "Scan" in plan["Node Type"] else 0
    return own + sum(_rows_touched(child) for child in plan.get("Plans", []))


def _generic_plan(engine: Engine, read: str, params: dict[str, Any]) -> dict[str, Any]:
    names = list(dict.fromkeys(re.findall(r"(?<![:\w]):(\w+)", STATEMENTS[read])))
    sql = re.sub(r"(?<![:\w]):(\w+)", lambda m: f"${names.index(m[1]) + 1}", STATEMENTS[read])
    with engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")  # what a kept plan is
        types = ", ".join("timestamp" if isinstance(params[name], datetime) else "text" for name in names)
        conn.exec_driver_sql(f"PREPARE read ({types}) AS {sql}")
        # EXPLAIN takes no bound parameters: the test's own values, quoted by psycopg
        values = ", ".join(Literal(params[name]).as_string(conn.connection.driver_connection) for name in names)
        found = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE read ({values})").scalar()
    plan = found if isinstance(found, list) else json.loads(found)
    return plan[0]["Plan"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("read", "params"), READS, ids=[read for read, _ in READS])
def test_an_unanalyzed_table_is_read_only_where_the_user_s_active_leases_are(
        history: Engine, read: str, params: dict[str, Any]) -> None:
    touched = _rows_touched(_generic_plan(history, read, params))
    assert touched <= ACTIVE + 1, f"{read} read {touched} rows of a user with {ACTIVE} active leases"


def test_migration_0004_downgrades_to_whole_indexes(history: Engine) -> None:
    partial = "SELECT count(*) FROM pg_indexes WHERE tablename = 'quota_leases' AND indexdef LIKE '%% WHERE %%'"
    with history.connect() as conn:
        assert conn.exec_driver_sql(partial).scalar() == 2
    downgrade_database(history, "0003")
    with history.connect() as conn:
        assert conn.exec_driver_sql(partial).scalar() == 0


def _waiting_backends(engine: Engine) -> int:
    """Backends of this database waiting for a lock (the migration, once it waits for the writer)."""
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'").scalar() or 0


@pytest.mark.parametrize("direction", ["upgrade", "downgrade"])
def test_migration_0004_lets_an_old_replica_keep_writing_leases(history: Engine, direction: str) -> None:
    if direction == "upgrade":
        downgrade_database(history, "0003")
    migrate = (lambda: upgrade_database(history, "0004")) if direction == "upgrade" else (
        lambda: downgrade_database(history, "0003"))
    insert = ("INSERT INTO quota_leases VALUES (%(id)s, 'bob', '[]', %(id)s, '', 'a100', 1, 1, 1, 60, 120, "
              "'active', %(t)s, %(t)s, NULL, NULL)")
    # the pool outermost: on a failure the writers roll back first, and the migration can end
    with ThreadPoolExecutor(1) as pool, history.connect() as first, history.connect() as second:
        first.exec_driver_sql(insert, {"id": "mid-admission", "t": NOW})  # an old replica's open transaction
        migrating = pool.submit(migrate)
        deadline = time.monotonic() + 30
        while not _waiting_backends(history) and time.monotonic() < deadline and not migrating.done():
            time.sleep(0.05)
        assert not migrating.done(), migrating.exception()
        # the next admission of the old replica, while the migration waits for the first one
        second.exec_driver_sql("SET lock_timeout = '3s'")
        second.exec_driver_sql(insert, {"id": "next-admission", "t": NOW})
        second.commit()
        first.commit()
        migrating.result(timeout=60)
    with history.connect() as conn:
        partial = conn.exec_driver_sql("SELECT indexname FROM pg_indexes WHERE tablename = 'quota_leases' "
                                       "AND indexdef LIKE '%% WHERE %%' ORDER BY 1").scalars().all()
        invalid = conn.exec_driver_sql("SELECT count(*) FROM pg_index WHERE NOT indisvalid").scalar()
    assert partial == (["ix_quota_leases_user_ended_at", "ix_quota_leases_user_status"]
                       if direction == "upgrade" else [])
    assert invalid == 0
