"""The admission path's statements, prebuilt for the DB-API driver (sqlite3 or psycopg 3).

A decision is a handful of small statements. Through SQLAlchemy each cost ~0.1 ms of Python (the
execution context, events, result proxies), several times the statement itself; here the SQL is
written once per dialect and runs on the driver's cursor, inside the transaction SQLAlchemy opened
(``BEGIN IMMEDIATE`` on SQLite, see :func:`hub_extension.db.make_engine`). The schema stays owned by
the migrations; ``tests/hub_extension/test_driver_sql.py`` runs every statement against a migrated
database of each dialect and compares what it reads and writes with what SQLAlchemy sees.

On Postgres a write transaction's statements run inside the server, in :data:`STEP_FUNCTION` (a
plpgsql function built from :data:`STATEMENTS`, whose SQL migration 0003 holds as text): writes wait in
:class:`DriverSQL` and go, in order, with the next read, so a decision costs one call and one round
trip (psycopg's own per-statement cost was most of a decision's CPU); no statement reads the ledger,
so its entries wait for the commit and go in one insert. The function runs them one
after the other; being ``VOLATILE``, each statement takes a fresh snapshot (READ COMMITTED), so a
read that follows the user's lock sees every commit before it, as separate statements would.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Connection, Engine, Table

from .errors import CommitOutcomeUnknown, DatabaseConnectionLost
from .models import Lease, LedgerEntry, Policy, UsageHour

log = logging.getLogger(__name__)

ACTIVE, RELEASED, EXPIRED = "active", "released", "expired"  # a lease's status


def _columns(table: Table, *, leave_out: tuple[str, ...] = ()) -> list[Column[Any]]:
    return [column for column in table.columns if column.name not in leave_out]


def _names(columns: Sequence[Column[Any]]) -> str:
    return ", ".join(f'"{column.name}"' for column in columns)  # quoted: "user" is reserved in both databases


_LEASE = _columns(Lease.__table__)  # type: ignore[arg-type]
_POLICY = _columns(Policy.__table__, leave_out=("id", "updated_at", "updated_by"))  # type: ignore[arg-type]
_LEDGER = _columns(LedgerEntry.__table__, leave_out=("id",))  # type: ignore[arg-type]
LEASE_COLUMNS, POLICY_COLUMNS = _names(_LEASE), _names(_POLICY)
_READ_COLUMNS = [*_LEASE, *_POLICY]
_DATETIME_COLUMNS = frozenset(c.name for c in _READ_COLUMNS if c.type.python_type is datetime)
_JSON_COLUMNS = frozenset(c.name for c in _READ_COLUMNS if isinstance(c.type, JSON))
_FLOAT_COLUMNS = frozenset(c.name for c in _READ_COLUMNS if not isinstance(c.type, JSON) and c.type.python_type is float)
_ACTIVE_OF_USER = f"SELECT {LEASE_COLUMNS} FROM quota_leases WHERE \"user\" = :user AND status = 'active'"


def _values(columns: Sequence[Column[Any]]) -> str:
    return ", ".join(f":{column.name}" for column in columns)


#: statements by name, with ``:name`` parameters; ``{groups}`` is the dialect's "name in a list"
STATEMENTS: dict[str, str] = {
    "active_of_user": _ACTIVE_OF_USER,
    # a user's active leases, plus the lease of ``request_id`` in any state (the replay check): two
    # index searches (as one ``OR``, SQLite would walk every lease of the user)
    "active_or_known": f"{_ACTIVE_OF_USER} UNION ALL SELECT {LEASE_COLUMNS} FROM quota_leases "
                       "WHERE \"user\" = :user AND request_id = :request_id AND status <> 'active'",
    "live_of_user": f"{_ACTIVE_OF_USER} AND expires_at >= :now ORDER BY created_at",
    "lease_by_id": f"SELECT {LEASE_COLUMNS} FROM quota_leases WHERE id = :lease_id",
    "overdue_users": "SELECT DISTINCT \"user\" FROM quota_leases WHERE status = 'active' AND expires_at < :now",
    "overdue_of_user": f"{_ACTIVE_OF_USER} AND expires_at < :now",
    "policies_for": f"SELECT {POLICY_COLUMNS} FROM quota_policies WHERE (kind = 'user' AND name = :user) "
                    "OR (kind = 'group' AND {groups}) OR kind = 'default'",
    # GPU-seconds ended since ``since``: whole hours from quota_usage_hours, the rest of the first
    # hour from the leases themselves (an index range over less than an hour)
    "ended_since": "SELECT (SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_usage_hours "
                   "WHERE \"user\" = :user AND hour >= :first_whole_hour) + "
                   "(SELECT coalesce(sum(gpu_seconds), 0.0) FROM quota_leases "
                   "WHERE \"user\" = :user AND ended_at >= :since AND ended_at < :first_whole_hour)",
    "insert_lease": f"INSERT INTO quota_leases ({LEASE_COLUMNS}) VALUES ({_values(_LEASE)})",
    "insert_ledger": f"INSERT INTO quota_ledger ({_names(_LEDGER)}) VALUES ({_values(_LEDGER)})",
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

#: Postgres, through the step function: a transaction's ledger entries in one statement, in their order
#: (a plpgsql statement for each cost several times what a row of one insert does)
_LEDGER_ROWS = (f"INSERT INTO quota_ledger ({_names(_LEDGER)}) SELECT {_names(_LEDGER)} FROM "
                "jsonb_populate_recordset(NULL::quota_ledger, %s::jsonb) WITH ORDINALITY ORDER BY ordinality")

_IN_LIST = {"sqlite": "name IN (SELECT value FROM json_each(:groups))", "postgresql": "name = ANY(:groups)"}
_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def _for_dialect(dialect: str) -> dict[str, str]:
    texts = {name: sql.replace("{groups}", _IN_LIST[dialect]) for name, sql in STATEMENTS.items()}
    if dialect == "postgresql":  # psycopg's parameter style
        texts = {name: _PARAM.sub(r"%(\1)s", sql) for name, sql in texts.items()}
    return texts


_TEXTS = {dialect: _for_dialect(dialect) for dialect in _IN_LIST}


def statement_with(name: str, **values: str) -> str:
    """Statement ``name`` with SQL expressions in place of its parameters (inside a server function)."""
    return _PARAM.sub(lambda match: values[match[1]], STATEMENTS[name])


def sqlite_statement(name: str) -> str:
    """Statement ``name`` as sqlite3 runs it (``:name`` parameters; timestamps given as stored text)."""
    return _TEXTS["sqlite"][name]

# Postgres: the write transaction's statements in one function ------------------------------------

#: ``SELECT quota_step(writes, reads)``: runs ``writes`` (a JSON list of ``[name, params]``) in
#: order, then ``reads`` likewise, and returns each read's rows (a JSON list of lists of objects)
STEP_FUNCTION = "quota_step"
_PG_TYPES = {str: "text", int: "integer", float: "double precision", datetime: "timestamp"}


def param_types() -> dict[str, str]:
    """The Postgres type of each statement parameter: its column's (text, not varchar(n): an
    explicit cast to varchar(n) would cut a long value where an insert rejects it)."""
    types = {"now": "timestamp", "since": "timestamp", "first_whole_hour": "timestamp"}
    for model in (Lease, LedgerEntry, UsageHour, Policy):
        for column in model.__table__.columns:
            is_json = isinstance(column.type, JSON)
            types.setdefault(column.name, "json" if is_json else _PG_TYPES[column.type.python_type])
    return types


def step_statement(name: str, types: Mapping[str, str]) -> str:
    """Statement ``name`` as plpgsql, its parameters taken from the JSON object ``p`` (reads: into ``answers``)."""
    sql = STATEMENTS[name].replace("{groups}", "name IN (SELECT jsonb_array_elements_text(p -> 'groups'))")

    def param(match: re.Match[str]) -> str:
        kind = types[match[1]]
        return f"(p -> '{match[1]}')::json" if kind == "json" else f"(p ->> '{match[1]}')::{kind}"

    sql = _PARAM.sub(param, sql)
    if sql.startswith("SELECT"):
        return f"SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]') INTO found FROM ({sql}) r;\n" \
               "      answers := answers || jsonb_build_array(found);"
    return sql + ";"


def step_function_sql() -> str:
    """``CREATE OR REPLACE FUNCTION quota_step`` from :data:`STATEMENTS`. A migration holds it as
    literal text: a change of a statement needs a new migration with the new text (a test says so)."""
    types = param_types()
    cases = "\n".join(f"    WHEN '{name}' THEN\n      {step_statement(name, types)}" for name in STATEMENTS)
    return f"""CREATE OR REPLACE FUNCTION {STEP_FUNCTION}(writes jsonb, reads jsonb) RETURNS jsonb
