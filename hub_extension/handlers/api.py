"""REST API of the quota service under ``{service_prefix}api/v1/``."""

from __future__ import annotations

import json
import logging
import time
from functools import partial

from tornado.escape import url_escape
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from .. import admin
from ..errors import UserNotFound
from ..schemas import AdmissionBody, PolicyBody, ReleaseBody
from ..store import AdmissionRequest, Caller
from .base import APIHandler
from .benchmark import benchmark_routes
from .thread_results import in_database_thread, thread_result

log = logging.getLogger(__name__)


class LeasesHandler(APIHandler):
    """POST: ask for admission (201 lease, 200 replay of a known request id, 409 refusal). GET: own leases."""

    async def post(self) -> None:
        caller = self.require_user()
        body = self.body_as(AdmissionBody)
        started = time.perf_counter()
        result = await thread_result(self.store.submit_admit(caller, AdmissionRequest(**body.model_dump())))
        if (timings := self.settings.get("benchmark_timings")) is not None:  # only with the benchmark endpoints
            timings.decisions.append(time.perf_counter() - started)
        if result.refusal is not None:
            self.write_json(result.refusal.to_dict(), status=409)
        else:
            self.write_json({"admitted": True, "replayed": result.replayed, "lease": result.lease},
                            status=200 if result.replayed else 201)

    async def get(self) -> None:
        caller = self.require_user()
        quota = await in_database_thread(self.store.quota_for, caller.name, caller.groups)
        self.write_json({"leases": quota["leases"]})


class HeartbeatHandler(APIHandler):
    """POST ``leases/{id}/heartbeat``: extend the caller's lease."""

    async def post(self, lease_id: str) -> None:
        self.write_json({"lease": await thread_result(self.store.submit_heartbeat(self.require_user(), lease_id))})


class ReleaseHandler(APIHandler):
    """POST ``leases/{id}/release``: end the caller's lease with the GPU-seconds used."""

    async def post(self, lease_id: str) -> None:
        caller = self.require_user()
        body = self.body_as(ReleaseBody)
        self.write_json({"lease": await thread_result(self.store.submit_release(caller, lease_id, body.gpu_seconds))})


class MyQuotaHandler(APIHandler):
    """GET ``me``: the caller's limits, usage, remaining budget and live leases."""

    async def get(self) -> None:
        caller = self.require_user()
        self.write_json(await in_database_thread(self.store.quota_for, caller.name, caller.groups))


class UserQuotaHandler(APIHandler):
    """GET ``users/{name}``: one user's quota (admins only).

    Group membership comes from the hub (the service's role needs ``read:users:groups``);
    without that scope, from the user's most recent lease.
    """

    async def get(self, name: str) -> None:
        self.require_admin()
        groups = await self._hub_groups(name)
        if groups is None:
            overview = await in_database_thread(admin.usage_overview, self.store)
            groups = overview["users"].get(name, {}).get("groups", [])
        self.write_json(await in_database_thread(self.store.quota_for, name, tuple(sorted(groups))))

    async def _hub_groups(self, name: str) -> list[str] | None:
        request = HTTPRequest(
            f"{self.hub_auth.api_url}/users/{url_escape(name, plus=False)}", request_timeout=10,
            headers={"Authorization": f"token {self.hub_auth.api_token}"},
        )
        try:
            answer = await AsyncHTTPClient().fetch(request, raise_error=False)
        except OSError as exc:
            log.warning("cannot ask the hub for %s's groups: %s", name, exc)
            return None
        if answer.code == 404:
            raise UserNotFound(f"The hub has no user '{name}'.")
        if answer.code != 200:
            return None
        groups = json.loads(answer.body).get("groups")
        return list(groups) if isinstance(groups, list) else None


class UsageHandler(APIHandler):
    """GET ``usage``: live usage of every user and group (admins only)."""

    async def get(self) -> None:
        self.require_admin()
        window = self.number_argument("window_hours", 168.0, float)
        self.write_json(await in_database_thread(admin.usage_overview, self.store, window))


class PoliciesHandler(APIHandler):
    """GET ``policies``: every policy (admins only)."""

    async def get(self) -> None:
        self.require_admin()
        self.write_json({"policies": await in_database_thread(admin.list_policies, self.store)})


class PolicyHandler(APIHandler):
    """PUT/DELETE ``policies/{kind}/{name}`` (``default`` takes the name ``*``), admins only."""

    async def put(self, kind: str, name: str) -> None:
        self.require_admin()
        body = self.body_as(PolicyBody)
        self.write_json(await in_database_thread(admin.set_policy, self.store, self.actor, kind, name,
                                                 body.model_dump()))

    async def delete(self, kind: str, name: str) -> None:
        self.require_admin()
        await in_database_thread(admin.delete_policy, self.store, self.actor, kind, name)
        self.set_status(204)
        self.finish()


class LedgerHandler(APIHandler):
    """GET ``ledger?user=&limit=&before=``: audit entries, newest first (admins only)."""

    async def get(self) -> None:
        self.require_admin()
        entries = await in_database_thread(partial(
            admin.ledger_page, self.store, user=self.get_argument("user", None),
            limit=self.number_argument("limit", 100, int), before_id=self.number_argument("before", None, int),
        ))
        self.write_json({"entries": entries})


def api_routes(prefix: str) -> list[tuple[str, type, dict[str, object]]]:
    """URL table of the REST API under ``prefix`` (the service prefix)."""
    api = prefix + "api/v1/"
    lease = r"([^/]{1,64})"
    routes: list[tuple[str, type, dict[str, object]]] = [
        (api + "leases", LeasesHandler, {}),
        (api + f"leases/{lease}/heartbeat", HeartbeatHandler, {}),
        (api + f"leases/{lease}/release", ReleaseHandler, {}),
        (api + "me", MyQuotaHandler, {}),
        (api + r"users/([^/]+)", UserQuotaHandler, {}),
        (api + "usage", UsageHandler, {}),
        (api + "policies", PoliciesHandler, {}),
        (api + r"policies/(default|group|user)/([^/]+)", PolicyHandler, {}),
        (api + "ledger", LedgerHandler, {}),
    ]
    return routes + benchmark_routes(api)


__all__ = ["Caller", "api_routes"]
