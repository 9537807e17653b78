"""Submissions from Jupyter are admitted against the hub's GPU quota service (a real hub and service)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hub_extension.devhub import QUOTA_ADMIN_USER, LocalHub, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    with LocalHub(tmp_path_factory.mktemp("plugin-quota-hub"), service_args=["--default-ttl=30", "--reclaim-interval=1"]) as running:
        yield running


@pytest.fixture
def hub_user(hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> str:
    """A hub user limited to 1 GPU, whose token this (in-process) Jupyter server holds, as under a hub."""
    name = f"plugin-{uuid.uuid4().hex[:8]}"
    admin = hub.token_for(QUOTA_ADMIN_USER, groups=[])
    answer = httpx.put(f"{hub.service_url}api/v1/policies/user/{name}", json={"max_gpus": 1},
                       headers={"Authorization": f"token {admin}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.token_for(name))
    monkeypatch.setenv("JUPYTERHUB_API_URL", hub.api_url)
    monkeypatch.setenv("NBSCALE_QUOTA_URL", hub.service_direct_url)
    return name


async def live_leases(api: Any) -> list[dict[str, Any]]:
    status, quota = await api("GET", "quota")
    assert status == 200 and quota["enabled"] is not False, quota
    return [lease for lease in quota["leases"] if lease["status"] == "active"]


async def test_over_the_limit_is_409_and_nothing_runs(api: Any, hub_user: str) -> None:
    status, answer = await api("POST", "runs", body={"notebook": "quick.ipynb", "resources": {"gpus": 2}})
    assert status == 409, answer
    assert answer["type"] == "QuotaExceeded" and answer["message"]
    _, listing = await api("GET", "runs")
    assert listing["total"] == 0


async def test_a_gpu_run_holds_a_lease_until_it_ends(api: Any, hub_user: str) -> None:
    status, record = await api("POST", "runs", body={"notebook": "slow.ipynb", "parameters": {"seconds": 8},
                                                     "resources": {"gpus": 1}})
    assert status == 201, record
    leases = await live_leases(api)
    assert [(lease["gpus_total"], lease["label"]) for lease in leases] == [(1, "slow.ipynb")]
    status, refused = await api("POST", "runs", body={"notebook": "quick.ipynb", "resources": {"gpus": 1}})
    assert status == 409, refused  # the one GPU is taken while the first run goes
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        _, current = await api("GET", f"runs/{record['id']}")
        if current["status"] in ("SUCCEEDED", "FAILED", "KILLED") and not await live_leases(api):
            break
        await asyncio.sleep(0.5)
    assert current["status"] == "SUCCEEDED", current
    assert await live_leases(api) == []  # released when the run ended


async def test_an_unreachable_quota_service_refuses_gpu_runs(api: Any, hub_user: str, monkeypatch: pytest.MonkeyPatch,
                                                            notebook_root: Path) -> None:
    monkeypatch.setenv("NBSCALE_QUOTA_URL", f"http://127.0.0.1:{free_port()}/services/nbscale-quotas/")
    status, answer = await api("POST", "runs", body={"notebook": "quick.ipynb", "resources": {"gpus": 1}})
    assert status == 503, answer
    assert answer["type"] == "QuotaUnavailable"
    status, cpu_only = await api("POST", "runs", body={"notebook": "quick.ipynb"})
    assert status == 201, cpu_only  # CPU-only runs need no GPU lease
    for _ in range(240):  # let it finish rather than leave a worker behind
        _, current = await api("GET", f"runs/{cpu_only['id']}")
        if current["status"] in ("SUCCEEDED", "FAILED", "KILLED"):
            break
        await asyncio.sleep(0.5)
    assert current["status"] == "SUCCEEDED", current
