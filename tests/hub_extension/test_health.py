"""The probe endpoints answer without a token and tell a reachable database from a lost one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tornado.testing import AsyncHTTPTestCase
from tornado.web import Application

from hub_extension import SERVICE_HEADER
from hub_extension.db import make_engine, upgrade_database
from hub_extension.handlers.health import health_routes
from hub_extension.store import QuotaStore

PREFIX = "/services/nbscale-quotas/"


class _HealthCase(AsyncHTTPTestCase):
    db_url = ""

    def get_app(self) -> Application:
        engine = make_engine(self.db_url)
        if "missing-folder" not in self.db_url:
            upgrade_database(engine)
        self.engine = engine
        return Application(
            [(url, handler, {**kwargs, "store": QuotaStore(engine)}) for url, handler, kwargs in health_routes(PREFIX)]
        )

    def tearDown(self) -> None:
        super().tearDown()
        self.engine.dispose()

    def answer(self, path: str) -> tuple[int, dict[str, str], str]:
        response = self.fetch(PREFIX + path)
        return response.code, dict(response.headers), response.body.decode()


@pytest.mark.parametrize(
    ("database", "path", "status", "body_status"),
    [
        ("reachable", "health/live", 200, "ok"),
        ("reachable", "health/ready", 200, "ok"),
        ("lost", "health/live", 200, "ok"),
        ("lost", "health/ready", 503, "unavailable"),
    ],
)
def test_probe_answers_without_a_token(tmp_path: Path, database: str, path: str, status: int, body_status: str) -> None:
    folder = tmp_path if database == "reachable" else tmp_path / "missing-folder"

    class Case(_HealthCase):
        db_url = f"sqlite:///{folder / 'quotas.sqlite'}"

        def runTest(self) -> None:
            code, headers, body = self.answer(path)
            assert code == status, body
            assert json.loads(body)["status"] == body_status
            assert headers[SERVICE_HEADER] == "1"

    result = Case().run()
    assert result is not None and result.wasSuccessful(), [str(e[1]) for e in result.errors + result.failures]
