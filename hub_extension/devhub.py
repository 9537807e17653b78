"""Start a real local JupyterHub with the quota service, for tests, benchmarks and trying it out.

Everything listens on 127.0.0.1: DummyAuthenticator, SimpleLocalProcessSpawner, the
configurable-http-proxy from ``node_modules``, and the quota service as a hub-managed service.
A private API-only service (``nbscale-devhub-admin``) creates users, groups and tokens.

    with LocalHub(workdir) as hub:
        token = hub.token_for("alice", groups=["gpu-users"])
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from . import SERVICE_NAME

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
ADMIN_SERVICE = "nbscale-devhub-admin"
USERS_GROUP = "gpu-users"
QUOTA_ADMIN_USER = "quota-admin"


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A Postgres cluster on 127.0.0.1 in a temporary folder (Debian ``postgresql``), removed afterwards.

    Yields its SQLAlchemy URL; raises :class:`FileNotFoundError` when no ``initdb`` is installed.
    """
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not initdb:
        raise FileNotFoundError("no Postgres here: apt-get install postgresql")
    bindir = Path(initdb[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="nbscale-pg-"))
    as_owner: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    subprocess.run([*as_owner, str(bindir / "initdb"), "-D", str(data), "-U", "nbscale", "--auth=trust"],
                   check=True, capture_output=True)
    server = subprocess.Popen([*as_owner, str(bindir / "postgres"), "-D", str(data), "-p", str(port),
                               "-h", "127.0.0.1", "-k", str(root), "-c", "max_connections=200"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import psycopg

        for _ in range(120):
            try:
                psycopg.connect(f"postgresql://nbscale@127.0.0.1:{port}/postgres", connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                time.sleep(0.25)
        yield f"postgresql+psycopg://nbscale@127.0.0.1:{port}/postgres"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def drop_quota_schema(engine: Any) -> None:
    """Drop every quota table and function from a reused Postgres database (tests and benchmarks)."""
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS quota_ledger, quota_leases, quota_policies, quota_user_locks, "
                             "quota_usage_hours, alembic_version CASCADE")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS quota_ledger_append_only() CASCADE")
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS quota_step(jsonb, jsonb), quota_admit_batch(jsonb, jsonb), "
                             "quota_decide_batch(jsonb, jsonb)")


def find_proxy() -> str:
    """The configurable-http-proxy binary from the repo's ``node_modules`` (``npm install`` puts it there)."""
    path = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run 'npm install' in {ROOT} (or scripts/bootstrap.sh test)")
    return str(path)


class LocalHub:
    """A JupyterHub subprocess with the quota service, configured from ``examples/jupyterhub_config.py``.

    ``service_args`` are extra command-line flags for the quota service (e.g. ``["--default-ttl=30"]``);
    ``extra_config`` is appended verbatim to the generated config (e.g. server token scopes).
    ``services_config`` replaces the example as the config that registers the service, its scopes
    and roles (e.g. an external service started separately, as on Kubernetes).
    """

    def __init__(self, workdir: Path, *, service_args: list[str] | None = None, extra_config: str = "",
                 db_url: str | None = None, start_timeout: float = 60.0,
                 services_config: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.port, self.hub_port, self.proxy_api_port, self.service_port = (free_port() for _ in range(4))
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_url = f"{self.url}/services/{SERVICE_NAME}/"
        self.service_direct_url = f"http://127.0.0.1:{self.service_port}/services/{SERVICE_NAME}/"
        self.api_url = f"{self.url}/hub/api"
        self.db_url = db_url or f"sqlite:///{self.workdir / 'quotas.sqlite'}"
        self.admin_token = secrets.token_hex(32)
        self.service_args = service_args or []
        self.extra_config = extra_config
        self.services_config = services_config
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "jupyterhub.log"
        self._descendants: dict[int, Any] = {}  # psutil.Process by pid: the proxy, the quota service, spawned servers

    def config_text(self) -> str:
        """The jupyterhub_config.py this hub runs with: the shipped example plus test-only settings."""
        example = self.services_config
        if example is None:
            example = (Path(__file__).parent / "examples" / "jupyterhub_config.py").read_text(encoding="utf-8")
        singleuser = [str(Path(sys.executable).with_name("jupyterhub-singleuser"))]
        if os.geteuid() == 0:
            singleuser.append("--allow-root")
        settings = {
            "QUOTA_DB_URL": self.db_url, "QUOTA_PORT": self.service_port, "QUOTA_ARGS": self.service_args,
            "PYTHON": sys.executable,
        }
        return "\n".join([
            "# generated by hub_extension.devhub.LocalHub",
            *(f"{key} = {value!r}" for key, value in settings.items()),
            example,
            "c.JupyterHub.ip = '127.0.0.1'",
            f"c.JupyterHub.port = {self.port}",
            "c.JupyterHub.hub_ip = '127.0.0.1'",
            f"c.JupyterHub.hub_port = {self.hub_port}",
            f"c.ConfigurableHTTPProxy.api_url = 'http://127.0.0.1:{self.proxy_api_port}'",
            f"c.ConfigurableHTTPProxy.command = [{find_proxy()!r}]",
            "c.JupyterHub.authenticator_class = 'dummy'",
            "c.Authenticator.allow_all = True",
            "c.JupyterHub.spawner_class = 'simple'",
            f"c.Spawner.cmd = {singleuser!r}",
            f"c.JupyterHub.db_url = {'sqlite:///' + str(self.workdir / 'jupyterhub.sqlite')!r}",
            f"c.JupyterHub.cookie_secret_file = {str(self.workdir / 'cookie_secret')!r}",
            f"c.JupyterHub.pid_file = {str(self.workdir / 'jupyterhub.pid')!r}",
            f"c.JupyterHub.services.append({{'name': {ADMIN_SERVICE!r}, 'api_token': {self.admin_token!r}}})",
            (
                "c.JupyterHub.load_roles.append({'name': 'nbscale-devhub-admin', 'services': "
                f"[{ADMIN_SERVICE!r}], 'scopes': ['admin:users', 'admin:groups', 'tokens', 'admin:servers', "
                "'access:servers', 'list:users', 'read:users']})"
            ),
            f"c.JupyterHub.load_groups = {{{USERS_GROUP!r}: {{'users': []}}}}",
            self.extra_config,
        ])

    def start(self) -> LocalHub:
        """Write the config, start the hub and wait until the quota service answers through the proxy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(self.config_text(), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [str(Path(sys.executable).with_name("jupyterhub")), "-f", str(config)],
                cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT, env=env,
            )
        try:
            self._wait_ready()
        except BaseException:  # a set-up that fails or times out (or Ctrl-C) leaves no hub, proxy or service running
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            self._note_descendants()
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"jupyterhub exited with {self.process.returncode}; see {self.log_path}:\n{self.log_tail()}")
            if self._service_answers():
                return
            time.sleep(0.25)
        raise RuntimeError(f"hub or quota service not ready after {self.start_timeout} s; see {self.log_path}:\n{self.log_tail()}")

    def _service_answers(self) -> bool:
        """The quota service answers through the proxy (403 in JSON: its own answer to a caller without a token)."""
        try:
            answer = httpx.get(self.service_url + "api/v1/me", timeout=2)
        except httpx.HTTPError:
            return False
        return answer.status_code == 403 and answer.headers.get("content-type", "").startswith("application/json")

    def _note_descendants(self) -> None:
        """Remember the hub's processes while it runs: ``stop`` ends, by PID, any that outlive it (a hub killed or crashed)."""
        import psutil

        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(psutil.Error):
            self._descendants.update({child.pid: child for child in psutil.Process(self.process.pid).children(recursive=True)})

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the hub's log (hub, proxy and service share it)."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the hub (it stops the proxy, the service and spawned servers) and wait for it; then end what it left."""
        if self.process is not None and self.process.poll() is None:
            self._note_descendants()
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._end_left_behind()

    def _end_left_behind(self) -> None:
        """SIGTERM, then SIGKILL, the hub's processes still running (psutil checks each one's start time: no recycled PID is hit)."""
        import psutil

        left = [child for child in self._descendants.values() if child.is_running()]
        self._descendants.clear()
        for child in left:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(left, timeout=10)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(alive, timeout=5)

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # hub administration through the REST API --------------------------------------------------

    def hub_api(self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201, 204, 409)) -> Any:
        """Call the hub REST API as the devhub admin service; returns the JSON answer (or None)."""
        answer = httpx.request(method, f"{self.api_url}/{path.lstrip('/')}", json=body, timeout=30,
                               headers={"Authorization": f"token {self.admin_token}"})
        if answer.status_code not in ok:
            raise RuntimeError(f"hub API {method} {path} -> {answer.status_code}: {answer.text}")
        return answer.json() if answer.content else None

    def ensure_user(self, name: str, groups: list[str] | tuple[str, ...] = ()) -> None:
        """Create ``name`` if needed and add them to ``groups`` (created if needed)."""
        self.hub_api("POST", f"users/{name}")
        for group in groups:
            self.hub_api("POST", f"groups/{group}")
            self.hub_api("POST", f"groups/{group}/users", {"users": [name]})

    def token_for(self, name: str, groups: list[str] | tuple[str, ...] = (USERS_GROUP,),
                  scopes: list[str] | None = None) -> str:
        """A new API token of user ``name`` (in ``groups``), with the user's scopes unless ``scopes`` is given."""
        self.ensure_user(name, groups)
        body: dict[str, Any] = {"note": "nbscale devhub"}
        if scopes is not None:
            body["scopes"] = scopes
        return str(self.hub_api("POST", f"users/{name}/tokens", body)["token"])

    def service_token(self) -> str:
        """The devhub admin service's own token (a service, not a user)."""
        return self.admin_token


def main() -> None:
    """``python -m hub_extension.devhub [workdir]``: run a local hub until Ctrl-C and print tokens."""
    logging.basicConfig(level=logging.INFO)
    workdir = Path(sys.argv[1] if len(sys.argv) > 1 else "devhub").resolve()
    with LocalHub(workdir) as hub:
        admin = hub.token_for(QUOTA_ADMIN_USER)
        print(json.dumps({"hub": hub.url, "service": hub.service_url, "admin_token": admin}, indent=2))
        try:
            hub.process.wait()  # type: ignore[union-attr]
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
