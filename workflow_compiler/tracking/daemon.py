"""A daemon of an ``NBSCALE_HOME`` on a Unix socket: started once, found by version, stopped, listening.

The warm tracking agent (``agent.py``) and the sweep's trial host (``sweep/trial_host.py``) are both
such daemons: ``start_daemon`` runs ``python -m MODULE --socket PATH --idle S`` (those module paths
are in the started processes' argv), the daemon binds with ``listen_on`` before its heavy imports
and reads its command line with ``daemon_arguments``; ``probe`` asks a running one its code version
(``{"op": "ping"}``), and ``ask_to_stop`` / ``stop_daemon`` make it leave. ``ForkingServer`` is the
loop of those that fork a child per connection (the trial host, the warm sweep driver).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..private_files import (
    PRIVATE_UMASK,
    accept_own,
    append_private,
    connect_own,
    open_private,
    private_folder,
    private_umask,
    write_private,
)
from ..redaction import redact_logs
from ..tracking_uri import without_telemetry

log = logging.getLogger(__name__)

#: Seconds a daemon waits idle before it leaves (default 600); tests shorten it.
ENV_IDLE = "NBSCALE_TRACKING_AGENT_IDLE"


#: What a daemon keeps of its starter's environment: what its imports read, and where things are. Its children take on
#: their caller's whole environment, and the agent is told its store per connection, so no credential is needed:
#: one kept would outlive its rotation, and sit in ``/proc/<pid>/environ`` for as long as the daemon runs.
DAEMON_VARIABLES = frozenset({"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
                              "MPLCONFIGDIR", "IPYTHONDIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_PATH",
                              "JUPYTER_PLATFORM_DIRS", "NBSCALE_HOME", ENV_IDLE})
#: Variables read when the warm sweep driver's preloaded modules are imported (Ray's and Tune's settings, Python's
#: own, the C locale): a child cannot take them on afterwards, so they name its version (``sweep/warm_driver.py``).
#: Here, not there, so that every daemon keeps them without importing the sweep package.
IMPORT_TIME_PREFIXES = ("RAY_", "TUNE_", "PYTHON", "LANG", "LC_", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")
#: Prefixes of the same: what the imports read, and where the user's files are.
DAEMON_PREFIXES = (*IMPORT_TIME_PREFIXES, "XDG_")


def daemon_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """What a daemon started from ``environ`` runs with: ``DAEMON_VARIABLES`` and ``DAEMON_PREFIXES``, MLflow's telemetry as set."""
    return without_telemetry({name: value for name, value in environ.items()
                              if name in DAEMON_VARIABLES or name.startswith(DAEMON_PREFIXES)})


def start_daemon(path: Path, module: str, version: str, *, lock: str, log_name: str,
                 environ: Mapping[str, str] | None = None) -> Path:
    """Start ``python -m module --socket path`` unless a daemon of ``version`` answers there; returns ``path``.

    One per socket: ``lock`` (a file beside it) serialises the starts. A daemon of another version
    is asked to leave (it finishes what it serves first). Waits only until the socket is bound,
    which the daemons do before their heavy imports. Shared by the tracking agent and the trial
    host (sweep/trial_host.py), whose module paths are in the started processes' argv. The daemon gets
    ``environ`` when given (the Ray head's workers inherit it), else ``daemon_environ(os.environ)``.
    """
    launch_daemon(path, module, version, lock=lock, log_name=log_name, environ=environ)
    return path


