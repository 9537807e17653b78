"""Where the magics send runs: the Jupyter server's REST API when the kernel lives in a server
with the nbscale extension (so runs show in the Runs panel), else the local executor directly."""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from workflow_compiler.errors import NbscaleError, NotebookError, RunNotFound
from workflow_compiler.spec import RunSpec

log = logging.getLogger(__name__)


class RunClient(Protocol):
    """What the magics need from a backend; records are the REST API's JSON form."""

    where: str

    def submit(self, spec: RunSpec) -> dict[str, Any]: ...
    def get(self, run_id: str) -> dict[str, Any]: ...
    def cancel(self, run_id: str) -> dict[str, Any]: ...
    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]: ...
    def list(self, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]: ...
    def quota(self) -> dict[str, Any]: ...


class LocalRunClient:
    """Runs on this machine through the local executor, as the ``nbscale`` CLI does."""

    def __init__(self, root: str | os.PathLike[str] | None = None, executor: str | None = None) -> None:
        from workflow_compiler.executors import get_executor
        from workflow_compiler.executors.selection import default_executor_name

        self.root = Path(root or os.getcwd()).resolve()
        self.executor = get_executor(executor or default_executor_name(), root=str(self.root))
        self.where = f"{self.executor.name} executor (runs in {self.executor.store.path.parent})"

    def executor_of(self, run_id: str) -> Any:
        """The executor that runs ``run_id``, as its record names it."""
        return self.executor.for_run(run_id)

    def submit(self, spec: RunSpec) -> dict[str, Any]:
        """Compile, validate, admit against the GPU quota (inside a hub) and start: the CLI's own path."""
        from workflow_compiler.submit import submit

        return submit(spec, executor=self.executor, root=self.root).to_api()

    def get(self, run_id: str) -> dict[str, Any]:
        return dict(self.executor_of(run_id).get(run_id).to_api())

    def cancel(self, run_id: str) -> dict[str, Any]:
        return dict(self.executor_of(run_id).cancel(run_id).to_api())

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        text, next_offset = self.executor_of(run_id).logs(run_id, offset)
        return str(text), int(next_offset)

    def list(self, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        records, _ = self.executor.store.list(status=status, limit=limit)
        return [r.to_api() for r in records]

    def quota(self) -> dict[str, Any]:
        from hub_extension.client import quota_status

        return quota_status()


class RestRunClient:
    """Runs through the nbscale REST API of the Jupyter server this kernel belongs to."""

    def __init__(self, url: str, token: str, root_dir: str, cwd: str | os.PathLike[str] | None = None) -> None:
        self.api = url.rstrip("/") + "/nbscale/api/"
        self.token = token
        self.root = Path(root_dir).resolve()
        self.cwd = Path(cwd or os.getcwd()).resolve()
        self.where = f"Jupyter server {url}"

    def submit(self, spec: RunSpec) -> dict[str, Any]:
        """POST the spec; the notebook path becomes relative to the server's root, not the kernel's cwd."""
        absolute = (self.cwd / spec.notebook).resolve()
        if absolute != self.root and self.root not in absolute.parents:
            raise NotebookError(f"{spec.notebook} is outside the Jupyter server's root {self.root}.", http_status=403)
        body = spec.model_dump(mode="json", exclude={"user"})
        body["notebook"] = absolute.relative_to(self.root).as_posix()
        return self.call("POST", "runs", body)

    def get(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"runs/{urllib.parse.quote(run_id)}")

    def cancel(self, run_id: str) -> dict[str, Any]:
        return self.call("POST", f"runs/{urllib.parse.quote(run_id)}/cancel", {})

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        answer = self.call("GET", f"runs/{urllib.parse.quote(run_id)}/logs?offset={int(offset)}")
        return answer["text"], answer["offset"]

    def list(self, *, status: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in {"status": status, "per_page": limit}.items() if v})
        return list(self.call("GET", f"runs?{query}")["runs"])

    def quota(self) -> dict[str, Any]:
        return self.call("GET", "quota")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; an error answer becomes the NbscaleError it describes."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise _api_error(exc) from None


def _api_error(exc: urllib.error.HTTPError) -> NbscaleError:
    try:
        payload = json.loads(exc.read() or b"{}")
    except json.JSONDecodeError:
        payload = {}
    message = payload.get("message") or f"the nbscale API answered {exc.code} {exc.reason}"
    error: NbscaleError = RunNotFound(message) if exc.code == 404 else NbscaleError(message, errors=payload.get("errors", []))
    error.http_status = exc.code
    return error


def find_server(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The running Jupyter server that started this kernel (its ``jpserver-<pid>.json`` info), if any."""
    from jupyter_core.paths import jupyter_runtime_dir

    env = os.environ if environ is None else environ
    parents = {os.getppid()}
    if env.get("JPY_PARENT_PID", "").isdigit():
        parents.add(int(env["JPY_PARENT_PID"]))
    # A server names its info file by its pid (ServerApp.info_file's default): reading those files
    # spares the first magic importing jupyter_server.serverapp (0.2-0.5 s) just to list servers.
    for pid in sorted(parents):
        info = _server_info(Path(jupyter_runtime_dir()) / f"jpserver-{pid}.json")
        if info and info.get("pid") == pid:
            return info
    if not env.get("JPY_PARENT_PID"):
        return None  # not a kernel that Jupyter started: no server to look for
    from jupyter_server.serverapp import list_running_servers  # a server with its own info_file name

    for info in list_running_servers():
        if info.get("pid") in parents:
            return dict(info)
    return None


def _server_info(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent, or being written
        return None
    return info if isinstance(info, dict) else None


def connect(environ: Mapping[str, str] | None = None) -> RunClient:
    """The REST client when this kernel's server has the nbscale API, else the local one."""
    env = os.environ if environ is None else environ
    info = find_server(env)
    if info:
        token = info.get("token") or env.get("JUPYTERHUB_API_TOKEN", "")
        client = RestRunClient(info["url"], token, info.get("root_dir") or info.get("notebook_dir") or os.getcwd())
        try:
            client.call("GET", "schema")
            return client
        except (NbscaleError, urllib.error.URLError) as exc:
            log.info("the Jupyter server at %s has no usable nbscale API (%s); running locally", info["url"], exc)
    return LocalRunClient()
