"""The admission path's statements, prebuilt for the DB-API driver (sqlite3 or psycopg 3).

A decision is a handful of small statements. Through SQLAlchemy each cost ~0.1 ms of Python (the
execution context, events, result proxies), several times the statement itself; here the SQL is
written once per dialect and runs on the driver's cursor, inside the transaction SQLAlchemy opened
(``BEGIN IMMEDIATE`` on SQLite, see :func:`hub_extension.db.make_engine`). The schema stays owned by
the migrations; ``tests/hub_extension/test_driver_sql.py`` runs every statement against a migrated
database of each dialect and compares what it reads and writes with what SQLAlchemy sees.

On Postgres a whole shared transaction runs in psycopg's pipeline mode: writes are sent without
waiting for their answers, and the reads a decision needs together go in one round trip
(:meth:`DriverSQL.query_all`). The server still runs the statements one after the other, each with
its own snapshot (READ COMMITTED), so a read sent after the user's lock sees every commit before it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"  # a lease's status
_LEASE_COLUMNS = ('id, "user", groups, request_id, label, pool, gpus, concurrency, gpus_total, estimated_seconds, '
                  'ttl_seconds, status, created_at, expires_at, ended_at, gpu_seconds')
_POLICY_COLUMNS = "kind, name, max_gpus, max_runs, max_gpus_per_run, gpu_hours_budget, window_hours, allowed_pools"
_LEDGER_COLUMNS = ("at", "event", "actor", "user", "lease_id", "request_id", "label", "pool", "gpus_total",
                   "gpu_seconds", "detail")
_DATETIME_COLUMNS = frozenset({"created_at", "expires_at", "ended_at"})
_JSON_COLUMNS = frozenset({"groups", "allowed_pools"})
_ACTIVE_OF_USER = f"SELECT {_LEASE_COLUMNS} FROM quota_leases WHERE \"user\" = :user AND status = 'active'"

#: statements by name, with ``:name`` parameters; ``{groups}`` is the dialect's "name in a list"
STATEMENTS: dict[str, str] = {
    "active_of_user": _ACTIVE_OF_USER,
    # a user's active leases, plus the lease of ``request_id`` in any state (the replay check): two
    # index searches (as one ``OR``, SQLite would walk every lease of the user)
    "active_or_known": f"{_ACTIVE_OF_USER} UNION ALL SELECT {_LEASE_COLUMNS} FROM quota_leases "
                       "WHERE \"user\" = :user AND request_id = :request_id AND status <> 'active'",
    "live_of_user": f"{_ACTIVE_OF_USER} AND expires_at >= :now ORDER BY created_at",
    "lease_by_id": f"SELECT {_LEASE_COLUMNS} FROM quota_leases WHERE id = :lease_id",
    "overdue_users": "SELECT DISTINCT \"user\" FROM quota_leases WHERE status = 'active' AND expires_at < :now",
    "overdue_of_user": f"{_ACTIVE_OF_USER} AND expires_at < :now",
    "policies_for": f"SELECT {_POLICY_COLUMNS} FROM quota_policies WHERE (kind = 'user' AND name = :user) "
                    "OR (kind = 'group' AND {groups}) OR kind = 'default'",
    # GPU-seconds ended since ``since``: whole hours from quota_usage_hours, the rest of the first
    # hour from the leases themselves (an index range over less than an hour)
    "ended_since": "SELECT (SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_usage_hours "
                   "WHERE \"user\" = :user AND hour >= :first_whole_hour) + "
                   "(SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_leases "
                   "WHERE \"user\" = :user AND ended_at >= :since AND ended_at < :first_whole_hour)",
    "insert_lease": f"INSERT INTO quota_leases ({_LEASE_COLUMNS}) VALUES "
                    "(:id, :user, :groups, :request_id, :label, :pool, :gpus, :concurrency, :gpus_total, "
                    ":estimated_seconds, :ttl_seconds, :status, :created_at, :expires_at, :ended_at, :gpu_seconds)",
    "insert_ledger": "INSERT INTO quota_ledger ({}) VALUES ({})".format(
        ", ".join(f'"{name}"' for name in _LEDGER_COLUMNS), ", ".join(f":{name}" for name in _LEDGER_COLUMNS)),
    "extend_lease": "UPDATE quota_leases SET expires_at = :expires_at WHERE id = :lease_id",
    "end_lease": "UPDATE quota_leases SET status = :status, ended_at = :ended_at, gpu_seconds = :gpu_seconds "
                 "WHERE id = :lease_id",
    "add_to_hour": "INSERT INTO quota_usage_hours (\"user\", hour, gpu_seconds) VALUES (:user, :hour, :gpu_seconds) "
                   "ON CONFLICT (\"user\", hour) DO UPDATE SET gpu_seconds = "
                   "quota_usage_hours.gpu_seconds + excluded.gpu_seconds",
    # Postgres: an upsert that touches the user's lock row holds its row lock to the commit, in one
    # statement (what ``INSERT ... ON CONFLICT DO NOTHING`` then ``SELECT ... FOR UPDATE`` took two for)
    "lock_user": "INSERT INTO quota_user_locks (\"user\") VALUES (:user) "
                 "ON CONFLICT (\"user\") DO UPDATE SET \"user\" = excluded.\"user\"",
}

_IN_LIST = {"sqlite": "name IN (SELECT value FROM json_each(:groups))", "postgresql": "name = ANY(:groups)"}
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _for_dialect(dialect: str) -> dict[str, str]:
    texts = {name: sql.replace("{groups}", _IN_LIST[dialect]) for name, sql in STATEMENTS.items()}
    if dialect == "postgresql":  # psycopg's parameter style
        texts = {name: _PARAM.sub(r"%(\1)s", sql) for name, sql in texts.items()}
    return texts


_TEXTS = {dialect: _for_dialect(dialect) for dialect in _IN_LIST}


def sqlite_datetime(at: datetime) -> str:
    """``at`` as SQLAlchemy's SQLite ``DateTime`` stores it (compared as text, so always with microseconds)."""
    return at.isoformat(" ", "microseconds")


