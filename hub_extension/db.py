"""Database engine and schema migrations of the quota service (SQLite by default, Postgres supported)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

#: The Postgres advisory lock key that replicas migrating one database take in turn ("nbsq" in ASCII).
MIGRATION_LOCK_KEY = 0x6E627371


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine for ``url``.

    On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: it takes the database's
    write lock *before* the first read, so two admissions can never both read the same usage and
    both insert a lease (the lost-update race behind over-admission). Reads opened with the
    ``nbscale_readonly`` execution option start a plain deferred ``BEGIN`` and do not queue behind
    writers (WAL mode). On Postgres the store locks the caller's row instead (``FOR UPDATE``).
    """
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **kwargs)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own implicit BEGIN would defeat BEGIN IMMEDIATE: take over transaction control
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if ":memory:" not in url and url not in ("sqlite://", "sqlite:///"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        readonly = conn.get_execution_options().get("nbscale_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")

    return engine


def alembic_config(url: str | None = None) -> Config:
    """An alembic ``Config`` pointing at the packaged migrations (``url`` optional)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the service runs this at every start; it is idempotent)."""
    cfg = alembic_config()
    cfg.attributes["engine"] = engine  # env.py migrates with it, one replica at a time
    command.upgrade(cfg, revision)
    log.info("quota database at revision %s (%s)", revision, engine.url.render_as_string(hide_password=True))


def downgrade_database(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (tests of a migration's downgrade; an admin undoing an upgrade)."""
    cfg = alembic_config()
    cfg.attributes["engine"] = engine  # env.py migrates with it, one replica at a time
    command.downgrade(cfg, revision)
    log.info("quota database downgraded to revision %s", revision)


@contextmanager
def migrations_one_at_a_time(engine: Engine) -> Iterator[None]:
    """On Postgres, hold a session advisory lock while migrating: replicas that start together take turns, and
    the later ones find the schema at head (each migration commits on its own, so nothing else serialises them).
    Taken in ``migrations/env.py``, so an admin's ``alembic ... upgrade head`` waits its turn too.

    The waiting replicas poll ``pg_try_advisory_lock`` with no transaction open rather than block in
    ``pg_advisory_lock``: a session blocked in a statement holds a snapshot, which 0004's CREATE INDEX
    CONCURRENTLY in the migrating replica waits for, and neither would ever move."""
    if engine.dialect.name != "postgresql":
        yield  # SQLite: BEGIN IMMEDIATE already takes the database's write lock
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as holder:
        waited = 0
        while not holder.exec_driver_sql(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY})").scalar():
            if waited % 50 == 0:
                log.info("waiting for another replica's schema migration to finish")
            waited += 1
            time.sleep(0.2)
        try:
            yield
        finally:
            holder.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
