"""A user of the deployed hub, driven through the hub's and the single-user server's REST APIs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

TERMINAL = {"SUCCEEDED", "FAILED", "KILLED"}


class HubUser:
    """One hub user with a token, a running single-user server and the examples in its home."""

    def __init__(self, hub_url: str, admin_token: str, name: str, groups: tuple[str, ...] = ("gpu-users",)) -> None:
        self.name = name
        self.admin = httpx.Client(base_url=f"{hub_url}/hub/api/", timeout=60, headers={"Authorization": f"token {admin_token}"})
        self._call(self.admin, "POST", f"users/{name}", ok=(201, 409))
        for group in groups:
            self._call(self.admin, "POST", f"groups/{group}", ok=(201, 409))
            self._call(self.admin, "POST", f"groups/{group}/users", json={"users": [name]})
        token = self._call(self.admin, "POST", f"users/{name}/tokens", json={"note": "nbscale e2e"}, ok=(201,)).json()["token"]
        self.http = httpx.Client(base_url=f"{hub_url}/user/{name}/", timeout=120, headers={"Authorization": f"token {token}"})
        self.quotas = httpx.Client(base_url=f"{hub_url}/services/nbscale-quotas/api/v1/", timeout=60,
                                   headers={"Authorization": f"token {token}"})

    @staticmethod
    def _call(client: httpx.Client, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> httpx.Response:
        answer = client.request(method, path, **kwargs)
        assert answer.status_code in ok, f"{method} {path} -> {answer.status_code}: {answer.text}"
        return answer

    def start_server(self, timeout: float = 600) -> None:
        """Spawn the user's server (KubeSpawner) and wait until it is ready."""
        self._call(self.admin, "POST", f"users/{self.name}/server", ok=(201, 202, 400))  # 400: already running
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self._call(self.admin, "GET", f"users/{self.name}").json().get("servers", {}).get("", {})
            if server.get("ready"):
                return
            time.sleep(3)
        raise TimeoutError(f"{self.name}'s server not ready after {timeout} s")

    def upload(self, path: Path, name: str | None = None) -> None:
        """Put a notebook or text file into the user's home through the contents API."""
        target = name or path.name
        if path.suffix == ".ipynb":
            body = {"type": "notebook", "format": "json", "content": json.loads(path.read_text())}
        else:
            body = {"type": "file", "format": "text", "content": path.read_text()}
        self._call(self.http, "PUT", f"api/contents/{target}", json=body, ok=(200, 201))

    def submit(self, spec: dict[str, Any], ok: tuple[int, ...] = (201,)) -> httpx.Response:
        """POST a RunSpec to the nbscale server extension."""
        return self._call(self.http, "POST", "nbscale/api/runs", json=spec, ok=ok)

    def run(self, run_id: str) -> dict[str, Any]:
        """The run's record, as the extension reports it."""
        return self._call(self.http, "GET", f"nbscale/api/runs/{run_id}").json()

    def wait(self, run_id: str, timeout: float = 1200) -> dict[str, Any]:
        """Poll the run until it ends."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = self.run(run_id)
            if record["status"] in TERMINAL:
                return record
            time.sleep(5)
        raise TimeoutError(f"run {run_id} still {record['status']} after {timeout} s")

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel the run through the extension."""
        return self._call(self.http, "POST", f"nbscale/api/runs/{run_id}/cancel").json()
