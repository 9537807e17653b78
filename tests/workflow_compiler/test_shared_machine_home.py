"""Another local user against nbscale's home folder and daemon sockets (issue 18, item 1).

Every test here acts as a second account, ``nbscale-attacker`` (conftest's ``other_user``), against
real folders, a real tracking agent and real Unix sockets: the kernel's own ownership, modes and
``SO_PEERCRED`` are what is tested.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workflow_compiler.errors import UnsafeFolder
from workflow_compiler.private_files import append_private, private_folder, write_private
from workflow_compiler.store import nbscale_home
from workflow_compiler.sweep import trial_host
from workflow_compiler.tracking import agent, daemon

NBSCALE = str(Path(sys.executable).parent / "nbscale")
NOTEBOOKS = Path(__file__).parent / "notebooks"
UNTOUCHED = b"only root writes this\n"


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A path for NBSCALE_HOME (not created), short enough for a socket; its daemons are stopped afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-sec-"))
    path = parent / "home"
    monkeypatch.setenv("NBSCALE_HOME", str(path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield path
    if path.is_dir() and not path.is_symlink():
        agent.stop(path)
    shutil.rmtree(parent, ignore_errors=True)


def _root_only_files(folder: Path) -> tuple[Path, Path]:
    """Two files only root may write, which the attack points symlinks at."""
    victims = folder / "victims"
    victims.mkdir(mode=0o700)
    pid, log = victims / "pid-target", victims / "log-target"
    for target in (pid, log):
        target.write_bytes(UNTOUCHED)
        target.chmod(0o644)
    victims.chmod(0o755)
    return pid, log


def _plant_agent_folder(agent_dir: Path, pid_target: Path, log_target: Path) -> None:
    agent_dir.mkdir(mode=0o777)
    agent_dir.chmod(0o777)
    (agent_dir / "agent.pid").symlink_to(pid_target)
    (agent_dir / "agent.log").symlink_to(log_target)


@pytest.mark.parametrize("command", [["run", "echo.ipynb", "-p", "count=1"],
                                     ["sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0)", "--search", "grid", "--metric", "score", "--mode", "max"]],
                         ids=["run", "sweep"])
def test_a_home_another_user_made_with_symlinked_agent_files_is_refused_by_the_cli(other_user, shared_tmp: Path, tmp_path: Path,
                                                                                  command: list[str]) -> None:
    """Attack 1: the other user made NBSCALE_HOME/agent 0777 with agent.pid and agent.log pointing at root's files."""
    pid_target, log_target = _root_only_files(shared_tmp)
    home = shared_tmp / "home"

    def plant() -> None:
        home.mkdir(mode=0o777)
        home.chmod(0o777)
        _plant_agent_folder(home / "agent", pid_target, log_target)

    other_user.run(plant)
    (tmp_path / "echo.ipynb").write_bytes((NOTEBOOKS / "echo.ipynb").read_bytes())
    (tmp_path / "objective.ipynb").write_bytes((NOTEBOOKS.parent / "sweep_notebooks" / "objective.ipynb").read_bytes())
    done = subprocess.run([NBSCALE, *command], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "300"})
    assert done.returncode != 0, done.stdout + done.stderr
    message = " ".join(done.stderr.split())
    assert f"NBSCALE_HOME {home} belongs to uid {other_user.uid}, not to you" in message, message
    assert "set NBSCALE_HOME to a folder of your own" in message
    assert pid_target.read_bytes() == UNTOUCHED and log_target.read_bytes() == UNTOUCHED
    assert sorted(p.name for p in home.iterdir()) == ["agent"]  # nothing written there


def _home_of_other_user(home: Path, other: object) -> None:
    home.mkdir(mode=0o700)
    os.chown(home, other.uid, other.gid)  # type: ignore[attr-defined]


def _home_others_can_write(home: Path, _other: object) -> None:
    home.mkdir()
    home.chmod(0o777)


def _agent_folder_of_other_user(home: Path, other: object) -> None:
    (home / "agent").mkdir(parents=True)
    home.chmod(0o700)
    os.chown(home / "agent", other.uid, other.gid)  # type: ignore[attr-defined]


def _agent_folder_others_can_write(home: Path, _other: object) -> None:
    (home / "agent").mkdir(parents=True)
    home.chmod(0o700)
    (home / "agent").chmod(0o777)


def _agent_folder_a_symlink(home: Path, _other: object) -> None:
    home.mkdir(mode=0o700)
    elsewhere = home.parent / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (home / "agent").symlink_to(elsewhere)


@pytest.mark.parametrize(("prepare", "problem"), [
    (_home_of_other_user, "NBSCALE_HOME {home} belongs to uid {uid}, not to you"),
    (_home_others_can_write, "NBSCALE_HOME {home} can be written by other users (mode 0777)"),
    (_agent_folder_of_other_user, "agent/ in NBSCALE_HOME {home}/agent belongs to uid {uid}, not to you"),
    (_agent_folder_others_can_write, "agent/ in NBSCALE_HOME {home}/agent can be written by other users (mode 0777)"),
    (_agent_folder_a_symlink, "agent/ in NBSCALE_HOME {home}/agent is not a folder"),
], ids=["home-of-other-user", "home-writable", "agent-of-other-user", "agent-writable", "agent-symlink"])
def test_the_agent_refuses_a_home_or_agent_folder_that_is_not_private(other_user, home: Path, prepare: Callable[..., None],
                                                                        problem: str) -> None:
    prepare(home, other_user)
    with pytest.raises(UnsafeFolder) as refused:
        agent.start_for(f"sqlite:///{home / 'mlflow.db'}")
    assert problem.format(home=home, uid=other_user.uid) in refused.value.message
    assert not list(home.parent.rglob("*.pid")) and not list(home.parent.rglob("*.sock"))


