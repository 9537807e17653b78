"""Replicas that start together on one fresh Postgres: their migrations take turns instead of colliding."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

import hub_extension
from hub_extension.db import MIGRATION_LOCK_KEY, alembic_config, make_engine
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


def test_an_admins_alembic_upgrade_waits_for_a_migrating_replica(fresh_postgres: Engine) -> None:
    """``alembic -x url=... upgrade head`` by hand takes the same lock as the service's start (it lives in env.py)."""
    url = fresh_postgres.url.render_as_string(hide_password=False)
    ini = Path(hub_extension.__file__).parent / "alembic.ini"
    with fresh_postgres.connect().execution_options(isolation_level="AUTOCOMMIT") as replica:  # a replica migrating
        assert replica.exec_driver_sql(f"SELECT pg_try_advisory_lock({MIGRATION_LOCK_KEY})").scalar()
        admin = subprocess.Popen([sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={url}", "upgrade", "head"],
                                 stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 120
            while not _polls_the_lock(replica):  # order, not time: the admin has asked for the lock and not got it
                assert admin.poll() is None and time.monotonic() < deadline, admin.communicate()[1]
                time.sleep(0.1)
            assert admin.poll() is None and not inspect(replica).has_table("alembic_version")  # waiting, nothing migrated
        finally:
            replica.exec_driver_sql(f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    _out, err = admin.communicate(timeout=120)
    assert admin.returncode == 0, err
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with fresh_postgres.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]


def _polls_the_lock(connection: Connection) -> bool:
    """Whether another session's last statement asked for the migration lock (``pg_try_advisory_lock``, polled)."""
    return bool(connection.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                                        "AND query LIKE 'SELECT pg_try_advisory_lock(%'")).scalar())
