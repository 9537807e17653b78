"""Alembic environment: uses the connection the service hands over, or ``-x url=...`` from the CLI."""

from __future__ import annotations

from alembic import context

from hub_extension.db import make_engine
from hub_extension.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations() -> None:
    """Run migrations on the given connection, or open one from ``-x url=`` / ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database URL: alembic -c hub_extension/alembic.ini -x url=sqlite:///quotas.sqlite upgrade head")
    engine = make_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        context.run_migrations()
    engine.dispose()


run_migrations()
