"""Lease lifecycle through the real hub: idempotency, heartbeat, expiry reclaim, release, lowering a quota."""

from __future__ import annotations

from datetime import timedelta

import pytest
from quota_helpers import last_heartbeat, parse_time, wait_for


@pytest.fixture
def user(quota_hub, api, unique_user):
    name = unique_user("lease")
    return name, api(quota_hub.token_for(name))


def test_same_request_id_returns_the_same_lease(user, set_limits) -> None:
    name, client = user
    set_limits(name, max_gpus=1)
    first = client.admit("run-1")
    again = client.admit("run-1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["replayed"] and again.json()["lease"]["id"] == first.json()["lease"]["id"]
    assert client.get("me").json()["usage"]["gpus_in_use"] == 1  # not counted twice
    conflict = client.admit("run-1", gpus=2)
    assert conflict.status_code == 409 and "already used for a different request" in conflict.json()["message"]


def test_heartbeat_extends_and_release_frees(user, set_limits) -> None:
    name, client = user
    set_limits(name, max_gpus=1)
    lease = client.admit("hb", ttl_seconds=30).json()["lease"]
    # heartbeat until one lands a second after admission (the release below reports 0.5 GPU-seconds,
    # which the service caps at the lease's age)
    old_enough = parse_time(lease["created_at"]) + timedelta(seconds=1)
    beat = wait_for(lambda: last_heartbeat(b := client.post(f"leases/{lease['id']}/heartbeat", json={}).json()["lease"])
                    > old_enough and b, 30, "a heartbeat a second after admission")
    assert beat["status"] == "active" and beat["expires_at"] > lease["expires_at"]
    assert client.admit("hb-2").status_code == 409
    done = client.post(f"leases/{lease['id']}/release", json={"gpu_seconds": 0.5}).json()["lease"]
    assert done["status"] == "released" and done["gpu_seconds"] == 0.5
    assert client.post(f"leases/{lease['id']}/release", json={}).json()["lease"]["gpu_seconds"] == 0.5
    assert client.post(f"leases/{lease['id']}/heartbeat", json={}).status_code == 410
    assert client.admit("hb-2").status_code == 201


def test_an_abandoned_lease_is_reclaimed_and_usage_does_not_leak(user, set_limits, admin_api) -> None:
    name, client = user
    set_limits(name, max_gpus=2)
    dead = client.admit("dies", gpus=2, ttl_seconds=1).json()["lease"]
    assert client.admit("waits").status_code == 409
    # no heartbeat: the service's periodic reclaim (every second) expires it and writes the ledger
    wait_for(lambda: [e["event"] for e in admin_api.get("ledger", params={"user": name}).json()["entries"]
                      if e["lease_id"] == dead["id"]] == ["expired", "admitted"], 30, "the lease's expiry")
    assert client.get("me").json()["usage"]["gpus_in_use"] == 0
    assert client.admit("after", gpus=2).status_code == 201
    assert client.post(f"leases/{dead['id']}/heartbeat", json={}).status_code == 410


def test_lowering_a_quota_blocks_new_work_and_keeps_running_work(user, set_limits) -> None:
    name, client = user
    set_limits(name, max_gpus=4)
    leases = [client.admit(f"run-{i}").json()["lease"] for i in range(3)]
    set_limits(name, max_gpus=1)
    refused = client.admit("one-more")
    assert refused.status_code == 409
    body = refused.json()
    assert body["limit"] == "max_gpus" and body["usage"]["gpus_in_use"] == 3
    assert "you have 3 in use" in body["message"] and "wait for runs holding 3 GPU(s)" in body["message"]
    for lease in leases:  # running work keeps its lease
        assert client.post(f"leases/{lease['id']}/heartbeat", json={}).status_code == 200
    assert client.get("me").json()["usage"]["gpus_in_use"] == 3


def test_a_sweep_asks_for_concurrency_times_gpus_at_once(user, set_limits) -> None:
    name, client = user
    set_limits(name, max_gpus=4, max_gpus_per_run=2, allowed_pools=["a100"])
    too_wide = client.admit("sweep", gpus=2, concurrency=3, pool="a100")
    assert too_wide.status_code == 409 and "lower the sweep concurrency to 2" in too_wide.json()["message"]
    assert client.admit("pool", pool="t4").json()["limit"] == "allowed_pools"
    assert client.admit("big", gpus=3, pool="a100").json()["limit"] == "max_gpus_per_run"
    fits = client.admit("sweep-2", gpus=2, concurrency=2, pool="a100")
    assert fits.status_code == 201 and fits.json()["lease"]["gpus_total"] == 4
