"""Postgres's server functions: frozen in their migrations, checked at start, and a group commit's
connection that the server ended.

A migration holds the SQL it creates as literal text, so running it is the same forever; the first
test fails when the code would build other SQL than the newest migration that creates a function.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from hub_extension import group_ops
from hub_extension.admin import set_policy
from hub_extension.db import alembic_config, downgrade_database, make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
from hub_extension.driver_sql import DriverSQL
from hub_extension.errors import CommitOutcomeUnknown, LeaseNotFound
from hub_extension.pg_admission import function_body, server_functions, stale_functions
from hub_extension.store import AdmissionRequest, Caller, QuotaStore


def _migrations_newest_first() -> Iterator[ModuleType]:
    for script in ScriptDirectory.from_config(alembic_config()).walk_revisions():
        spec = importlib.util.spec_from_file_location(f"migration_{script.revision}", script.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module


@pytest.mark.parametrize("name", sorted(server_functions()))
def test_the_newest_migration_that_creates_a_function_holds_what_the_code_builds(name: str) -> None:
    created = next((m for m in _migrations_newest_first() if name in getattr(m, "FUNCTIONS", {})), None)
    assert created is not None, f"no migration creates {name} (a FUNCTIONS entry of a migration)"
    assert created.FUNCTIONS[name] == server_functions()[name], (
        f"{name} as the code builds it differs from migration {created.revision}'s: a database migrated "
        f"already would keep the old one. Add a migration (`alembic -c hub_extension/alembic.ini revision -m "
        f"'...'`) whose FUNCTIONS holds the new SQL as literal text, copied from "
        f"hub_extension.pg_admission.server_functions()['{name}'], and never edit an old migration")


def test_a_migration_imports_no_live_code() -> None:
    for module in _migrations_newest_first():
        imported = {name for name, value in vars(module).items() if isinstance(value, ModuleType)}
        live = {value.__name__ for value in vars(module).values()
                if getattr(value, "__module__", "").startswith("hub_extension")}
        assert not live and "hub_extension" not in imported, f"migration {module.revision} uses {live or imported}"


ALICE = Caller(name="alice", groups=("ml",))


def ask(rid: str) -> AdmissionRequest:
    return AdmissionRequest(gpus=1, pool="a100", concurrency=1, estimated_seconds=60, request_id=rid)


@pytest.fixture
def postgres(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    drop_quota_schema(engine)
    upgrade_database(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def decided_in_server(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many operations each call of ``quota_decide_batch`` decided (or read the lease of)."""
    calls: list[int] = []
    decide = group_ops.decide_batch

    def spy(sql: Any, users: Any, requests: Any) -> Any:
        calls.append(len(requests))
        return decide(sql, users, requests)

    monkeypatch.setattr(group_ops, "decide_batch", spy)
    return calls


def _ledger(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text("SELECT event, request_id FROM quota_ledger WHERE event IN ('admitted', 'refused') ORDER BY id"))]


