"""Unauthenticated health checks for the kubelet's probes: no token, no hub round trip."""

from __future__ import annotations

import json
import logging

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from tornado.web import RequestHandler

from .. import SERVICE_HEADER
from ..store import QuotaStore

log = logging.getLogger(__name__)


class HealthHandler(RequestHandler):
    """GET ``health/live``: the process answers. GET ``health/ready``: it also reaches its database.

    Neither asks the hub who is calling, so a probe works while the hub restarts; neither says
    anything about users or quotas.
    """

    store: QuotaStore
    check_database: bool

    def initialize(self, store: QuotaStore, check_database: bool = False) -> None:  # type: ignore[override]
        self.store = store
        self.check_database = check_database

    def get(self) -> None:
        """200 ``{"status": "ok"}``, or 503 ``{"status": "unavailable", "message"}`` when the database is out of reach."""
        self.set_header(SERVICE_HEADER, "1")
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        if self.check_database:
            try:
                with self.store.engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            except SQLAlchemyError as exc:
                log.warning("readiness: the quota database is out of reach: %s", exc)
                self.set_status(503)
                self.finish(json.dumps({"status": "unavailable", "message": "The quota database is out of reach; see the service's log."}))
                return
        self.finish(json.dumps({"status": "ok"}))


def health_routes(prefix: str) -> list[tuple[str, type, dict[str, object]]]:
    """The two probe URLs under ``prefix`` (the service prefix)."""
    return [
        (prefix + "health/live", HealthHandler, {"check_database": False}),
        (prefix + "health/ready", HealthHandler, {"check_database": True}),
    ]
