"""A real run through the REST API: submit, follow, read logs and outputs, list, cancel."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

pytestmark = pytest.mark.slow


async def wait_status(api: Any, run_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _, record = await api("GET", f"runs/{run_id}")
        if record["status"] in statuses:
            return record
        await asyncio.sleep(0.5)
    raise AssertionError(f"{run_id} stayed {record.get('status')}: {record}")


async def test_a_run_from_submit_to_outputs(api: Any, jp_fetch: Any) -> None:
    status, record = await api("POST", "runs", body={"notebook": "quick.ipynb", "parameters": {"greeting": "bonjour-", "times": 3}})
    assert status == 201, record
    assert record["id"].startswith("nbs-") and record["status"] in ("PENDING", "RUNNING")
    assert "run_dir" not in record and "pid" not in record
    done = await wait_status(api, record["id"], {"SUCCEEDED", "FAILED", "KILLED"})
    assert done["status"] == "SUCCEEDED", done
    assert done["progress"]["done"] == done["progress"]["total"] > 0
    assert done["duration"] > 0
    assert done["links"]["output_notebook"].endswith(f"/nbscale/api/runs/{record['id']}/outputs/output.ipynb")

    status, output = await api("GET", f"runs/{record['id']}/outputs/output.ipynb")
    assert status == 200
    text = json.dumps(output)
    assert "bonjour-bonjour-bonjour-" in text  # the new values reached the kernel

    assert done["links"]["html"].endswith(f"/nbscale/api/runs/{record['id']}/outputs/output.html")  # html is on by default
    response = await jp_fetch("nbscale", "api", "runs", record["id"], "outputs", "output.html")
    assert response.headers["Content-Type"].startswith("text/html")
    # the literal policy, not the server's constant: a weakened constant (allow-scripts) must fail here
    assert response.headers["Content-Security-Policy"] == "sandbox; frame-ancestors 'self'"
    assert b"bonjour-bonjour-bonjour-" in response.body

    status, logs = await api("GET", f"runs/{record['id']}/logs", params={"offset": "0"})
    assert status == 200 and logs["offset"] == len(logs["text"].encode()) > 0
    status, tail = await api("GET", f"runs/{record['id']}/logs", params={"offset": str(logs["offset"]), "wait": "1"})
    assert tail == {"text": "", "offset": logs["offset"], "done": True}

    status, listing = await api("GET", "runs", params={"status": "SUCCEEDED", "notebook": "quick.ipynb"})
    assert status == 200 and [r["id"] for r in listing["runs"]] == [record["id"]]
    _, none = await api("GET", "runs", params={"status": "FAILED"})
    assert none["runs"] == [] and none["total"] == 0


async def test_cancel_stops_a_running_run(api: Any) -> None:
    status, record = await api("POST", "runs", body={"notebook": "slow.ipynb", "parameters": {"seconds": 300}})
    assert status == 201, record
    await wait_status(api, record["id"], {"RUNNING"})
    started = time.monotonic()
    status, cancelled = await api("POST", f"runs/{record['id']}/cancel")
    assert status == 200, cancelled
    final = await wait_status(api, record["id"], {"KILLED", "FAILED", "SUCCEEDED"}, timeout=90)
    assert final["status"] == "KILLED"
    assert time.monotonic() - started < 90
    status, again = await api("POST", f"runs/{record['id']}/cancel")
    assert status == 200 and again["status"] == "KILLED"


async def test_pagination(api: Any) -> None:
    ids = []
    for seconds in (0, 0, 0):
        _, record = await api("POST", "runs", body={"notebook": "slow.ipynb", "parameters": {"seconds": seconds}})
        ids.append(record["id"])
    _, first = await api("GET", "runs", params={"per_page": "2", "page": "1"})
    _, second = await api("GET", "runs", params={"per_page": "2", "page": "2"})
    assert first["total"] == second["total"] == 3
    assert [r["id"] for r in first["runs"] + second["runs"]] == ids[::-1]
    for run_id in ids:
        await wait_status(api, run_id, {"SUCCEEDED", "FAILED", "KILLED"})


async def test_a_body_cannot_choose_the_user(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_USER", "owner-of-this-server")
    status, record = await api("POST", "runs", body={"notebook": "slow.ipynb", "parameters": {"seconds": 0}, "user": "someone-else"})
    assert status == 201, record
    assert record["user"] == "owner-of-this-server"
    await wait_status(api, record["id"], {"SUCCEEDED", "FAILED", "KILLED"})
