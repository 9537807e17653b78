"""The warm Ray head: the embedded default's Ray, kept up between sweeps like the tracking agent.

Starting and stopping a local Ray costs a user's ``nbscale sweep`` ~11 s on 2 cores (``ray.init``
alone 7-13 s), every time. On this machine (no ``RAY_ADDRESS``) the driver instead leases the
head of its ``NBSCALE_HOME``: a small daemon of ours (socket ``agent/ray.sock``) that runs
``ray start --head --block`` as its child, bound to 127.0.0.1, with no dashboard and Ray's token
authentication on (a fresh token per start in a 0600 file, ``RAY_AUTH_TOKEN_PATH``), its session
files under the 0700 ``agent/`` folder. A driver connects to it as to any cluster (~1.3 s).

Protocol, one JSON object per line between processes of one user (``SO_PEERCRED`` both ends):
``ping`` (its answer also counts the leases, for ``nbscale daemons stop``) and ``stop`` as the other daemons'; ``lease`` is answered, once Ray is up, with
``{"address", "token_path"}``, and the lease lasts while the driver keeps that connection open.
The daemon stops Ray and leaves after ``NBSCALE_TRACKING_AGENT_IDLE`` seconds with no lease, on
``stop`` (once the leases end), on SIGTERM, and when its Ray dies (``ray start --block`` ends
every Ray process when one of them dies): the next sweep starts another. Ray's processes get
SIGTERM if the daemon is killed (``PR_SET_PDEATHSIG``).

A head serves the environment it was started with, less the variables that describe its caller
(Ray's workers inherit it, ``head_environ``): its version names
this code, the Python and a digest of that environment, and a driver whose environment differs
starts a head of its own (the other leaves when its leases end).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..private_files import accept_own, connect_own, peer_credentials, write_private
from ..tracking_uri import TELEMETRY_SWITCH, nbscale_home, telemetry_switch, without_telemetry

log = logging.getLogger(__name__)

ENV_WARM_RAY = "NBSCALE_WARM_RAY"  # "0": each sweep starts and stops a Ray of its own, as before
SOCKET_NAME, PID_NAME, TOKEN_NAME = "ray.sock", "ray-head.pid", "ray-token"
LEASE_TIMEOUT_S = 300.0  # Ray's start on a loaded 2-core machine (its raylet may wait 180 s for its agent)
_MAX_TEMP_DIR = 44  # Ray's socket paths add ~63 bytes (session_<date>_<time>_<us>_<pid>/sockets/plasma_store) within sun_path's 107
#: Set in a Ray driver: Ray's token settings (the head sets them for its Ray itself) and the debugger
#: hook that ``ray.init`` sets. A process that has run a sweep has them; they say nothing of its caller.
#: Left out of both daemons' versions (here and ``warm_driver.code_version``).
SET_IN_RAY_DRIVERS = frozenset({"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "PYTHONBREAKPOINT"})
# Variables that describe the caller, not what its trials see: a shell's per-command ones, the
# terminal's, those ipykernel and jupyter-server set in a kernel (colours, pager, matplotlib's inline
# backend, the parent's pid), the local executor's per-run sweep id, the sweep driver's switch, and
# SET_IN_RAY_DRIVERS (else a process's second sweep found a head of another environment). Left out of the
# digest, so that a CLI sweep and a kernel's share one head, and out of the head's (so Ray's workers')
# environment (``head_environ``): else a kernel's ``JPY_API_TOKEN`` (a credential) or colours reached later callers' trials.
# MLFLOW_TRACKING_URI is the caller's too: each trial gets its sweep's store with its plan (``trial.py``), and the local
# executor spells out the default store where a terminal leaves it unset; so is the sweep's spec, which the local executor
# hands a kernel's sweep in compiler.rayjob.SPEC_ENV (else a new head for every sweep of the magics and the Lab dialog).
_VOLATILE = frozenset({"PWD", "OLDPWD", "SHLVL", "_", "COLUMNS", "LINES", "TERM", "COLORTERM", "CLICOLOR", "CLICOLOR_FORCE",
                       "FORCE_COLOR", "PAGER", "GIT_PAGER", "MPLBACKEND", "NBSCALE_SWEEP_ID", "NBSCALE_WARM_DRIVER",
                       "MLFLOW_TRACKING_URI", "NBSCALE_SWEEP_SPEC"}) | SET_IN_RAY_DRIVERS
_VOLATILE_PREFIXES = ("JPY_", "PYDEVD_")
#: How long the raylet waits for its metrics agent: Ray's 30 s is too short on a busy 2-core machine.
AGENT_REGISTER_TIMEOUT = ("RAY_agent_register_timeout_ms", "180000")


def _shared(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables that describe its caller (``_VOLATILE``): what every caller of one head has alike.

    The home is named whether the caller spelt it out (the local executor, so a kernel's sweep) or left it to its
    default (a terminal): one home, one head."""
    shared = {n: v for n, v in environ.items() if n not in _VOLATILE and not n.startswith(_VOLATILE_PREFIXES)}
    shared["NBSCALE_HOME"] = str(nbscale_home(environ))
    return shared


