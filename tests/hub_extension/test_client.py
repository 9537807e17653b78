"""QuotaClient against the real hub-managed service with real user tokens, and failing closed."""

from __future__ import annotations

import socket
import time

import pytest
from quota_helpers import heartbeated_after, wait_for

from hub_extension.client import (
    QUOTAS_OFF,
    Lease,
    QuotaClient,
    new_request_id,
    quota_lease,
    quota_off_line,
    quota_status,
)
from workflow_compiler.errors import QuotaExceeded, QuotaUnavailable

#: lease lifetime in these tests: short, so that only heartbeats keep a lease (every TTL / 3)
TTL = 3.0

HUB_ENV = {"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/user/x/"}


@pytest.mark.parametrize(
    "env",
    [{}, {"JUPYTERHUB_API_TOKEN": "t", **HUB_ENV},  # in a hub, but the service is not configured
     {"NBSCALE_QUOTA_URL": "http://127.0.0.1:1/"}],  # configured, but not in a hub
)
def test_quotas_are_off_outside_a_configured_hub(env) -> None:
    assert QuotaClient.from_env(env) is None


def test_quota_status_says_quotas_are_off(monkeypatch) -> None:
    for key in ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "NBSCALE_QUOTA_URL"):
        monkeypatch.delenv(key, raising=False)
    assert quota_status() == QUOTAS_OFF
    line = quota_off_line(quota_status())  # said once, not "quotas are off: ...: GPU quotas are off"
    assert line == "GPU quotas are off: not running inside JupyterHub with NBSCALE_QUOTA_URL set"
    with quota_lease(QuotaClient.from_env(), gpus=1) as lease:
        assert lease is None


@pytest.fixture
def client_for(quota_hub, unique_user):
    made = []

    def make(limits=None, name=None, url=None, **kw):
        name = name or unique_user("client")
        env = {"JUPYTERHUB_API_TOKEN": quota_hub.token_for(name), **HUB_ENV,
               "NBSCALE_QUOTA_URL": url or quota_hub.service_direct_url, **kw}
        client = QuotaClient.from_env(env)
        made.append(client)
        return name, client

    yield make
    for client in made:
        client.close()


def test_admit_heartbeat_release_and_my_quota(client_for, set_limits) -> None:
    name, client = client_for()
    set_limits(name, max_gpus=2, gpu_hours_budget=10)
    lease = client.admit(2, "default", 1, 600, "req-a", label="train.ipynb")
    assert lease.gpus_total == 2 and lease.status == "active" and not lease.replayed
    assert client.admit(2, "default", 1, 600, "req-a").id == lease.id  # retry-safe
    with pytest.raises(QuotaExceeded) as refused:
        client.admit(1, "default", 1, 600, "req-b")
    assert refused.value.limit == "max_gpus" and refused.value.usage["gpus_in_use"] == 2
    assert "you have 2 in use" in refused.value.message and refused.value.http_status == 409
    assert client.heartbeat(lease.id).expires_at >= lease.expires_at
    mine = client.my_quota()
    assert mine["enabled"] and mine["user"] == name and mine["remaining"]["gpus"] == 0
    # the service caps reported use at wall time x GPUs, so report less than has surely elapsed
    time.sleep(0.2)
    assert client.release(lease.id, gpu_seconds=0.1).gpu_seconds == 0.1
    assert client.my_quota()["remaining"]["gpus"] == 2
    with pytest.raises(QuotaExceeded, match="released"):
        client.heartbeat(lease.id)


def test_the_context_manager_heartbeats_and_always_releases(client_for, set_limits) -> None:
    name, client = client_for()
    set_limits(name, max_gpus=1)
    with (
        pytest.raises(RuntimeError, match="the run failed"),
        client.lease(gpus=1, estimated_seconds=60, ttl_seconds=TTL, label="sweep.ipynb") as lease,
    ):
        # alive after the moment it would have expired: only because the thread heartbeats
        wait_for(lambda: heartbeated_after(client.my_quota(), lease.id, lease.expires_at), 60,
                 "a heartbeat after the lease's first expiry")
        assert client.my_quota()["usage"]["gpus_in_use"] == 1
        raise RuntimeError("the run failed")
    assert client.my_quota()["usage"]["gpus_in_use"] == 0
    released = [x for x in client.my_quota()["leases"] if x["id"] == lease.id]
    assert released == []
    with quota_lease(client, gpus=1, estimated_seconds=5, request_id=new_request_id()) as again:
        assert again is not None and again.id != lease.id


def test_the_client_also_works_through_the_proxy(client_for, quota_hub) -> None:
    _, client = client_for(url=quota_hub.service_url)
    assert client.my_quota()["enabled"]


def test_a_token_without_access_is_told_to_ask_an_admin(quota_hub, unique_user) -> None:
    name = unique_user("noaccess")
    env = {"JUPYTERHUB_API_TOKEN": quota_hub.token_for(name, groups=[]), **HUB_ENV,
           "NBSCALE_QUOTA_URL": quota_hub.service_url}
    with pytest.raises(QuotaExceeded, match="hub admin") as refused:
        QuotaClient.from_env(env).admit(1, "default", 1, 60, "r")
    assert refused.value.limit == "access"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fail_closed_when_nothing_listens(client_for) -> None:
    _, client = client_for(url=f"http://127.0.0.1:{_closed_port()}/services/nbscale-quotas/")
    with pytest.raises(QuotaUnavailable, match="cannot be reached.*running work is not affected"):
        client.admit(1, "default", 1, 60, "r")


def test_fail_closed_when_the_proxy_has_no_such_service(client_for, quota_hub) -> None:
    _, client = client_for(url=f"{quota_hub.url}/services/not-deployed/")
    with pytest.raises(QuotaUnavailable, match="is not the GPU quota service"):
        client.admit(1, "default", 1, 60, "r")


def test_fail_closed_when_the_service_hangs(client_for) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        _, client = client_for(url=f"http://127.0.0.1:{port}/", NBSCALE_QUOTA_TIMEOUT="0.5")
        started = time.monotonic()
        with pytest.raises(QuotaUnavailable, match="ReadTimeout"):
            client.my_quota()
        assert time.monotonic() - started < 10


def test_a_lease_admitted_in_one_process_is_kept_and_released_by_another(client_for, set_limits, quota_hub) -> None:
    name, server_side = client_for()
    set_limits(name, max_gpus=1)
    lease = server_side.admit(1, "default", 1, 60, new_request_id(), ttl_seconds=TTL)
    worker_side = QuotaClient(quota_hub.service_direct_url, server_side._http.headers["Authorization"].split()[1])
    with worker_side.keep(Lease.from_json(lease.raw)):
        wait_for(lambda: heartbeated_after(server_side.my_quota(), lease.id, lease.expires_at), 60,
                 "the other process's heartbeat after the lease's first expiry")
        assert server_side.my_quota()["usage"]["gpus_in_use"] == 1
    assert server_side.my_quota()["usage"]["gpus_in_use"] == 0
    worker_side.close()
