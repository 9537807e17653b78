"""Database engine and schema migrations of the quota service (SQLite by default, Postgres supported)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


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
    with engine.connect() as connection:  # not in a transaction: each migration runs in its own (env.py)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)
    log.info("quota database at revision %s (%s)", revision, engine.url.render_as_string(hide_password=True))


def downgrade_database(engine: Engine, revision: str) -> None:
    """Take the schema back to ``revision`` (tests of a migration's downgrade; an admin undoing an upgrade)."""
    cfg = alembic_config()
    with engine.connect() as connection:  # not in a transaction: each migration runs in its own (env.py)
        cfg.attributes["connection"] = connection
        command.downgrade(cfg, revision)
    log.info("quota database downgraded to revision %s", revision)
