"""The warm sweep driver: ``nbscale sweep`` forked from a process that has imported Ray Tune and MLflow.

A sweep's command spends ~4 s of CPU importing Ray Tune, MLflow's client, pandas and rich before
its first trial can start (issue 19). On this machine (the warm Ray head's case: no
``RAY_ADDRESS``, not ``NBSCALE_WARM_RAY=0``, not ``NBSCALE_WARM_DRIVER=0``) the command is a thin
client instead: it asks the driver daemon of its ``NBSCALE_HOME`` (socket ``agent/driver.sock``),
which did those imports once, to fork a child that runs the very same command as the caller
would have, in the caller's place:

- its environment, read from ``/proc/<client pid>/environ`` (the kernel shows it to this user
  only, so no value crosses the socket) plus what the client changed since it started;
- its working directory, umask, ``sys.path`` and ``sys.argv``;
- its stdin, stdout and stderr, passed over the socket (``SCM_RIGHTS``): rich sees the caller's
  terminal, so progress, colours and messages look as they do without the driver.

The client passes SIGINT and SIGTERM on (unless it ignores them) (a cancelled sweep still ends KILLED, exit 130, results
kept) and exits with the child's exit code; a client that dies is a SIGTERM to its child. Ctrl-Z stops
the child's process group and then the client; ``fg`` continues both.

The daemon imports only, never connects: Ray's gRPC threads, MLflow's database connections and
any other thread would be copied half-held into every child. Each child joins the warm Ray head
itself. The daemon's version names this package's code and location, the Python, and the few
variables read when those modules are imported (``IMPORT_TIME_PREFIXES``) and the installed ray, mlflow and pandas; a client of another
version has the old daemon leave once its sweeps end, and starts its own.

Protocol, between processes of one user (``SO_PEERCRED`` on both ends): ``ping`` and ``stop`` as
the other daemons' (one JSON line). A ``run`` sends the three descriptors first (one byte of
data), then a JSON line (version, entry, argv, cwd, umask, path, environ_changed,
environ_removed, streams with their buffering, nice, affinity, flags, warnoptions, xoptions); the forked child answers ``{"ok", "pid"}``, waits for ``go``, and
ends with ``{"exit": code}``. Meanwhile the client may send ``{"signal": n}``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..private_files import connect_own
from ..tracking.daemon import IMPORT_TIME_PREFIXES
from .cold_check import Precheck, refused_while_starting
from .ray_head import SET_IN_RAY_DRIVERS

log = logging.getLogger(__name__)

ENV_WARM_DRIVER = "NBSCALE_WARM_DRIVER"  # "0": every sweep command imports and drives in its own process, as before
SOCKET_NAME, PID_NAME, LOG_NAME = "driver.sock", "sweep-driver.pid", "sweep-driver.log"
DAEMON_MODULE = f"{__package__}.warm_driver_daemon"
BIND_TIMEOUT_S = 30.0  # until a driver that has just started has bound its socket (before its imports)
START_TIMEOUT_S = 120.0  # a driver that has just started imports Ray Tune and MLflow first (~3 s; longer on a loaded machine)
#: Of those, what is read later, and set by Ray in its drivers (a sweep command started from one has them).
#: PYTHONUNBUFFERED is read at start-up, but a child takes on its caller's stream buffering (``streams`` in the request).
_READ_LATER = SET_IN_RAY_DRIVERS | {"PYTHONUNBUFFERED"}
STREAMS = (0, 1, 2)

#: True in a child of the daemon (``warm_driver_daemon.py``): the command it runs must not ask the daemon again.
IN_DRIVER = False


def wanted() -> bool:
    """Whether a sweep command here goes to the warm driver: the warm Ray head's case, and not ``NBSCALE_WARM_DRIVER=0``."""
    from .ray_head import wanted as warm_ray_wanted

    return not IN_DRIVER and os.environ.get(ENV_WARM_DRIVER) != "0" and warm_ray_wanted()


def code_version(environ: Mapping[str, str]) -> str:
    """This package's code and place, the Python, the preloaded distributions, and the import-time variables of ``environ``."""
    from ..tracking_uri import without_telemetry

    environ = without_telemetry(environ)  # as the daemon is started
    digest = hashlib.sha256(installed_key().encode())
    for name in sorted(n for n in environ if n.startswith(IMPORT_TIME_PREFIXES) and n not in _READ_LATER):
        digest.update(f"{name}={environ[name]}\0".encode())
    return digest.hexdigest()[:16]