LANGUAGE plpgsql VOLATILE AS $step$
DECLARE
  todo jsonb := writes || reads;
  p jsonb;
  found jsonb;
  answers jsonb := '[]';
BEGIN
  FOR i IN 0 .. jsonb_array_length(todo) - 1 LOOP
    p := todo -> i -> 1;
    CASE todo -> i ->> 0
{cases}
    ELSE
      RAISE EXCEPTION '{STEP_FUNCTION}: no statement %', todo -> i ->> 0;
    END CASE;
  END LOOP;
  RETURN answers;
END
$step$"""


def json_default(value: Any) -> str:
    """``json.dumps``'s ``default`` for statement parameters: timestamps in ISO form."""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a statement parameter")


TYPED_IN_JSON = _DATETIME_COLUMNS | _FLOAT_COLUMNS


def typed_rows(rows: list[dict[str, Any]], columns: frozenset[str]) -> list[dict[str, Any]]:
    """Timestamps (text in SQLite and in JSON) as ``datetime``, floats as ``float`` (JSON's 60 is an int)."""
    for row in rows:
        for key in columns.intersection(row):
            value = row[key]
            if value is not None:
                row[key] = datetime.fromisoformat(value) if key in _DATETIME_COLUMNS else float(value)
    return rows


def sqlite_datetime(at: datetime) -> str:
    """``at`` as SQLAlchemy's SQLite ``DateTime`` stores it (compared as text, so always with microseconds)."""
    return at.isoformat(" ", "microseconds")