def code_version(environ: Mapping[str, str]) -> str:
    """This module, the Python environment, and ``environ`` (what Ray's workers will inherit)."""
    digest = hashlib.sha256(f"{sys.prefix}\n{sys.version}\n".encode())
    digest.update(Path(__file__).read_bytes())
    shared = _shared(environ)
    for name in sorted(shared):
        digest.update(f"{name}={shared[name]}\0".encode())
    return digest.hexdigest()[:16]


def head_environ(environ: Mapping[str, str], token_path: Path) -> dict[str, str]:
    """The environment ``ray start`` (and so every Ray worker, every trial) gets from a head started with ``environ``.

    Only what the version digest covers, so it is the same whichever caller started the head: a
    kernel's ``JPY_API_TOKEN``, colour switches or sweep id would otherwise reach the trials of every
    later sweep of the home. A trial's own per-run variables come with its run request (``trial.py``).
    """
    env = {**_shared(environ), **embedded_ray_environ(environ), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
    env.pop("RAY_ADDRESS", None)
    return env


def socket_path(home: Path) -> Path | None:
    """``<home>/agent/ray.sock``, or None when that path is too long for a Unix socket."""
    from ..tracking.agent import socket_path as agent_socket

    path = agent_socket(home)
    return None if path is None else path.with_name(SOCKET_NAME)


def embedded_ray_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """What the processes of a Ray that nbscale starts get on top of ``environ``.

    ``raysite`` leads ``PYTHONPATH``: every process Ray starts (agents, idle workers, trial actors)
    skips a slow optional import (see there). MLflow's telemetry stays off, as in nbscale's other
    processes; single-node mode binds every process to 127.0.0.1; and the raylet waits longer than
    its 30 s default for its metrics agent, which a busy 2-core machine can miss.
    """
    raysite = str(Path(__file__).with_name("raysite"))
    return {"PYTHONPATH": os.pathsep.join(filter(None, [raysite, environ.get("PYTHONPATH")])),
            TELEMETRY_SWITCH: telemetry_switch(environ), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            AGENT_REGISTER_TIMEOUT[0]: environ.get(*AGENT_REGISTER_TIMEOUT)}


def wanted() -> bool:
    """Whether a sweep here uses the warm head: no ``RAY_ADDRESS`` and not ``NBSCALE_WARM_RAY=0``."""
    return not os.environ.get("RAY_ADDRESS") and os.environ.get(ENV_WARM_RAY) != "0"


@dataclass
class Lease:
    """A driver's hold on the warm head: Ray stays up while ``connection`` is open."""

    address: str
    token_path: str
    connection: socket.socket

    def release(self) -> None:
        """End the lease (the head's idle time starts when its last lease ends)."""
        with contextlib.suppress(OSError):
            self.connection.close()


def lease(home: Path) -> Lease | None:
    """Start the head of ``home`` if needed and lease it; None when there is none to use (the caller starts its own Ray)."""
    from ..tracking.daemon import start_daemon

    path = socket_path(home)
    if path is None:
        log.warning("no warm Ray head: the path of its socket in %s/agent is too long for a Unix socket; "
                    "this sweep starts a Ray of its own (a shorter NBSCALE_HOME keeps one warm)", home)
        return None
    try:
        start_daemon(path, __name__, code_version(without_telemetry(os.environ)), lock="ray-start.lock", log_name="ray-head.log",
                     environ=os.environ)  # its Ray workers, and so the trials, inherit it
        sock = connect_own(path, timeout=LEASE_TIMEOUT_S)
        sock.sendall(b'{"op": "lease"}\n')
        answer = json.loads(sock.makefile("r", encoding="utf-8").readline() or "{}")
    except (OSError, ValueError) as exc:
        log.warning("no warm Ray head: %s", exc)
        return None
    if not answer.get("address"):
        sock.close()
        log.warning("no warm Ray head: %s", answer.get("error", "it left before Ray was up"))
        return None
    sock.settimeout(None)
    return Lease(address=answer["address"], token_path=answer["token_path"], connection=sock)


def stop(home: Path, timeout: float = 30) -> int | None:
    """Stop the head of ``home`` (and its Ray) if one runs; returns its pid."""
    from ..tracking.daemon import stop_daemon

    path = socket_path(home)
    return None if path is None else stop_daemon(path, path.with_name(PID_NAME), timeout)


def lease_count(path: Path) -> int:
    """How many sweeps hold (or wait for) a lease on the head at ``path``; 0 when none answers."""
    from ..tracking.daemon import ping

    return int(ping(path).get("leases", 0))


# -- the daemon --------------------------------------------------------------------------------


def _temp_dir(agent_dir: Path) -> Path:
    """Ray's session folder: ``agent/ray/<pid>`` (inside the private agent folder) when its paths fit a Unix socket, else a 0700 one of its own.

    One folder per head: a head started from another environment runs while the one it replaces
    stops, and the two Rays must not share session files (the stopping one would remove the other's).
    """
    from ..store import pid_alive

    parent = agent_dir / "ray"
    inside = parent / str(os.getpid())
    if len(os.fsencode(str(inside))) <= _MAX_TEMP_DIR:
        parent.mkdir(mode=0o700, exist_ok=True)
        for old in parent.iterdir():  # earlier heads' logs: only running heads' are kept
            if not old.is_symlink() and old.is_dir() and not (old.name.isdigit() and pid_alive(int(old.name))):
                shutil.rmtree(old, ignore_errors=True)
        inside.mkdir(mode=0o700, exist_ok=True)
        return inside
    return private_temp_dir()


def private_temp_dir() -> Path:
    """A new 0700 folder of this user's (``mkdtemp``) whose path leaves room for Ray's socket paths: in ``/tmp`` when ``TMPDIR`` is long."""
    parent = tempfile.gettempdir()
    if len(os.fsencode(parent)) > _MAX_TEMP_DIR - len("/nbs-ray-12345678/ray"):
        parent = "/tmp"  # noqa: S108 - mkdtemp makes a private folder in it
    return Path(tempfile.mkdtemp(prefix="nbs-ray-", dir=parent))


def _tighten(folder: Path) -> None:
    """Folders 0700 and files 0600 under ``folder``: Ray makes its session folders 0777 whatever the umask.

    They sit in the 0700 agent folder, which already keeps other users out; this keeps the home's
    own rule (nothing in it readable by others) true as well. Run at start and at each lease."""
    for root, folders, files in os.walk(folder):
        for name in [*folders, *files]:
            with contextlib.suppress(OSError):
                info = os.lstat(os.path.join(root, name))
                if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                    if stat.S_IMODE(info.st_mode) & 0o077:
                        os.chmod(os.path.join(root, name), stat.S_IMODE(info.st_mode) & 0o700)
    with contextlib.suppress(OSError):
        os.chmod(folder, 0o700)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the daemon dies, so a killed daemon leaves no Ray behind."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class Head:
    """The daemon: runs Ray, hands out leases, stops Ray when idle."""

    def __init__(self, path: Path, idle: float, server: socket.socket) -> None:
        self.path, self.idle, self.server = path, idle, server
        self.version = code_version(os.environ)
        self.leases: set[socket.socket] = set()
        self.waiting: list[socket.socket] = []
        self.stopping = False  # asked to stop: leaves when the leases end
        self.terminated = False  # SIGTERM: leaves now
        self.address: str | None = None

    def start_ray(self) -> None:
        """``ray start --head --block`` on 127.0.0.1 with a new token, in a process group of its own."""
        agent_dir = self.path.parent
        self.temp_dir = _temp_dir(agent_dir)
        self.token_path = agent_dir / f"{TOKEN_NAME}-{os.getpid()}"  # its own: a replaced head unlinks only its token
        with contextlib.suppress(FileNotFoundError):
            self.token_path.unlink()
        write_private(self.token_path, secrets.token_hex(32).encode())
        self.ready_file = self.temp_dir / "ray_current_cluster"  # `ray start` writes it once the node is up
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        port = _free_port()
        self.pending_address = f"127.0.0.1:{port}"
        env = head_environ(os.environ, self.token_path)
        command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
                   f"--port={port}", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        gpus = os.environ.get("NBSCALE_LOCAL_GPUS")  # declare logical GPUs on a machine Ray cannot inspect
        if gpus:
            command.append(f"--num-gpus={gpus}")
        self.ray = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,  # noqa: S603 - fixed argv
                                    preexec_fn=_die_with_parent)  # noqa: PLW1509 - the daemon runs no threads
        log.info("starting Ray (pid %d) at %s, session files in %s", self.ray.pid, self.pending_address, self.temp_dir)

    def stop_ray(self) -> None:
        """SIGTERM to ``ray start`` (it stops its node), then anything left in its process group is killed."""
        if self.ray.poll() is None:
            self.ray.send_signal(signal.SIGTERM)
            try:
                self.ray.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("Ray did not stop in 30 s: killing it")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.ray.pid, signal.SIGKILL)
        self.ray.wait()
        self.token_path.unlink(missing_ok=True)
        if self.temp_dir.parent.name != "ray":  # a folder of its own outside the home: the next head would not find it
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def serve_forever(self) -> None:
        """Answer requests until Ray dies, a stop, or ``idle`` seconds without a lease."""
        last_used = time.monotonic()
        while not self.terminated:
            if self.ray.poll() is not None:
                log.warning("Ray ended (exit code %s): leaving", self.ray.returncode)
                break
            if self.address is None and self.ready_file.exists():
                self.address = self.pending_address
                log.info("Ray is up at %s", self.address)
            if self.address is not None and self.waiting and self._ray_answers():
                for conn in self.waiting:
                    self._answer(conn, {"address": self.address, "token_path": str(self.token_path)}, keep=True)
                self.waiting.clear()
                _tighten(self.temp_dir)  # after answering: the walk grows with Ray's logs, and agent/ is 0700 anyway
            if self.leases or self.waiting:
                last_used = time.monotonic()
            elif self.stopping or time.monotonic() - last_used > self.idle:
                log.info("%s: stopping Ray", "asked to stop" if self.stopping else f"idle for {self.idle:.0f} s")
                break
            self._wait_for_requests()

    def _ray_answers(self) -> bool:
        """Ray's GCS accepts connections: a lease is not handed out for a Ray that has just died."""
        assert self.address is not None  # noqa: S101 - only called once Ray is up
        host, port = self.address.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=2).close()
        except OSError:
            return False
        return True

    def _wait_for_requests(self) -> None:
        readable, _, _ = select.select([self.server, *self.leases], [], [], 0.25)
        for sock in readable:
            if sock is self.server:
                with contextlib.suppress(OSError, ValueError):
                    self._accept()
            else:  # a lease's driver closed its end (or died)
                self.leases.discard(sock)
                sock.close()
                _tighten(self.temp_dir)

    def _accept(self) -> None:
        conn = accept_own(self.server)
        conn.settimeout(5)  # one request line: a silent client must not hold the daemon
        self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """One request of an own-user connection: ping, stop, or a lease (answered once Ray is up)."""
        from ..tracking.caller_context import unlike_caller

        op = json.loads(conn.makefile("r", encoding="utf-8").readline() or "{}").get("op")
        if op == "ping":
            self._answer(conn, {"ok": True, "version": self.version, "pid": os.getpid(), "leases": len(self.leases) + len(self.waiting)})
        elif op == "stop":
            self.stopping = True
            self._unlink_socket()  # new sweeps start a new head; the leases running here finish first
            self._answer(conn, {"ok": True})
        elif op == "lease" and not self.stopping:
            # its trials would run in Ray's workers, in the head's namespaces and cgroup: not for a caller in others
            if (unlike := unlike_caller(peer_credentials(conn)[0])) is not None:
                self._answer(conn, {"ok": False, "error": f"the Ray head cannot run this process's trials: {unlike}"})
            else:
                self.waiting.append(conn)
        else:
            self._answer(conn, {"ok": False, "error": f"the Ray head does not serve {op!r} now"})

    def _answer(self, conn: socket.socket, answer: dict[str, Any], *, keep: bool = False) -> None:
        try:
            conn.sendall((json.dumps(answer) + "\n").encode())
        except OSError:
            keep = False
        if keep:
            self.leases.add(conn)
        else:
            conn.close()

    def _unlink_socket(self) -> None:
        from ..tracking.daemon import release_files

        release_files(self.path, self.path.with_name(PID_NAME))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the head's daemon (started by a sweep's driver)."""
    from ..tracking.daemon import close_and_release, daemon_arguments, listen_on

    args = daemon_arguments(argv, name="nbscale-ray-head", description="nbscale's warm Ray head (started by a sweep's driver)")
    try:
        server = listen_on(args.socket, args.socket.with_name(PID_NAME))
    except OSError as exc:  # another head bound it first
        log.info("not starting: %s", exc)
        return
    head = Head(args.socket, args.idle, server)
    signal.signal(signal.SIGTERM, lambda *_: setattr(head, "terminated", True))
    try:
        head.start_ray()
        head.serve_forever()
    finally:
        close_and_release(server, args.socket, args.socket.with_name(PID_NAME))
        for conn in [*head.leases, *head.waiting]:
            conn.close()
        if hasattr(head, "ray"):
            head.stop_ray()


if __name__ == "__main__":
    main()