#: The distributions whose modules the driver holds imported: a ``pip install -U`` of one replaces the driver.
PRELOADED_DISTRIBUTIONS = ("ray", "mlflow", "pandas")


@functools.cache
def installed_key() -> str:
    """The Python, this package's files and the preloaded distributions' metadata, by their stats; read once a process.

    Stats, not contents (~2.5 ms of CPU against ~23 ms of hashing and version parsing, paid by every sweep command):
    a write changes a file's ctime, which no tool sets back, and an upgrade renames the ``.dist-info`` folder.
    The daemon reads it at its start, before its imports, and keeps it.
    """
    package = Path(__file__).resolve().parent.parent
    lines = [sys.prefix, sys.version, str(package), *files_key(package), *distributions_key(PRELOADED_DISTRIBUTIONS)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def files_key(folder: Path) -> list[str]:
    """Each ``.py`` file under ``folder`` with its size, mtime, ctime and inode, in a stable order."""
    found: list[str] = []
    for parent, folders, names in os.walk(folder):
        folders.sort()
        found.extend(_stat_line(Path(parent, name)) for name in sorted(names) if name.endswith(".py"))
    return found


def distributions_key(names: tuple[str, ...]) -> list[str]:
    """Each distribution's ``.dist-info/METADATA`` with its stats: the first on ``sys.path``, as ``importlib.metadata`` finds it.

    Looked up by hand: importing ``importlib.metadata`` (email, zipfile, csv) would cost every sweep
    command ~10 ms of CPU, most of what this key saves. An upgrade renames the folder (its version is in the name).
    """
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            listing = sorted(os.listdir(entry or "."))
        except OSError:  # a zip, or a folder that is gone
            continue
        for item in listing:
            project = item.partition("-")[0].lower()  # {name}-{version}.dist-info, '-' in a name written '_'
            if item.endswith(".dist-info") and project in names and project not in found:
                found[project] = _stat_line(Path(entry or ".", item, "METADATA"))
    return [f"{name} {found.get(name, 'missing')}" for name in names]


def _stat_line(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path} missing"
    return f"{path} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def socket_path(home: Path) -> Path | None:
    """``<home>/agent/driver.sock``, or None when that path is too long for a Unix socket."""
    from ..tracking.agent import socket_path as agent_socket

    path = agent_socket(home)
    return None if path is None else path.with_name(SOCKET_NAME)


def stop(home: Path, timeout: float = 30) -> int | None:
    """Stop the driver of ``home`` if one runs (it leaves once its sweeps end); returns its pid."""
    from ..tracking.daemon import stop_daemon

    path = socket_path(home)
    return None if path is None else stop_daemon(path, path.with_name(PID_NAME), timeout)


# -- client side -------------------------------------------------------------------------------


def run_in_driver(entry: str, argv: list[str], precheck: Precheck | None = None) -> int | None:
    """Run ``entry`` (``cli`` or ``sweep``) with ``argv`` in a child of the warm driver; its exit code.

    None when there is no driver to use (the caller then runs the command itself, as before):
    nothing has been run or printed then (why goes to the debug log: no handler is set up yet, and
    Python's last-resort one would print a warning on the caller's stderr). When the driver has to
    be started, ``precheck`` runs while it starts (``cold_check.py``): a usage error is answered here."""
    if not wanted() or not all(_is_open(fd) for fd in STREAMS):
        return None
    from ..private_files import private_home
    from ..tracking.daemon import launch_daemon, wait_for_socket
    from ..tracking_uri import nbscale_home

    path = socket_path(private_home(nbscale_home()))  # a home that is not private is refused, as the command would
    if path is None:
        return None
    version = code_version(os.environ)
    try:
        process = launch_daemon(path, DAEMON_MODULE, version, lock="driver-start.lock", log_name=LOG_NAME)
    except OSError as exc:
        log.debug("no warm sweep driver: %s", exc)
        return None
    refused = None if process is None or precheck is None else refused_while_starting(precheck)  # None: a driver answered already
    if refused is not None:
        return refused
    try:
        # launch_daemon waits 5 s, too short for a new driver's start on a heavily loaded machine
        if not wait_for_socket(path, process, BIND_TIMEOUT_S) and process is not None and process.poll() is not None:
            raise OSError(f"the sweep driver exited at start-up (exit code {process.returncode}); see {path.with_name(LOG_NAME)}")
        sock = connect_own(path, timeout=START_TIMEOUT_S)
    except OSError as exc:
        log.debug("no warm sweep driver: %s", exc)
        return None
    with sock:
        child = _start_child(sock, _request(entry, argv, version))
        if child is None:
            return None
        return _follow(sock, child, path.with_name(LOG_NAME))


def _request(entry: str, argv: list[str], version: str) -> dict[str, Any]:
    from .caller_environ import environ_changes

    changed, removed = environ_changes()
    umask = os.umask(0o077)
    os.umask(umask)
    streams = [None if s is None else [s.encoding, s.errors, getattr(s, "line_buffering", False), getattr(s, "write_through", False)]
               for s in (sys.stdin, sys.stdout, sys.stderr)]
    return {"op": "run", "version": version, "entry": entry, "argv": argv, "argv0": sys.argv[0], "cwd": os.getcwd(),
            "umask": umask, "path": sys.path, "environ_changed": changed, "environ_removed": removed, "streams": streams,
            "nice": os.getpriority(os.PRIO_PROCESS, 0), "affinity": sorted(os.sched_getaffinity(0)), **interpreter_options()}


def interpreter_options() -> dict[str, Any]:
    """This interpreter's command-line options (``-W``, ``-X``, ``-B``, ``-O``...) as a child of the driver takes them on."""
    return {"flags": {name: getattr(sys.flags, name) for name in dir(sys.flags) if not name.startswith(("_", "n_")) and name not in ("count", "index")},
            "warnoptions": list(sys.warnoptions), "xoptions": {k: v if isinstance(v, str) else True for k, v in sys._xoptions.items()}}


def _start_child(sock: socket.socket, request: dict[str, Any]) -> int | None:
    """Send the request and our stdio; the child's pid once it is ready, None when the driver would not serve it."""
    try:
        socket.send_fds(sock, [b"F"], list(STREAMS))
        sock.sendall((json.dumps(request) + "\n").encode())
        answer = json.loads(read_line(sock) or "{}")
        if not answer.get("ok"):
            log.debug("the warm sweep driver did not take the sweep: %s", answer.get("error") or "no answer")
            return None
        sock.sendall(b'{"op": "go"}\n')  # only now does the child run it: a client that gave up is never run twice
    except (OSError, ValueError) as exc:
        log.debug("the warm sweep driver did not answer: %s", exc)
        return None
    sock.settimeout(None)  # a sweep runs as long as it runs
    return int(answer["pid"])


def _follow(sock: socket.socket, child: int, log_path: Path) -> int:
    """Pass SIGINT and SIGTERM on to the child, and Ctrl-Z and ``fg`` (``_pause_with``), until it reports its exit code."""
    forwarded: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        forwarded.append(signum)
        with contextlib.suppress(OSError):
            sock.sendall((json.dumps({"signal": signum}) + "\n").encode())

    # not those we ignore: a script's `nbscale sweep &` ignores SIGINT, and so must its sweep
    previous: dict[int, Any] = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)
                                if signal.getsignal(sig) is not signal.SIG_IGN}
    previous.update(_pause_with(child))
    try:
        line = read_line(sock)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if line:
        return int(json.loads(line)["exit"])
    if forwarded:  # ended by the signal it was sent, before it could answer: as a process of our own would have
        return 128 + forwarded[-1]
    print(f"error: the sweep's process (pid {child}) ended without an exit code; its driver's log is {log_path}", file=sys.stderr)
    return 1


def _pause_with(child: int) -> dict[int, Any]:
    """Ctrl-Z (SIGTSTP) stops the child's process group, then this client; SIGCONT (``fg``, ``bg``) continues both.

    The child leads a session of its own, away from the terminal, so it gets no Ctrl-Z of its own, and
    a SIGTSTP would be discarded there (its group is orphaned): it gets SIGSTOP, from here, as it is
    this user's. Returns the handlers replaced. A SIGSTOP of the client cannot be caught: the sweep
    goes on until the client is continued.
    """
    if signal.getsignal(signal.SIGTSTP) is signal.SIG_IGN:  # job control is off for us: so it is for the sweep
        return {}

    def pause(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # stops here (the shell sees a stopped job) until SIGCONT
        signal.signal(signal.SIGTSTP, pause)
        resume(signal.SIGCONT, None)

    def resume(_signum: int, _frame: Any) -> None:
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGCONT)

    return {signal.SIGTSTP: signal.signal(signal.SIGTSTP, pause), signal.SIGCONT: signal.signal(signal.SIGCONT, resume)}


def read_line(sock: socket.socket) -> str:
    """One line from ``sock`` without a buffered reader (which would swallow what follows); '' at its end."""
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            return ""
        data += chunk
    return data.decode()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
