"""Fixtures for the quota service tests: one real JupyterHub (with proxy and service) per session.

Reuse from another test package by importing the fixtures, e.g. in tests/notebook_plugin/conftest.py:
``from tests.hub_extension.conftest import quota_hub, quota_admin_token  # noqa: F401``
or by starting :class:`hub_extension.devhub.LocalHub` yourself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from hub_extension.devhub import QUOTA_ADMIN_USER, LocalHub, throwaway_postgres


@pytest.fixture(scope="session")
def quota_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """A running JupyterHub on 127.0.0.1 with the quota service (lease TTL 60 s, reclaim every 1 s)."""
    hub = LocalHub(tmp_path_factory.mktemp("quota-hub"), service_args=["--default-ttl=60", "--reclaim-interval=1"])
    try:  # a failed or timed-out start is stopped too (start does it as well): no service outlives the session
        hub.start()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def quota_admin_token(quota_hub: LocalHub) -> str:
    """Token of the quota admin user (holds custom:nbscale-quotas:admin)."""
    return quota_hub.token_for(QUOTA_ADMIN_USER, groups=[])


@pytest.fixture
def unique_user() -> Callable[[str], str]:
    """Fresh user names, so tests never share usage."""
    return lambda prefix="u": f"{prefix}-{uuid.uuid4().hex[:8]}"


class ServiceAPI:
    """Minimal HTTP helper for the quota REST API with one token."""

    def __init__(self, hub: LocalHub, token: str) -> None:
        self.hub = hub
        self.http = httpx.Client(base_url=hub.service_url + "api/v1/", timeout=30,
                                 headers={"Authorization": f"token {token}"})

    def admit(self, request_id: str | None = None, **body: Any) -> httpx.Response:
        body = {"gpus": 1, "estimated_seconds": 60, "request_id": request_id or uuid.uuid4().hex, **body}
        return self.http.post("leases", json=body)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.http, name)


@pytest.fixture
def api(quota_hub: LocalHub) -> Callable[[str], ServiceAPI]:
    """``api(token)`` → a client of the REST API authenticated with ``token``."""
    clients: list[ServiceAPI] = []

    def make(token: str) -> ServiceAPI:
        clients.append(ServiceAPI(quota_hub, token))
        return clients[-1]

    yield make  # type: ignore[misc]
    for client in clients:
        client.http.close()


@pytest.fixture
def admin_api(api: Callable[[str], ServiceAPI], quota_admin_token: str) -> ServiceAPI:
    """REST client authenticated as the quota admin."""
    return api(quota_admin_token)


@pytest.fixture
def set_limits(admin_api: ServiceAPI) -> Callable[..., dict[str, Any]]:
    """``set_limits("alice", max_gpus=4)`` → the user's policy, set through the admin API."""

    def put(user: str, **limits: Any) -> dict[str, Any]:
        answer = admin_api.put(f"policies/user/{user}", json=limits)
        assert answer.status_code == 200, answer.text
        return answer.json()

    return put


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A Postgres URL: $NBSCALE_TEST_POSTGRES_URL, else a throwaway local cluster (Debian ``postgresql``)."""
    if os.environ.get("NBSCALE_TEST_POSTGRES_URL"):
        yield os.environ["NBSCALE_TEST_POSTGRES_URL"]
        return
    try:
        with throwaway_postgres() as url:
            yield url
    except FileNotFoundError as exc:  # a developer's machine without Debian's postgresql
        if os.environ.get("CI"):  # the bootstrap installs it: under CI a missing Postgres is a broken install, not a skip
            raise
        pytest.skip(f"{exc}: `scripts/bootstrap.sh test` installs postgresql, or set NBSCALE_TEST_POSTGRES_URL")
