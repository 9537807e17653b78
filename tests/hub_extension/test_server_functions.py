"""Postgres's server functions: frozen in their migrations, checked at start, and a group commit's
connection that the server ended.

A migration holds the SQL it creates as literal text, so running it is the same forever; the first
test fails when the code would build other SQL than the newest migration that creates a function.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from hub_extension import store as store_module
from hub_extension.admin import set_policy
from hub_extension.db import alembic_config, make_engine, upgrade_database
from hub_extension.devhub import drop_quota_schema
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
    """How many requests each call of ``quota_admit_batch`` decided."""
    calls: list[int] = []
    decide = store_module.decide_batch

    def spy(sql: Any, users: Any, requests: Any) -> Any:
        calls.append(len(requests))
        return decide(sql, users, requests)

    monkeypatch.setattr(store_module, "decide_batch", spy)
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


def _downgrade(engine: Engine) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")


def _older_step(engine: Engine) -> None:
    # as an older version would have left it: same name and signature, another body
    older = server_functions()["quota_step"].replace("RAISE EXCEPTION '", "RAISE EXCEPTION 'older: ")
    assert function_body(older) != function_body(server_functions()["quota_step"])
    with engine.begin() as conn:
        conn.execute(text(older))  # as a migration runs it


@pytest.mark.parametrize(("database", "make_it", "stale"), [
    ("unmigrated (at 0002)", _downgrade, "quota_step, quota_admit_batch"),
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
    assert decided_in_server == []  # nothing went through quota_admit_batch
    assert _ledger(postgres) == [("admitted", "a"), ("refused", "b")]
