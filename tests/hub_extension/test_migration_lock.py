"""Replicas that start together on one fresh Postgres: their migrations take turns instead of colliding."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from hub_extension.db import alembic_config, make_engine
from hub_extension.devhub import drop_quota_schema


@pytest.fixture
def fresh_postgres(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    drop_quota_schema(engine)  # the session's Postgres may hold another test's schema
    yield engine
    engine.dispose()


REPLICA = """
import sys
from hub_extension.db import make_engine, upgrade_database
sys.stdin.readline()  # all replicas start at once
upgrade_database(make_engine(sys.argv[1]))
"""


def test_replicas_upgrading_one_fresh_database_at_once_all_succeed(fresh_postgres: Engine) -> None:
    """Each replica is a process, as in a cluster (alembic's context is one per process)."""
    url = fresh_postgres.url.render_as_string(hide_password=False)
    replicas = [subprocess.Popen([sys.executable, "-c", REPLICA, url], stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(3)]
    for replica in replicas:
        assert replica.stdin is not None
        replica.stdin.write("go\n")
        replica.stdin.flush()
    failures = [err for replica in replicas for _out, err in [replica.communicate(timeout=120)] if replica.returncode]
    assert failures == []
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with fresh_postgres.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