class DriverSQL:
    """Runs :data:`STATEMENTS` on the DB-API connection under a SQLAlchemy ``Connection``.

    Parameters and rows are plain dicts with the Python values SQLAlchemy would give (naive
    ``datetime``, parsed JSON); they are converted here. With ``step`` (Postgres write
    transactions) statements go through :data:`STEP_FUNCTION`: a write's answer (and any error)
    comes with the next read or the commit.
    """

    def __init__(self, conn: Connection, *, step: bool = False) -> None:
        self.conn = conn
        self.dialect = conn.dialect.name
        if self.dialect not in _TEXTS:
            raise ValueError(f"the quota store supports SQLite and Postgres, not {self.dialect}")
        self.sqlite = self.dialect == "sqlite"
        self.step = step and not self.sqlite
        self._texts = _TEXTS[self.dialect]
        self._driver: Any = conn.connection.driver_connection
        self._writes: list[tuple[str, Mapping[str, Any]]] = []
        self._ledger: list[Mapping[str, Any]] = []
        if not self.sqlite:
            from psycopg.types.json import Json  # only with Postgres

            self._json = Json

    def json(self, value: Any) -> Any:
        """A value for a JSON column."""
        if self.step:
            return value  # a part of the call's JSON already
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
        values = cursor.fetchall()  # first: in psycopg's pipeline, the description comes with the rows
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in values]
        cursor.close()
        if self.sqlite:
            for row in rows:
                for key in _JSON_COLUMNS.intersection(row):
                    if row[key] is not None:
                        row[key] = json.loads(row[key])
        return typed_rows(rows, _DATETIME_COLUMNS) if self.sqlite else rows

    def call(self, function: str, *args: Any) -> Any:
        """``SELECT function(args)`` (each argument a JSON value) after the waiting writes; its answer."""
        self._send_writes()
        return self._call(function, args).fetchone()[0]

    def _call(self, function: str, args: Sequence[Any]) -> Any:
        cursor = self._driver.cursor()
        placeholders = ", ".join(["%s::jsonb"] * len(args))
        cursor.execute(f"SELECT {function}({placeholders})", [json.dumps(arg, default=json_default) for arg in args])
        return cursor

    def _send_writes(self) -> None:
        """The waiting writes, in one call whose answer comes with the next one (pipeline)."""
        if self._writes:
            self._call(STEP_FUNCTION, (self._writes_taken(), []))

    def _send_ledger(self) -> None:
        """The transaction's ledger entries, in one insert (in the commit's round trip)."""
        if self._ledger:
            rows, self._ledger = self._ledger, []
            self._driver.cursor().execute(_LEDGER_ROWS, [json.dumps(rows, default=json_default)])

    def query(self, name: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows of one read."""
        return self.query_all((name, params))[0]

    def query_all(self, *reads: tuple[str, Mapping[str, Any]]) -> list[list[dict[str, Any]]]:
        """The rows of several reads, sent together (with the waiting writes: one call on Postgres)."""
        if self.step:
            return [typed_rows(rows, TYPED_IN_JSON) for rows in self.call(STEP_FUNCTION, self._writes_taken(), reads)]
        cursors = [self._start(name, params) for name, params in reads]
        return [self._rows(cursor) for cursor in cursors]

    def write(self, name: str, params: Mapping[str, Any]) -> None:
        """One write; through the step function, it goes with the next read or the commit."""
        if self.step and name == "insert_ledger":  # no statement reads the ledger: all at the commit, together
            self._ledger.append(params)
        elif self.step:
            self._writes.append((name, params))
        else:
            self._start(name, params).close()

    def _writes_taken(self) -> list[tuple[str, Mapping[str, Any]]]:
        writes, self._writes = self._writes, []
        return writes

    def commit(self) -> None:
        """Send the waiting writes and ledger entries and commit (one round trip in the pipeline; their
        errors raise here)."""
        self._send_writes()
        self._send_ledger()
        self._driver.commit()


class WriteConnection:
    """One group commit's connection, kept from batch to batch (no pool checkout, nor its ping, a batch).

    :meth:`transaction` is a write transaction driven on the DB-API connection: committed on exit,
    rolled back on an error. SQLite's starts with ``BEGIN IMMEDIATE`` (the database write lock before
    the first read, as :func:`hub_extension.db.make_engine` does for SQLAlchemy's transactions);
    psycopg opens one with the first call, in the same round trip (pipeline). Issued here rather than
    through SQLAlchemy's ``begin`` event: that hop cost more than a whole decision's statements. A
    connection that fails to roll back is dropped, and the next transaction opens a new one.
    ``step`` (Postgres): statements go through :data:`STEP_FUNCTION` (the database has it, as this
    code expects it: :func:`hub_extension.pg_admission.use_server_functions`).
    """

    def __init__(self, engine: Engine, *, step: bool = True) -> None:
        self.engine = engine
        self.step = step
        self._conn: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[DriverSQL]:
        """A write transaction on this connection (opened now if there is none).

        Kept between batches without a ping, the connection may have been ended by the server (a
        restart, an idle timeout, ``pg_terminate_backend``): then the transaction raises
        :class:`~hub_extension.errors.DatabaseConnectionLost` if it failed before its commit
        (nothing saved: safe to run again) or :class:`~hub_extension.errors.CommitOutcomeUnknown`
        if during it, and the next transaction opens a new connection.
        """
        if self._conn is None:
            self._conn = self.engine.connect()
        conn = self._conn
        sql = DriverSQL(conn, step=self.step)
        committing = False
        try:
            if sql.sqlite:
                sql._driver.execute("BEGIN IMMEDIATE")
            with nullcontext() if sql.sqlite else sql._driver.pipeline():  # BEGIN goes with the first call
                yield sql
                committing = True
                sql.commit()
        except Exception as exc:
            if self._rolled_back(conn, sql):
                raise
            raise _lost(exc, committing) from exc
        except BaseException:
            self._rolled_back(conn, sql)
            raise

    def _rolled_back(self, conn: Connection, sql: DriverSQL) -> bool:
        """Roll back; a connection the server ended, or that fails to roll back, is dropped (False)."""
        try:
            if getattr(sql._driver, "closed", False):  # psycopg: ended by the server
                raise ConnectionError("closed by the server")
            sql._driver.rollback()
            return True
        except Exception:  # a broken connection: never used again
            self._conn = None
            conn.invalidate()
            conn.close()
            return False


def _lost(exc: Exception, committing: bool) -> Exception:
    """The error a transaction whose connection was lost raises instead of the driver's."""
    if committing:
        log.warning("the quota database connection was lost while committing (%s); the outcome is unknown", exc)
        return CommitOutcomeUnknown(
            f"The connection to the quota database was lost while this change was being committed ({exc}); "
            "whether it was saved is unknown. Send the same request again (with the same request id): "
            "it is idempotent.")
    log.warning("the quota database connection was lost before the commit (%s); nothing was saved", exc)
    return DatabaseConnectionLost(
        f"The connection to the quota database was lost before this change was committed ({exc}); nothing "
        "was saved. Try again shortly; if it keeps failing, ask a hub admin to check the quota database.")
