"""The submit path inside a real JupyterHub: the CLI, a spawned server's REST API and the magics are
admitted against the quota service, refused over quota or when it is unreachable, and release their
lease however the run ends (``workflow_compiler/quota.py`` is the one gate)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from jupyter_client.manager import KernelManager
from quota_helpers import heartbeated_after, wait_for

from hub_extension.devhub import QUOTA_ADMIN_USER, USERS_GROUP, LocalHub, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NBSCALE = str(Path(sys.executable).with_name("nbscale"))
#: Short lease TTL, so a lease only survives a run by being heartbeated.
TTL = 10
HUB_ENV = ("JUPYTERHUB_API_TOKEN", "JUPYTERHUB_API_URL", "NBSCALE_QUOTA_URL", "MLFLOW_TRACKING_URI", "NBSCALE_HOME")


def write_notebook(path: Path, parameters: str, body: str) -> None:
    """A two-cell notebook whose first cell is tagged ``parameters``."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def fill_workspace(folder: Path) -> Path:
    """The example notebook, a quick one and a slow one in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "train.ipynb", folder / "train.ipynb")
    write_notebook(folder / "quick.ipynb", "greeting = 'hello'", "print(greeting)")
    write_notebook(folder / "slow.ipynb", "seconds = 300", "import time\ntime.sleep(seconds)")
    # runs until the test creates the file ``gate``, so the test sees it running (2 minutes at most)
    write_notebook(folder / "gated.ipynb", "gate = ''", GATED)
    return folder


GATED = """import pathlib, time
deadline = time.monotonic() + 120
while gate and not pathlib.Path(gate).exists() and time.monotonic() < deadline:
    time.sleep(0.1)
assert not gate or pathlib.Path(gate).exists(), 'the test never opened the gate'"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalHub]:
    """One hub for the module; spawned servers live in homes under its work folder."""
    workdir = tmp_path_factory.mktemp("submit-quota-hub")
    home = str(workdir / "home" / "{username}")
    extra = f"c.SimpleLocalProcessSpawner.home_dir_template = {home!r}"
    with LocalHub(workdir, service_args=[f"--default-ttl={TTL}", "--reclaim-interval=1"], extra_config=extra) as running:
        yield running


@pytest.fixture(scope="module")
def admin(hub: LocalHub) -> Iterator[httpx.Client]:
    """The quota admin's REST client."""
    token = hub.token_for(QUOTA_ADMIN_USER, groups=[])
    with httpx.Client(base_url=hub.service_url + "api/v1/", headers={"Authorization": f"token {token}"}, timeout=30) as client:
        yield client


