"""Fixtures for workflow_compiler tests. Each block is self-contained; add yours as a new block."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# --- step runtime (test_runtime.py) ---------------------------------------------------------

RUNTIME_NOTEBOOKS = Path(__file__).parent / "notebooks"


@pytest.fixture
def runtime_workspace(tmp_path: Path) -> Path:
    """A workspace folder holding copies of the runtime's test notebooks."""
    workspace = tmp_path / "workspace"
    shutil.copytree(RUNTIME_NOTEBOOKS, workspace)
    return workspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server --workers 1`` on 127.0.0.1 for the session; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(folder / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own group: uvicorn worker and job runner
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


# --- environment capture (test_podenv.py, test_compiler_podenv.py) --------------------------

POD_FIXTURES = Path(__file__).parent / "pods"


# --- another local user (test_shared_machine*.py) ---------------------------------------------

ATTACKER = "nbscale-attacker"


class OtherUser:
    """A throwaway local account; ``run(fn, *args)`` calls ``fn`` in a forked child running as it."""

    def __init__(self, uid: int, gid: int) -> None:
        self.uid, self.gid = uid, gid

    def run(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` as this user, in a child process; returns its (picklable) value, re-raises what it raised."""
        return self.start(fn, *args)()

    def start(self, fn: Any, *args: Any) -> Any:
        """Start ``fn(*args)`` as this user in a child process; returns a function that waits for its value."""
        import pickle

        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read_end)
            try:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
                outcome: tuple[str, Any] = ("ok", fn(*args))
            except BaseException as exc:  # noqa: BLE001 - carried back to the test
                outcome = ("raised", exc)
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
            os._exit(0)
        os.close(write_end)

        def result() -> Any:
            with os.fdopen(read_end, "rb") as pipe:
                data = pipe.read()
            os.waitpid(pid, 0)
            kind, value = pickle.loads(data)
            if kind == "raised":
                raise value
            return value

        return result


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user may create things in, like /tmp (sticky)."""
    folder = Path(tempfile.mkdtemp(prefix="nbs-shared-"))
    folder.chmod(0o1777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def other_user() -> Iterator[OtherUser]:
    """``nbscale-attacker``, created for the session (and removed after) when the tests run as root."""
    import pwd

    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root (useradd, setuid); these tests run as root in CI")
    created = False
    try:
        entry = pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", ATTACKER], check=True, capture_output=True)
        created = True
        entry = pwd.getpwnam(ATTACKER)
    yield OtherUser(entry.pw_uid, entry.pw_gid)
    if created:
        subprocess.run(["userdel", ATTACKER], check=False, capture_output=True)


# --- sweeps against a real Ray (test_sweep_ray.py, test_sweep_parity.py) ----------------------

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def ray_head() -> Iterator[str]:
    """A local Ray head (2 CPUs, 1 logical GPU) for the session: ``ray start --head --block``, so that
    a driver in a subprocess can be killed (resume) or interrupted (cancel) while the cluster lives on."""
    raysite = str(REPO / "workflow_compiler" / "sweep" / "raysite")  # as the embedded default's Ray: workers start in ~1 s, not ~3
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_agent_register_timeout_ms": "180000", "PYTHONPATH": raysite}
    port = _free_port()
    head = subprocess.Popen([str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                             f"--port={port}", "--num-cpus=2", "--num-gpus=1", "--include-dashboard=false", "--disable-usage-stats"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)


@pytest.fixture(scope="module")
def ray_cluster(ray_head: str) -> Iterator[str]:
    """This process connected to the session's Ray head as a driver, with ``RAY_ADDRESS`` naming it, for one module."""
    import ray

    os.environ.update(RAY_AUTH_MODE="disabled", RAY_ADDRESS=ray_head)
    try:
        deadline = time.monotonic() + 150
        while True:
            try:
                ray.init(address=ray_head, logging_level="WARNING", log_to_driver=False, _node_ip_address="127.0.0.1")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
        yield ray_head
    finally:
        ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh ``NBSCALE_HOME`` (its own MLflow store) for one test."""
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"
