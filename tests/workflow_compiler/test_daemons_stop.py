"""``nbscale daemons stop`` reports a helper stopped only once its process has exited, and names one that did not.

The helper here is a process that answers ``stop`` as the daemons do but does not exit (a daemon
stuck in its work); the real daemons, stopped during a sweep, are in ``test_sweep_warm_driver.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler import cli_render
from workflow_compiler.daemons import StopOutcome, stop_daemons
from workflow_compiler.tracking import agent

# Listens where the tracking agent would, answers every request with ok, and stays.
_STUCK = textwrap.dedent("""
    import os, socket, sys
    path, pid_file = sys.argv[1], sys.argv[2]
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    open(pid_file, "w").write(str(os.getpid()))
    while True:
        conn, _ = server.accept()
        conn.recv(4096)
        conn.sendall(b'{"ok": true}\\n')
        conn.close()
""")


@pytest.fixture
def stuck_agent() -> Iterator[tuple[Path, int]]:
    """A home whose tracking agent's place is held by a process that never leaves; (home, its pid)."""
    home = Path(tempfile.mkdtemp(prefix="nbs-stop-"))
    (home / "agent").mkdir(mode=0o700)
    path = agent.socket_path(home)
    assert path is not None
    process = subprocess.Popen([sys.executable, "-c", _STUCK, str(path), str(home / "agent" / "agent.pid")])
    deadline = time.monotonic() + 30
    while not (home / "agent" / "agent.pid").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    try:
        yield home, process.pid
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(home, ignore_errors=True)


def test_a_helper_that_does_not_exit_is_reported_as_running_not_stopped(stuck_agent: tuple[Path, int]) -> None:
    home, pid = stuck_agent
    said: list[str] = []
    outcomes = stop_daemons(home, on_wait=said.append, timeout=0.5)
    assert outcomes == [StopOutcome(name="tracking agent", pid=pid, state="running")]
    assert said == []  # it serves no sweep: nothing to wait for but its exit
    assert cli_render.daemons_stop_lines(outcomes) == (
        f"the tracking agent (pid {pid}) did not exit in time; it leaves once idle, or `kill {pid}` ends it now")
    os.kill(pid, 0)  # still there


def test_nothing_running_is_said_so() -> None:
    home = Path(tempfile.mkdtemp(prefix="nbs-stop-"))
    try:
        assert stop_daemons(home) == []
        assert cli_render.daemons_stop_lines([]) == "no daemon was running"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_pid_file_naming_another_process_of_the_users_is_neither_listed_nor_waited_for(tmp_path: Path) -> None:
    """A helper killed with SIGKILL leaves its pid file; the pid may soon be another process's (here one with a child)."""
    from workflow_compiler.daemons import list_daemons

    home = Path(tempfile.mkdtemp(prefix="nbs-stale-"))
    (home / "agent").mkdir(mode=0o700)
    other = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    try:
        for name in ("sweep-driver.pid", "agent.pid", "trial-host.pid", "ray-head.pid"):
            (home / "agent" / name).write_text(str(other.pid))
        assert [d.running for d in list_daemons(home)] == [False] * 4
        started = time.monotonic()
        assert stop_daemons(home, timeout=30) == []
        assert time.monotonic() - started < 10  # not waited for as a sweep driver with a running sweep
        assert other.poll() is None  # and left alone
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(home, ignore_errors=True)
