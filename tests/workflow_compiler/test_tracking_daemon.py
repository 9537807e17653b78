"""The daemons' shared parts (``tracking/daemon.py``): the forking loop's stop, releasing a daemon's files, waiting for its socket.

Real sockets and real child processes, nothing heavy imported: each test takes well under a second.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workflow_compiler.tracking import daemon


class _Counting(daemon.ForkingServer):
    """A forking server whose listening socket is already closed (as after a stop), counting its stop calls."""

    wait_for_children = True

    def __init__(self, path: Path) -> None:
        super().__init__(path, idle=60)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.close()
        self.stops = 0

    def on_stopping(self) -> None:
        self.stops += 1


def test_a_stopped_forking_server_releases_once_while_its_children_finish(tmp_path: Path) -> None:
    """The warm driver released its files again in every round of the loop until its last sweep ended."""
    loop = _Counting(tmp_path / "d.sock")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])
    loop.children.add(child.pid)  # reaped by the loop (os.waitpid), as a forked child is
    loop.stopping = True
    runner = threading.Thread(target=loop.serve_forever)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the loop did not leave once its child ended"
    assert not loop.children
    assert loop.stops == 1
    child.wait()  # already reaped by the loop: Popen takes that as ended


@pytest.mark.parametrize(("case", "by_inode", "socket_left", "pid_left"), [
    ("ours", False, False, False),
    ("ours", True, False, False),
    ("a successor's pid", False, True, True),  # it has bound since: both are its own now
    ("a successor's socket, our pid", True, True, False),  # it has linked its socket and not yet written its pid
    ("no pid file", True, False, False),
])
def test_a_daemon_leaving_releases_only_what_is_still_its_own(tmp_path: Path, case: str, by_inode: bool, socket_left: bool,
                                                                pid_left: bool) -> None:
    path, pid_file = tmp_path / "d.sock", tmp_path / "d.pid"
    server = daemon.listen_on(path, pid_file)
    inode = path.stat().st_ino
    if case == "a successor's pid":
        pid_file.write_text("1")
    elif case == "a successor's socket, our pid":
        path.unlink()
        path.write_text("")  # another file at the path: another inode
    elif case == "no pid file":
        pid_file.unlink()
    daemon.close_and_release(server, path, pid_file, inode=inode if by_inode else None)
    assert server.fileno() == -1, "the listening socket stays open"
    assert (path.exists(), pid_file.exists()) == (socket_left, pid_left)


@pytest.mark.parametrize(("case", "found"), [("bound", True), ("exited", False), ("silent", False)])
def test_a_started_daemons_socket_is_waited_for_until_it_is_there_or_the_daemon_has_exited(tmp_path: Path, case: str,
                                                                                           found: bool) -> None:
    """The tracking agent's start and the sweep driver's client share this wait; a daemon that died is not waited for."""
    path = tmp_path / "d.sock"
    script = {"bound": f"import pathlib; pathlib.Path({str(path)!r}).touch()", "exited": "raise SystemExit(3)",
              "silent": "import time; time.sleep(5)"}[case]
    process = subprocess.Popen([sys.executable, "-c", script])
    started = time.monotonic()
    try:
        assert daemon.wait_for_socket(path, process, 2.0 if case == "silent" else 20.0) is found
    finally:
        process.kill()
        process.wait()
    assert time.monotonic() - started < (2.5 if case == "silent" else 10.0)


SECRETS = {"MLFLOW_TRACKING_URI": "http://alice:S3CRETPW@127.0.0.1:9/", "AWS_SECRET_ACCESS_KEY": "AKSECRET",
           "MLFLOW_TRACKING_PASSWORD": "S3CRETPW", "NBSCALE_QUOTA_COOKIE_SECRET": "COOKIESECRET"}


@pytest.mark.parametrize("module", ["workflow_compiler.tracking", "workflow_compiler.sweep.trial_host",
                                    "workflow_compiler.sweep.warm_driver_daemon"], ids=["agent", "trial-host", "sweep-driver"])
def test_a_daemon_keeps_none_of_its_starters_secrets(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Started by a caller with a password, the daemons kept it in ``/proc/<pid>/environ`` long after it was rotated."""
    import os
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="nbs-env-"))  # short: a Unix socket's path has ~100 bytes
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("NBSCALE_HOME", str(folder))
    process = daemon.launch_daemon(folder / "d.sock", module, "v", lock="d.lock", log_name="d.log")
    assert process is not None
    try:
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().decode()
    finally:
        process.kill()  # ours, by its pid: it has not finished its imports yet
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)
    assert [value for value in SECRETS.values() if value in environ] == []
    assert f"NBSCALE_HOME={folder}\0" in environ and f"PATH={os.environ['PATH']}\0" in environ


@pytest.mark.parametrize("extra", [{}, {"RAY_DEDUP_LOGS": "0", "PYTHONHASHSEED": "1", "LC_ALL": "C.UTF-8"},
                                   {**SECRETS, "JPY_API_TOKEN": "tok3nvalue", "NBSCALE_WARM_RAY": "1"}],
                         ids=["plain", "import-time-variables", "secrets-and-per-caller-variables"])
def test_a_daemon_with_the_reduced_environment_runs_the_sweep_drivers_version_of_its_starter(extra: dict[str, str]) -> None:
    """Else every sweep command would find the driver of another version, and start a new one."""
    import os

    from workflow_compiler.sweep import warm_driver

    environ = {**os.environ, **extra}
    assert warm_driver.code_version(daemon.daemon_environ(environ)) == warm_driver.code_version(environ)


@pytest.mark.parametrize("prefix", [*daemon.IMPORT_TIME_PREFIXES, "XDG_"])
def test_a_daemon_keeps_every_variable_the_sweep_drivers_imports_read(prefix: str) -> None:
    """The sweep driver's version digests the import-time variables: a daemon started without one would be of another version."""
    from workflow_compiler.sweep import warm_driver

    name = f"{prefix}NBSCALE_PROBE"
    assert daemon.daemon_environ({name: "1"}).get(name) == "1"
    if prefix != "XDG_":  # where the user's files are: kept, but not read by the driver's imports
        assert warm_driver.code_version({name: "1"}) != warm_driver.code_version({name: "2"})