def test_a_migrated_database_decides_in_the_server(postgres: Engine, decided_in_server: list[int],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with postgres.connect() as conn:
        assert stale_functions(conn) == []
    assert QuotaStore(postgres).admit(ALICE, ask("r")).lease is not None
    assert decided_in_server == [1]
    assert "functions" not in caplog.text


def test_heartbeats_and_releases_read_their_lease_in_the_batch_call(postgres: Engine, decided_in_server: list[int]) -> None:
    store = QuotaStore(postgres)
    lease = store.admit(ALICE, ask("r")).lease
    assert lease is not None
    beat = store.heartbeat(ALICE, lease["id"])
    ended = store.release(ALICE, lease["id"], gpu_seconds=1.5)
    again = store.release(ALICE, lease["id"])  # idempotent: the same lease, read in the server
    assert decided_in_server == [1, 1, 1, 1]
    assert beat["status"] == "active" and beat["expires_at"] >= lease["expires_at"]
    assert ended["status"] == again["status"] == "released" and ended["gpu_seconds"] == again["gpu_seconds"]
    with pytest.raises(LeaseNotFound):
        store.heartbeat(Caller(name="bob"), lease["id"])  # not bob's: found, and refused
    with postgres.connect() as conn:
        events = conn.execute(text("SELECT event, actor FROM quota_ledger ORDER BY id")).all()
    assert [tuple(row) for row in events] == [("admitted", "alice"), ("released", "alice")]


def _downgrade(engine: Engine) -> None:
    downgrade_database(engine, "0002")


def _before_decide_batch(engine: Engine) -> None:
    downgrade_database(engine, "0004")  # quota_admit_batch only, as the last version left it


def _older_step(engine: Engine) -> None:
    # as an older version would have left it: same name and signature, another body
    older = server_functions()["quota_step"].replace("RAISE EXCEPTION '", "RAISE EXCEPTION 'older: ")
    assert function_body(older) != function_body(server_functions()["quota_step"])
    with engine.begin() as conn:
        conn.execute(text(older))  # as a migration runs it


@pytest.mark.parametrize(("database", "make_it", "stale"), [
    ("unmigrated (at 0002)", _downgrade, "quota_step, quota_decide_batch"),
    ("at 0004", _before_decide_batch, "quota_decide_batch"),
    ("an older quota_step", _older_step, "quota_step"),
])
def test_other_functions_are_logged_and_admission_takes_the_python_path(
        postgres: Engine, decided_in_server: list[int], caplog: pytest.LogCaptureFixture, database: str,
        make_it: Any, stale: str) -> None:
    make_it(postgres)
    with caplog.at_level(logging.WARNING, logger="hub_extension.pg_admission"):
        store = QuotaStore(postgres)
    assert f"functions {stale} are missing or not the ones this version" in caplog.text
    assert "upgrade head" in caplog.text
    set_policy(store, "admin", "user", "alice", {"max_gpus": 1})
    answers = [store.admit(ALICE, ask(rid)) for rid in ("a", "b", "a")]
    assert [a.lease is not None for a in answers] == [True, False, True] and answers[2].replayed
    assert answers[1].refusal is not None and answers[1].refusal.limit == "max_gpus"
    assert decided_in_server == []  # nothing went through quota_decide_batch
    assert _ledger(postgres) == [("admitted", "a"), ("refused", "b")]


def _end_the_store_connections(engine: Engine) -> int:
    """What a server restart, an idle timeout or an admin does to connections kept between batches."""
    with engine.connect() as conn:
        ended = conn.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                                  "AND backend_type = 'client backend'")).scalar()
    return int(ended or 0)


def _admitted(engine: Engine) -> tuple[list[str], list[str]]:
    with engine.connect() as conn:
        leases = conn.execute(text("SELECT request_id FROM quota_leases ORDER BY request_id")).scalars().all()
        ledger = conn.execute(text("SELECT request_id FROM quota_ledger WHERE event = 'admitted' "
                                   "ORDER BY request_id")).scalars().all()
    return list(leases), list(ledger)


@pytest.mark.parametrize("threads", [1, 8])
def test_a_connection_the_server_ended_is_replaced_and_no_decision_is_lost_or_doubled(
        postgres: Engine, threads: int) -> None:
    store = QuotaStore(postgres)
    for rid in ("warm-0", "warm-1", "warm-2", "warm-3", "warm-4", "warm-5"):  # every lane keeps a connection
        store.admit(Caller(name=f"user-{rid}", groups=()), ask(rid))
    assert _end_the_store_connections(postgres) >= 1
    answers: list[Any] = []
    barrier = threading.Barrier(threads)

    def admit(i: int) -> None:
        barrier.wait()
        answers.append(store.admit(Caller(name=f"user-warm-{i % 6}", groups=()), ask(f"after-{i}")))

    workers = [threading.Thread(target=admit, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(answers) == threads and all(a.lease is not None and not a.replayed for a in answers)
    leases, ledger = _admitted(postgres)
    expected = sorted([f"warm-{i}" for i in range(6)] + [f"after-{i}" for i in range(threads)])
    assert leases == expected and ledger == expected  # each once: none lost, none doubled


def test_a_connection_ended_during_the_commit_is_an_error_to_retry_never_a_second_run(
        postgres: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = QuotaStore(postgres)
    commit = DriverSQL.commit
    ended: list[int] = []

    def commit_after_the_server_ends_it(sql: DriverSQL) -> None:
        if not ended:
            ended.append(_end_the_store_connections(postgres))
        commit(sql)

    monkeypatch.setattr(DriverSQL, "commit", commit_after_the_server_ends_it)
    with pytest.raises(CommitOutcomeUnknown, match="same request id") as lost:
        store.admit(ALICE, ask("r"))
    assert ended[0] >= 1 and lost.value.http_status == 503  # the client retries a 503
    assert _admitted(postgres) == ([], [])  # not run again behind the caller's back
    answer = store.admit(ALICE, ask("r"))  # the caller's retry
    assert answer.lease is not None
    assert _admitted(postgres) == (["r"], ["r"])