def launch_daemon(path: Path, module: str, version: str, *, lock: str, log_name: str,
                  environ: Mapping[str, str] | None = None) -> subprocess.Popen[bytes] | None:
    """``start_daemon``, returning the process it started (None when a daemon of ``version`` answered already).

    Stops waiting for the socket as soon as that process has exited (a daemon dying at start-up), so
    a caller can tell "not bound yet" from "never will be" with ``poll()``.
    """
    private_folder(path.parent)  # refused when another user owns it or can write to it
    with os.fdopen(open_private(path.parent / lock, os.O_WRONLY | os.O_CREAT), "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        state = probe(path, version)
        if state == "current":
            return None
        if state == "other":  # started from other code: it leaves once its clients are done
            ask_to_stop(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a daemon that died
        idle = os.environ.get(ENV_IDLE, "600")
        log_file = append_private(path.parent / log_name)
        process = subprocess.Popen([sys.executable, "-m", module, "--socket", str(path), "--idle", idle],
                                   stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
                                   cwd=path.parent, env=daemon_environ(os.environ) if environ is None else without_telemetry(environ), umask=PRIVATE_UMASK)
        log_file.close()
        wait_for_socket(path, process, 5)  # bound before its heavy imports
    return process


def wait_for_socket(path: Path, process: subprocess.Popen[bytes] | None, seconds: float) -> bool:
    """Whether ``path`` is there within ``seconds``; False at once when ``process`` (the daemon started for it) has exited."""
    deadline = time.monotonic() + seconds
    while not path.exists():
        if (process is not None and process.poll() is not None) or time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def probe(path: Path, version: str) -> str:
    """``current`` (a daemon of ``version`` answers at ``path``), ``other`` (another version answers) or ``none``."""
    answer = ping(path)
    if not answer:  # none there, or another user's: a daemon of ours is started (and binds, or says why not)
        return "none"
    return "current" if answer.get("version") == version else "other"


def ping(path: Path) -> dict[str, Any]:
    """The answer of the daemon at ``path`` to ``{"op": "ping"}`` (its version, pid...); empty when none answers."""
    try:
        with connect_own(path, timeout=5) as sock:
            sock.sendall((json.dumps({"op": "ping"}) + "\n").encode())
            answer = json.loads(sock.makefile("r", encoding="utf-8").readline() or "{}")
    except (OSError, ValueError):
        return {}
    return answer if isinstance(answer, dict) else {}


def ask_to_stop(path: Path) -> None:
    """Ask the daemon at ``path`` to leave once what it serves is done."""
    with contextlib.suppress(OSError), connect_own(path, timeout=5) as sock:
        sock.sendall((json.dumps({"op": "stop"}) + "\n").encode())
        sock.makefile("r", encoding="utf-8").readline()

def stop_daemon(path: Path, pid_file: Path, timeout: float = 10) -> int | None:
    """Ask the daemon at ``path`` to leave and wait for the pid in ``pid_file`` to end; returns that pid."""
    if not pid_file.exists():
        return None
    from ..store import pid_alive

    pid = int(pid_file.read_text() or 0)
    ask_to_stop(path)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return pid

def listen_on(path: Path, pid_file: Path) -> socket.socket:
    """A daemon's listening socket at ``path``, for this user only (accepts time out each second); its pid in ``pid_file``.

    The socket is bound under a name of its own and linked to ``path`` once it listens: a client
    that finds the path never finds it refusing (``start_daemon`` waits only for the path).
    Raises OSError when another daemon has the path first.
    """
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound = path.with_name(f".{os.getpid()}.sock")  # no longer than the final name: within sun_path's limit
    try:
        with contextlib.suppress(FileNotFoundError):
            bound.unlink()  # left by a daemon of a recycled pid
        with private_umask():
            server.bind(str(bound))
        server.listen(64)
        try:
            os.link(bound, path)  # unlike a rename, refuses to replace another daemon's socket
        finally:
            bound.unlink()
    except OSError:
        server.close()
        raise
    server.settimeout(1.0)
    write_private(pid_file, str(os.getpid()).encode())
    return server


def release_files(path: Path, pid_file: Path, *, inode: int | None = None) -> None:
    """Remove the socket and pid file ``listen_on`` made, unless a newer daemon has taken them over since.

    Each is ours while ``pid_file`` holds our pid; with ``inode`` (the socket's, read after ``listen_on``)
    the socket is ours only while the path still has it: a successor links its socket before it
    writes its pid.
    """
    try:
        ours = pid_file.read_text().strip() == str(os.getpid())
    except FileNotFoundError:
        ours = False
    with contextlib.suppress(FileNotFoundError):
        if ours if inode is None else path.stat().st_ino == inode:
            path.unlink()
    if ours:
        pid_file.unlink(missing_ok=True)


def close_and_release(server: socket.socket, path: Path, pid_file: Path, *, inode: int | None = None) -> None:
    """A daemon's end of listening: close ``server``, then ``release_files``; the daemons' one way to leave their socket."""
    with contextlib.suppress(OSError):
        server.close()
    release_files(path, pid_file, inode=inode)


def daemon_arguments(argv: list[str] | None, *, name: str, description: str) -> argparse.Namespace:
    """The command line that ``start_daemon`` gives a daemon (``--socket``, ``--idle``); logging set up for its log file."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--socket", required=True, type=Path)
    parser.add_argument("--idle", type=float, default=600.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s")
    redact_logs()
    return args


class ForkingServer:
    """The loop of a daemon that forks a child per connection (the trial host, the warm sweep driver).

    It accepts this user's connections only (``accept_own``), one at a time, and hands each to
    ``handle``; it leaves once it has had no child and no connection for ``idle`` seconds (a ping
    counts: a client pings before it sends its work), or once ``stopping`` is set (after its
    children end when ``wait_for_children``). Subclasses set ``server`` and implement ``handle``.
    """

    wait_for_children = False

    def __init__(self, path: Path, idle: float) -> None:
        self.path, self.idle = path, idle
        self.server: socket.socket
        self.children: set[int] = set()
        self.stopping = False

    def handle(self, conn: socket.socket) -> None:
        """Serve one accepted connection (forking a child into ``children`` for work)."""
        raise NotImplementedError

    def on_stopping(self) -> None:
        """Called once, in the first round of the loop after ``stopping`` is set."""

    def serve_forever(self) -> None:
        """Accept and handle connections until stopped or idle."""
        last_seen, stop_seen = time.monotonic(), False
        while not (self.stopping and not (self.wait_for_children and self.children)):
            if self.stopping and not stop_seen:
                stop_seen = True
                self.on_stopping()
            self.reap()
            if self.children:
                last_seen = time.monotonic()
            try:
                conn = accept_own(self.server)
            except TimeoutError:
                if not self.children and time.monotonic() - last_seen > self.idle:
                    log.info("idle for %.0f s: leaving", self.idle)
                    break
                continue
            except OSError:  # the socket was closed on stop: wait for the children
                time.sleep(0.25)
                continue
            last_seen = time.monotonic()
            with conn, contextlib.suppress(OSError, ValueError):
                self.handle(conn)

    def reap(self) -> None:
        """Forget the children that have ended, logging those that failed."""
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    continue
                if status:
                    log.info("child %d ended: %s", pid, f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                             else f"exit code {os.waitstatus_to_exitcode(status)}")
            self.children.discard(pid)
