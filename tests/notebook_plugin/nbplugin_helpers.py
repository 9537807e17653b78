"""Helpers shared by the notebook_plugin tests (kept out of the production package)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import nbformat
from jupyter_server.auth.authorizer import Authorizer


class DenyAllAuthorizer(Authorizer):
    """Refuses every action on every resource, to prove each handler asks the authorizer."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return False


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    """A small notebook: a cell tagged ``parameters`` and one code cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


class JupyterProcess:
    """A real ``jupyter server`` or ``jupyter lab`` on 127.0.0.1, with its own config and data dirs."""

    def __init__(self, app: str, root: Path, state: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.app, self.root, self.state = app, root, state
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = {**os.environ, "JUPYTER_DATA_DIR": str(state / "data"), "JUPYTER_CONFIG_DIR": str(state / "config"),
                    "JUPYTER_RUNTIME_DIR": str(state / "runtime"), **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        state.mkdir(parents=True, exist_ok=True)
        self.log_path = state / f"{app}-{self.port}.log"

    def start(self, timeout: float = 90) -> JupyterProcess:
        """Start it and wait until the nbscale API answers."""
        argv = [sys.executable, "-m", "jupyterlab" if self.app == "lab" else "jupyter_server",
                "--ip=127.0.0.1", f"--port={self.port}", "--no-browser", f"--ServerApp.root_dir={self.root}",
                f"--IdentityProvider.token={self.token}", "--ServerApp.port_retries=0"]
        if os.geteuid() == 0:
            argv.append("--allow-root")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited: {self.log_path.read_text()[-3000:]}")
            try:
                status, _ = self.api("GET", "schema")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
                continue
            if status != 200:
                raise RuntimeError(f"the nbscale API answered {status}: {self.log_path.read_text()[-3000:]}")
            return self
        raise RuntimeError(f"jupyter {self.app} did not answer in {timeout}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        """SIGTERM and wait (the runs it started keep going: they are detached)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Call the nbscale API with the token; returns (status, JSON)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}nbscale/api/{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw or b"null")
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def wait_for(self, run_id: str, statuses: set[str], timeout: float = 180) -> dict[str, Any]:
        """Poll a run until its status is one of ``statuses``."""
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            _, record = self.api("GET", f"runs/{run_id}")
            if record.get("status") in statuses:
                return record
            if record.get("status") in ("SUCCEEDED", "FAILED", "KILLED"):
                raise AssertionError(f"run {run_id} ended {record['status']}, not {statuses}: {record}")
            time.sleep(0.5)
        raise AssertionError(f"run {run_id} did not reach {statuses} in {timeout}s: {record}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def checkout_lab_env(state: Path, build: Path) -> dict[str, str]:
    """The environment that makes Lab load this checkout's build of the lab extension, ahead of any installed one."""
    labextensions = state / "checkout-data" / "labextensions"
    labextensions.mkdir(parents=True, exist_ok=True)
    (labextensions / "nbscale").symlink_to(build)
    return {"JUPYTER_PATH": str(labextensions.parent)}


def assert_browser_tools(root: Path) -> None:
    """Fail with what to install when Debian's chromium or playwright-core is missing."""
    assert Path("/usr/bin/chromium").exists(), "install Debian's chromium: scripts/bootstrap.sh test does it"
    assert (root / "node_modules" / "playwright-core").is_dir(), "run npm install at the repository root"