class HubUser:
    """A hub user in ``gpu-users`` limited to 1 GPU at once, with their own API token."""

    def __init__(self, hub: LocalHub, admin: httpx.Client, prefix: str) -> None:
        self.hub, self.admin = hub, admin
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        answer = admin.put(f"policies/user/{self.name}", json={"max_gpus": 1})
        assert answer.status_code == 200, answer.text
        self.token = hub.token_for(self.name, groups=[USERS_GROUP])

    def env(self, home: Path, **overrides: str) -> dict[str, str]:
        """The environment a process gets inside this user's single-user server."""
        env = {k: v for k, v in os.environ.items() if k not in HUB_ENV}
        env.update(JUPYTERHUB_API_TOKEN=self.token, JUPYTERHUB_API_URL=self.hub.api_url,
                   NBSCALE_QUOTA_URL=self.hub.service_direct_url, NBSCALE_HOME=str(home), COLUMNS="200")
        env.update(overrides)
        return env

    def quota(self) -> dict[str, Any]:
        """``GET me`` with the user's token."""
        answer = httpx.get(self.hub.service_url + "api/v1/me", headers={"Authorization": f"token {self.token}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def ledger(self) -> list[dict[str, Any]]:
        """The user's ledger entries, newest first (read as the admin)."""
        answer = self.admin.get("ledger", params={"user": self.name})
        assert answer.status_code == 200, answer.text
        return answer.json()["entries"]  # type: ignore[no-any-return]

    def assert_released(self, run_id: str) -> dict[str, Any]:
        """Nothing in use, and the run's lease (request id = run id) released with GPU-seconds reported."""
        usage = self.quota()["usage"]
        assert (usage["gpus_in_use"], usage["runs_active"]) == (0, 0), usage
        events = {e["event"]: e for e in self.ledger() if e["request_id"] == run_id}
        assert set(events) == {"admitted", "released"}, events
        assert events["released"]["gpu_seconds"] > 0, events["released"]
        return events["released"]


@pytest.fixture(scope="module")
def cli_user(hub: LocalHub, admin: httpx.Client) -> HubUser:
    return HubUser(hub, admin, "cli")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fill_workspace(tmp_path_factory.mktemp("submit-quota-ws"))


@pytest.fixture(scope="module")
def nbscale_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("submit-quota-home")


def nbscale(*args: str, env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the ``nbscale`` command as a user would in a hub terminal."""
    return subprocess.run([NBSCALE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


# the CLI --------------------------------------------------------------------------------------


def test_cli_over_quota_is_refused_before_anything_starts(cli_user: HubUser, workspace: Path, tmp_path: Path) -> None:
    home = tmp_path / "nbscale-home"
    result = nbscale("run", "train.ipynb", "--gpus", "2", "-p", "n_estimators=10", env=cli_user.env(home), cwd=workspace)
    assert result.returncode == 1, result
    message = " ".join(result.stderr.split())
    assert "The limit is 1 GPU in use at once; you have 0 in use and this submission asks for 2 GPUs" in message, message
    assert "ask for at most 1 GPU" in message and "contact a hub admin" in message, message
    # nothing started: no run folder, no MLflow store, no run record, no lease
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    assert not (home / "mlflow.db").exists()
    listed = nbscale("runs", "--json", env=cli_user.env(home), cwd=workspace)
    assert json.loads(listed.stdout)["total"] == 0, listed
    assert cli_user.quota()["usage"]["gpus_in_use"] == 0
    assert not [e for e in cli_user.ledger() if e["event"] == "admitted"]


def test_cli_within_quota_runs_and_releases(cli_user: HubUser, workspace: Path, nbscale_home: Path) -> None:
    result = nbscale("run", "train.ipynb", "--gpus", "1", "-p", "n_estimators=10", "--json",
                     env=cli_user.env(nbscale_home), cwd=workspace)
    assert result.returncode == 0, result
    record = json.loads(result.stdout)
    assert record["status"] == "SUCCEEDED" and record["mlflow_run_id"], record
    # released before the run was reported done, so the very next submission fits
    released = cli_user.assert_released(record["id"])
    assert released["gpus_total"] == 1 and released["actor"] == cli_user.name
    assert released["lease_id"] == record["lease_id"], (released, record)


def test_cli_quota_shows_limits_and_remaining(cli_user: HubUser, workspace: Path, nbscale_home: Path) -> None:
    result = nbscale("quota", "--json", env=cli_user.env(nbscale_home), cwd=workspace)
    assert result.returncode == 0, result
    status = json.loads(result.stdout)
    assert status["enabled"] is True and status["user"] == cli_user.name and USERS_GROUP in status["groups"]
    assert status["limits"]["max_gpus"] == 1 and status["remaining"]["gpus"] == 1, status
    table = nbscale("quota", env=cli_user.env(nbscale_home), cwd=workspace)
    assert table.returncode == 0, table
    assert f"GPU quota of {cli_user.name}" in table.stdout, table.stdout
    # limit, value, in use, left
    assert re.search(r"max_gpus\s*│\s*1\s*│\s*0\s*│\s*1\s*│", table.stdout), table.stdout


def test_detached_run_holds_its_lease_until_cancelled(cli_user: HubUser, workspace: Path, nbscale_home: Path) -> None:
    env = cli_user.env(nbscale_home)
    result = nbscale("run", "slow.ipynb", "--gpus", "1", "--detach", "--json", env=env, cwd=workspace)
    assert result.returncode == 0, result
    run_id = json.loads(result.stdout)["id"]
    try:
        first = cli_user.quota()
        assert first["usage"]["gpus_in_use"] == 1 and [lease["request_id"] for lease in first["leases"]] == [run_id], first
        # the CLI has exited; only the detached worker's heartbeats keep the lease past its TTL
        lease = first["leases"][0]
        wait_for(lambda: heartbeated_after(cli_user.quota(), lease["id"], lease["expires_at"]), 6 * TTL,
                 "a heartbeat of the detached worker after the lease's first expiry")
        later = cli_user.quota()
        assert later["usage"]["gpus_in_use"] == 1, later
        status = json.loads(nbscale("status", run_id, "--json", env=env, cwd=workspace).stdout)
        assert status["status"] in ("PENDING", "RUNNING"), status
        # a second GPU run does not fit while this one holds the GPU
        refused = nbscale("run", "quick.ipynb", "--gpus", "1", env=env, cwd=workspace)
        assert refused.returncode == 1 and "you have 1 in use" in " ".join(refused.stderr.split()), refused
    finally:
        cancelled = nbscale("cancel", run_id, env=env, cwd=workspace)
    assert cancelled.returncode == 0 and "KILLED" in cancelled.stdout, cancelled
    released = cli_user.assert_released(run_id)
    assert released["gpu_seconds"] >= TTL, released


def test_unreachable_service_fails_closed_for_gpu_runs_only(cli_user: HubUser, workspace: Path, tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/services/nbscale-quotas/"
    env = cli_user.env(tmp_path / "nbscale-home", NBSCALE_QUOTA_URL=closed)
    result = nbscale("run", "train.ipynb", "--gpus", "1", env=env, cwd=workspace)
    message = " ".join(result.stderr.split())
    assert result.returncode == 1, result
    assert "cannot be reached" in message and "Submissions are refused" in message and closed in message, message
    assert json.loads(nbscale("runs", "--json", env=env, cwd=workspace).stdout)["total"] == 0
    quota = nbscale("quota", env=env, cwd=workspace)
    assert quota.returncode == 1 and "cannot be reached" in quota.stderr, quota
    # CPU-only work needs no admission, so it is not held up by the quota service being down
    cpu = nbscale("run", "slow.ipynb", "--gpus", "0", "--detach", "--json", env=env, cwd=workspace)
    assert cpu.returncode == 0, cpu
    record = json.loads(cpu.stdout)
    assert record["lease_id"] is None and record["status"] in ("PENDING", "RUNNING"), record
    cancelled = nbscale("cancel", record["id"], env=env, cwd=workspace)
    assert cancelled.returncode == 0 and "KILLED" in cancelled.stdout, cancelled


# a spawned single-user server's REST API ------------------------------------------------------


@pytest.fixture(scope="module")
def spawned(hub: LocalHub, admin: httpx.Client) -> Iterator[tuple[HubUser, httpx.Client]]:
    """A user's single-user server spawned by the hub, and a client of its nbscale API (user's token)."""
    user = HubUser(hub, admin, "rest")
    fill_workspace(hub.workdir / "home" / user.name)
    hub.hub_api("POST", f"users/{user.name}/server", ok=(201, 202))
    try:
        wait_for(lambda: hub.hub_api("GET", f"users/{user.name}")["servers"].get("", {}).get("ready"), 120,
                 f"the server of {user.name}\n{hub.log_tail()}")
        with httpx.Client(base_url=f"{hub.url}/user/{user.name}/nbscale/api/", timeout=60,
                          headers={"Authorization": f"token {user.token}"}) as client:
            yield user, client
    finally:
        hub.hub_api("DELETE", f"users/{user.name}/server", ok=(202, 204))


def test_spawned_server_loads_the_extension_and_sees_the_quota(spawned: tuple[HubUser, httpx.Client], hub: LocalHub) -> None:
    user, client = spawned
    answer = client.get("quota")
    assert answer.status_code == 200, answer.text
    status = answer.json()
    # the server asked the service with its own server token, which belongs to the user
    assert status["enabled"] is True and status["user"] == user.name and status["limits"]["max_gpus"] == 1, status
    assert "notebook_plugin | extension was successfully loaded" in hub.log_path.read_text(errors="replace")


def test_spawned_server_refuses_over_quota_and_runs_within(spawned: tuple[HubUser, httpx.Client], tmp_path: Path) -> None:
    user, client = spawned
    gate = tmp_path / "gate"
    spec = {"notebook": "gated.ipynb", "parameters": {"gate": str(gate)}}
    refused = client.post("runs", json={**spec, "resources": {"gpus": 2}})
    assert refused.status_code == 409, refused.text
    assert "The limit is 1 GPU in use at once" in refused.json()["message"], refused.text
    assert client.get("runs").json()["total"] == 0
    # token-authenticated POSTs need no XSRF token in jupyter-server 2
    started = client.post("runs", json={**spec, "resources": {"gpus": 1}})
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]
    # the run waits for the gate: while it runs, its lease holds the GPU
    wait_for(lambda: client.get(f"runs/{run_id}").json()["status"] == "RUNNING", 120, f"run {run_id} to start")
    usage = user.quota()["usage"]
    assert (usage["gpus_in_use"], usage["runs_active"]) == (1, 1), usage
    gate.touch()
    record = wait_for(lambda: (r := client.get(f"runs/{run_id}").json())["status"] in ("SUCCEEDED", "FAILED", "KILLED") and r,
                      180, f"run {run_id}")
    assert record["status"] == "SUCCEEDED", record
    user.assert_released(run_id)


# the magics -----------------------------------------------------------------------------------


class Kernel:
    """An ipykernel outside any Jupyter server, with ``env``, running cells and collecting their text."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd), env=env)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 120) -> str:
        text: list[str] = []

        def collect(msg: dict[str, Any]) -> None:
            content = msg["content"]
            if msg["msg_type"] == "stream":
                text.append(content["text"])
            elif msg["msg_type"] in ("execute_result", "display_data"):
                text.append(content["data"].get("text/plain", ""))
            elif msg["msg_type"] == "error":
                text.append(f"{content['ename']}: {content['evalue']}")

        self.kc.execute_interactive(code, timeout=timeout, output_hook=collect)
        return "".join(text)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture
def kernel_in(workspace: Path) -> Iterator[Callable[[dict[str, str]], Kernel]]:
    kernels: list[Kernel] = []

    def start(env: dict[str, str]) -> Kernel:
        kernels.append(Kernel(workspace, env))
        assert "Error" not in kernels[-1].run("%load_ext notebook_plugin")
        return kernels[-1]

    yield start
    for kernel in kernels:
        kernel.close()


def test_magics_outside_a_hub_say_quotas_are_off(kernel_in: Callable[[dict[str, str]], Kernel], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in HUB_ENV}
    kernel = kernel_in({**env, "NBSCALE_HOME": str(tmp_path / "nbscale-home")})
    out = kernel.run("%nbscale quota")
    assert "'enabled': False" in out and "GPU quotas are off" in out, out


def test_magics_inside_a_hub_are_admitted_once(kernel_in: Callable[[dict[str, str]], Kernel], cli_user: HubUser,
                                              nbscale_home: Path) -> None:
    kernel = kernel_in(cli_user.env(nbscale_home))
    out = kernel.run("%nbscale quota")
    assert "'enabled': True" in out and cli_user.name in out, out
    out = kernel.run("%nbscale run quick.ipynb --gpus 2")
    assert "UsageError" in out and "The limit is 1 GPU in use at once" in out, out
    # within quota: one lease for the run (a second admission would be refused at max_gpus=1)
    out = kernel.run("h = %nbscale run slow.ipynb --gpus 1 --detach\nprint('ID', h.id)")
    assert "ID nbs-" in out, out
    run_id = out.split("ID ", 1)[1].split()[0]
    quota = cli_user.quota()
    assert [lease["request_id"] for lease in quota["leases"]] == [run_id], quota
    out = kernel.run(f"c = %nbscale cancel {run_id}\nprint('FINAL', c.status)")
    assert "FINAL KILLED" in out, out
    cli_user.assert_released(run_id)