def test_an_own_home_that_others_may_read_is_made_private(home: Path) -> None:
    home.mkdir()
    home.chmod(0o755)
    assert nbscale_home() == home
    assert home.stat().st_mode & 0o777 == 0o700


# -- planted sockets: the client side --------------------------------------------------------

def _planted_server(path: Path, ready: int) -> str:
    """As the other user: listen at ``path``, lure the client with an answer, and return what it sent."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(20)
    os.write(ready, b"1")
    conn, _ = server.accept()
    with contextlib.suppress(OSError):  # a client that checked who serves the socket has already left
        conn.sendall(b'{"ok": true, "pid": 1, "version": "any"}\n')  # whatever the client hopes to hear
    conn.settimeout(1.5)
    received = b""
    try:
        while chunk := conn.recv(65536):
            received += chunk
    except OSError:
        pass
    return received.decode(errors="replace")


def _connect_agent(path: Path) -> object:
    return agent.connect(path, "sqlite:////tmp/x/mlflow.db")


def _connect_trial_host(path: Path) -> object:
    return trial_host.HostChild.connect(str(path))


@pytest.mark.parametrize("connect", [_connect_agent, _connect_trial_host], ids=["tracking-agent", "trial-host"])
def test_a_socket_another_user_planted_hears_nothing(other_user, shared_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                      connect: Callable[[Path], object]) -> None:
    """Attack 2: a planted socket used to get the client's whole environment and its request, and then kept it waiting."""
    monkeypatch.setenv("NBSCALE_TEST_SECRET", "hunter2-secret")
    path = shared_tmp / "planted.sock"
    ready_read, ready_write = os.pipe()
    received = other_user.start(_planted_server, path, ready_write)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"1"  # listening: a refused connection would prove nothing
    os.close(ready_read)
    started = time.monotonic()
    assert connect(path) is None
    assert time.monotonic() - started < 5  # told at once, no hang
    assert received() == ""


# -- the server side: a daemon serves only its own user ------------------------------------------


def _ping_as_other_user(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))  # the kernel lets it connect; the daemon decides
        try:
            sock.sendall(b'{"op": "ping"}\n')
            return sock.makefile("r").readline()
        except (BrokenPipeError, ConnectionResetError):  # closed before or after it read the ping
            return ""


def _open_to_everyone(path: Path) -> None:
    """What a mistake in the folder's mode would allow: everyone may reach the socket."""
    for folder in (path.parent.parent.parent, path.parent.parent, path.parent):
        folder.chmod(0o711)
    path.chmod(0o777)


def test_the_tracking_agent_answers_no_other_user(other_user, home: Path) -> None:
    path = agent.ensure_started(nbscale_home())
    assert path is not None and agent._probe(path) == "current"
    _open_to_everyone(path)
    assert other_user.run(_ping_as_other_user, path) == ""  # closed unanswered
    assert agent._probe(path) == "current"  # and still serving its own user


def test_the_trial_host_answers_no_other_user(other_user, home: Path) -> None:
    path = trial_host.socket_path(nbscale_home())
    assert path is not None
    private_folder(path.parent)
    host = trial_host.Host(path, idle=30)
    host.bind()
    serving = threading.Thread(target=host.serve_forever, name="host")
    serving.start()
    try:
        _open_to_everyone(path)
        assert other_user.run(_ping_as_other_user, path) == ""
        assert daemon.probe(path, host.version) == "current"
    finally:
        host.stopping = True
        serving.join(timeout=10)


SECRET_WORKER = """
import json, socket, sys, threading
from workflow_compiler.sweep import trial_host
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1]); server.listen(1)
received = []
def serve():
    conn, _ = server.accept()
    received.append(conn.makefile("r").readline())
    conn.sendall(b'{"ok": false}\\n')
threading.Thread(target=serve).start()
trial_host.HostChild.connect(sys.argv[1])
print(received[0])
"""


def test_the_hello_to_the_trial_host_carries_no_environment_the_worker_started_with(tmp_path: Path) -> None:
    """The child reads that from /proc; the hello carries only what the worker changed since it started."""
    path = tempfile.mkdtemp(prefix="nbs-hello-") + "/host.sock"
    done = subprocess.run([sys.executable, "-c", SECRET_WORKER, path], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "NBSCALE_TEST_SECRET": "hunter2-secret"}, cwd=Path(__file__).parents[2])
    shutil.rmtree(Path(path).parent)
    assert done.returncode == 0, done.stderr
    hello = json.loads(done.stdout)
    assert hello["op"] == "hello" and "hunter2-secret" not in done.stdout
    assert hello["environ_changed"] == {} and hello["environ_removed"] == []


def test_files_are_never_written_through_a_symlink(tmp_path: Path) -> None:
    """Behind the folder checks: a symlink that got into a private folder still leads nowhere."""
    target = tmp_path / "target"
    target.write_bytes(UNTOUCHED)
    for name in ("agent.log", "agent.pid"):
        (tmp_path / name).symlink_to(target)
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        append_private(tmp_path / "agent.log")
    write_private(tmp_path / "agent.pid", b"123")  # replaces the link itself
    assert target.read_bytes() == UNTOUCHED and not (tmp_path / "agent.pid").is_symlink()
    assert (tmp_path / "agent.pid").read_bytes() == b"123" and (tmp_path / "agent.pid").stat().st_mode & 0o777 == 0o600
