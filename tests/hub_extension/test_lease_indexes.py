"""Postgres reads of a user's leases stay bounded by their active leases before any ``ANALYZE``.

A new database has no statistics until autovacuum runs; a plan kept by a connection then must not
read a user's whole history. Each read of the admission path runs as a generic plan (what plpgsql
keeps) against a never-analyzed table holding many ended leases of the user, and may touch no more
rows than the user's active leases and the one it looks for (migration 0004's partial indexes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
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
