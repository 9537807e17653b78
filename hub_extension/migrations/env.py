"""Alembic environment: uses the connection the service hands over, or ``-x url=...`` from the CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from hub_extension.db import make_engine
from hub_extension.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations on the given connection, or open one from ``-x url=`` / ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database URL: alembic -c hub_extension/alembic.ini -x url=sqlite:///quotas.sqlite upgrade head")
    engine = make_engine(url)
    with engine.connect() as conn:
        _migrate(conn)
    engine.dispose()


def _migrate(connection: Connection) -> None:
    """Run the migrations on ``connection`` (given outside a transaction), each in its own transaction:
    a migration's ``autocommit_block`` (Postgres ``CONCURRENTLY``) then commits only its own work."""
    context.configure(connection=connection, target_metadata=target_metadata, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()  # what alembic read or wrote outside a migration's transaction (its version table)


run_migrations()