class DriverSQL:
    """Runs :data:`STATEMENTS` on the DB-API connection under a SQLAlchemy ``Connection``.

    Parameters and rows are plain dicts with the Python values SQLAlchemy would give (naive
    ``datetime``, parsed JSON); on SQLite they are converted here, psycopg adapts them itself.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        if self.dialect not in _TEXTS:
            raise ValueError(f"the quota store supports SQLite and Postgres, not {self.dialect}")
        self.sqlite = self.dialect == "sqlite"
        self._texts = _TEXTS[self.dialect]
        self._driver: Any = conn.connection.driver_connection
        if not self.sqlite:
            from psycopg.types.json import Json  # only with Postgres

            self._json = Json

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Postgres: send statements without waiting for each answer until a read needs one."""
        with nullcontext() if self.sqlite else self._driver.pipeline():
            yield

    def json(self, value: Any) -> Any:
        """A value for a JSON column."""
        return json.dumps(value) if self.sqlite else self._json(value)

    def name_list(self, names: Sequence[str]) -> Any:
        """A value for the ``{groups}`` list parameter."""
        return json.dumps(list(names)) if self.sqlite else list(names)

    def _params(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self.sqlite:
            return params
        return {key: sqlite_datetime(value) if isinstance(value, datetime) else value for key, value in params.items()}

    def _start(self, name: str, params: Mapping[str, Any]) -> Any:
        cursor = self._driver.cursor()
        cursor.execute(self._texts[name], self._params(params))
        return cursor

    def _rows(self, cursor: Any) -> list[dict[str, Any]]:
        fetched = cursor.fetchall()  # first: in a pipeline, the description comes with the rows
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in fetched]
        cursor.close()
        if self.sqlite:
            for row in rows:
                for key in _DATETIME_COLUMNS.intersection(row):
                    if row[key] is not None:
                        row[key] = datetime.fromisoformat(row[key])
                for key in _JSON_COLUMNS.intersection(row):
                    if row[key] is not None:
                        row[key] = json.loads(row[key])
        return rows

    def query(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of one read."""
        return self._rows(self._start(name, params))

    def query_all(self, *reads: tuple[str, Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
        """The rows of several reads, sent together (one round trip in a Postgres pipeline)."""
        cursors = [self._start(name, params) for name, params in reads]
        return [self._rows(cursor) for cursor in cursors]

    def write(self, name: str, params: Mapping[str, Any]) -> None:
        """One write; in a Postgres pipeline its answer (and any error) comes with the next read or the commit."""
        self._start(name, params)  # not closed: in a pipeline its answer is still to come


@contextmanager
def write_transaction(engine: Engine) -> Iterator[DriverSQL]:
    """A write transaction driven on the DB-API connection: committed on exit, rolled back on an error.

    SQLite's starts with ``BEGIN IMMEDIATE`` (the database write lock before the first read, as
    :func:`hub_extension.db.make_engine` does for SQLAlchemy's transactions); psycopg opens one with
    the first statement. Issued here rather than through SQLAlchemy's ``begin`` event: that hop cost
    more than a whole decision's statements.
    """
    with engine.connect() as conn:
        sql = DriverSQL(conn)
        try:
            if sql.sqlite:
                sql._driver.execute("BEGIN IMMEDIATE")
            with sql.pipeline():
                yield sql
            sql._driver.commit()
        except BaseException:
            try:
                sql._driver.rollback()
            except Exception:  # a broken connection: the pool must not hand it out again
                conn.invalidate()
            raise
