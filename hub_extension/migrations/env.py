"""Alembic environment: uses the engine the service hands over, or ``-x url=...`` from the CLI; on Postgres, one
migrating process at a time either way (``migrations_one_at_a_time``)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, Engine

from hub_extension.db import make_engine, migrations_one_at_a_time
from hub_extension.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations with the given engine, or one made from ``-x url=`` / ``sqlalchemy.url``, holding the migration lock.

    The lock is taken before the migrating connection opens (no transaction of ours for 0004's CONCURRENTLY to wait for).
    """
    engine = config.attributes.get("engine")
    if engine is not None:
        _migrate_locked(engine)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database URL: alembic -c hub_extension/alembic.ini -x url=sqlite:///quotas.sqlite upgrade head")
    engine = make_engine(url)
    try:
        _migrate_locked(engine)
    finally:
        engine.dispose()


def _migrate_locked(engine: Engine) -> None:
    with migrations_one_at_a_time(engine), engine.connect() as connection:
        _migrate(connection)


def _migrate(connection: Connection) -> None:
    """Run the migrations on ``connection`` (given outside a transaction), each in its own transaction:
    a migration's ``autocommit_block`` (Postgres ``CONCURRENTLY``) then commits only its own work."""
    context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()  # what alembic read or wrote outside a migration's transaction (its version table)


run_migrations()
