"""The warm sweep driver's daemon: imports a sweep command's modules once, forks a child per command.

The client side, the protocol and the version are in ``warm_driver.py``. The daemon runs no thread
of its own and connects to nothing, so a fork copies no lock another thread holds; each child
takes on its client's environment, place and stdio, runs the command, and reports its exit code.
It leaves when it has had no child for ``NBSCALE_TRACKING_AGENT_IDLE`` seconds, or once its
children end after ``stop`` or SIGTERM. Its loop is ``tracking/daemon.ForkingServer``, shared with the trial host.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..tracking.daemon import ForkingServer
from . import warm_driver
from .warm_driver import PID_NAME, START_TIMEOUT_S, STREAMS, code_version, interpreter_options, read_line

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0  # for a request's line: the driver reads one request at a time


def entries() -> dict[str, Callable[[list[str]], int]]:
    """The commands a child may run, by name: ``nbscale`` and ``python -m workflow_compiler.sweep``."""
    from .. import cli
    from . import __main__ as sweep_main

    return {"cli": cli.main, "sweep": sweep_main.main}


def send_line(sock: socket.socket, message: dict[str, Any]) -> None:
    """One JSON line to ``sock``."""
    sock.sendall((json.dumps(message) + "\n").encode())


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """A connection's request and the descriptors that came with it (none for ``ping`` and ``stop``)."""
    first, fds, _flags, _address = socket.recv_fds(conn, 1, len(STREAMS))
    try:
        line = read_line(conn)
        if first != b"F":  # ping or stop: the byte read was the start of their line, and no descriptors came
            close_all(fds)
            return json.loads(first.decode() + line or "{}"), []
        return json.loads(line or "{}"), list(fds)
    except BaseException:  # a silent client or a bad line: its terminal or pipe must not stay open here
        close_all(fds)
        raise


def close_all(fds: list[int]) -> None:
    """Close each of ``fds`` (those already closed are skipped)."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def take_streams(fds: list[int], streams: list[list[Any] | None]) -> None:
    """The client's stdin, stdout and stderr as this process's, with its encodings and buffering."""
    for target, fd in zip(STREAMS, fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    made = [None if settings is None else make_stream(fd, settings) for fd, settings in zip(STREAMS, streams, strict=True)]
    sys.stdin, sys.stdout, sys.stderr = made
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = made  # type: ignore[misc,assignment]


def make_stream(fd: int, settings: list[Any]) -> IO[str]:
    """A text stream on ``fd`` as the client had it: ``[encoding, errors, line_buffering, write_through]``.

    Built as Python builds its standard streams: with ``-u`` or ``PYTHONUNBUFFERED`` (write-through)
    there is no buffer under the text layer, so a sweep's log written to a file shows each line at once.
    """
    encoding, errors, line_buffering, write_through = settings
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    buffer: io.RawIOBase | io.BufferedIOBase = raw
    if fd == 0:
        buffer = io.BufferedReader(raw)
    elif not write_through:
        buffer = io.BufferedWriter(raw)
    return io.TextIOWrapper(buffer, encoding=encoding, errors=errors, line_buffering=bool(line_buffering),  # type: ignore[type-var]
                            write_through=bool(write_through))


#: Interpreter flags a child takes on (the rest must be the daemon's own, or the client runs the command itself).
APPLIED_FLAGS = frozenset({"dont_write_bytecode", "int_max_str_digits"})
APPLIED_XOPTIONS = frozenset({"faulthandler"})


def other_interpreter(request: dict[str, Any], own: dict[str, Any]) -> str | None:
    """Why a child of this daemon, whose options are ``own`` (``interpreter_options()``), cannot take on the
    client's (``-O``, ``-X dev``...); None when it can."""
    flags = {name for name, value in request.get("flags", {}).items() if own["flags"].get(name) != value} - APPLIED_FLAGS
    xoptions = {name for name in set(own["xoptions"]) | set(request.get("xoptions", {}))
                if own["xoptions"].get(name) != request.get("xoptions", {}).get(name)} - APPLIED_XOPTIONS
    if request.get("warnoptions", [])[:len(own["warnoptions"])] != own["warnoptions"]:
        flags.add("warnings")
    if flags or xoptions:
        return f"the sweep driver's Python runs with other options ({', '.join(sorted(flags | xoptions))})"
    return None


def take_interpreter(request: dict[str, Any]) -> None:
    """The client's ``-W`` and ``PYTHONWARNINGS`` filters, ``-B``, ``-X faulthandler`` and integer digit limit."""
    import warnings

    flags = request["flags"]
    sys.dont_write_bytecode = bool(flags["dont_write_bytecode"])
    digits = flags["int_max_str_digits"]  # -1: not set, Python's default limit
    sys.set_int_max_str_digits(sys.int_info.default_max_str_digits if digits < 0 else digits)
    added = request["warnoptions"][len(sys.warnoptions):]  # after the daemon's own (its PYTHONWARNINGS is the client's: same version)
    sys.warnoptions[:] = request["warnoptions"]
    warnings._processoptions(added)  # type: ignore[attr-defined]  # the parser behind -W, on top as at start-up: no public twin
    if "faulthandler" in request["xoptions"]:
        import faulthandler

        faulthandler.enable()


def take_caller(request: dict[str, Any], client_pid: int) -> None:
    """What the client's process is that a child must be too: its namespaces, root, groups and cgroup (else OSError),
    its resource limits and its scheduling (OSError when they cannot be taken on)."""
    from ..tracking.caller_context import become_caller

    become_caller(client_pid)
    take_scheduling(request)


def take_scheduling(request: dict[str, Any]) -> None:
    """The client's nice level and CPU affinity (``nice -n 10 nbscale sweep``, ``taskset``). Raises OSError when not allowed."""
    os.setpriority(os.PRIO_PROCESS, 0, int(request["nice"]))
    os.sched_setaffinity(0, request["affinity"])


def take_place(request: dict[str, Any], client_pid: int) -> None:
    """The client's environment, working directory, umask, ``sys.path`` and ``sys.argv``."""
    from .caller_environ import take_on_environ

    take_on_environ(client_pid, request["environ_changed"], request["environ_removed"])
    time.tzset()
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    sys.path[:] = request["path"]
    sys.argv[:] = [request["argv0"], *request["argv"]]


def exit_code(exc: SystemExit) -> int:
    """The exit code Python gives a process that raises ``exc``."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def preload() -> None:
    """Import what a sweep command imports before its first trial, and warm the plots; connect to nothing."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # as ensure_ray: read when ray is imported
    import mlflow  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - the embedded default's store
    import ray.tune  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401
    from ray.tune.schedulers import ASHAScheduler  # noqa: F401
    from ray.tune.search import BasicVariantGenerator  # noqa: F401

    from .. import quota, store, sweep_record  # noqa: F401
    from . import callbacks, driver, plots, progress, summary  # noqa: F401
    from .cli_args import add_sweep_arguments  # noqa: F401

    entries()
    plots.warm_up()  # matplotlib's fonts and first figure (~1 s), in the daemon's only thread


class Driver(ForkingServer):
    """Accepts sweep commands on ``path`` and forks a child for each; on stop, leaves once they end."""

    wait_for_children = True

    def __init__(self, path: Path, idle: float, server: socket.socket) -> None:
        super().__init__(path, idle)
        self.server = server
        self.version = code_version(os.environ)
        self.interpreter = interpreter_options()  # the daemon's own, as they stay

    def on_stopping(self) -> None:
        """No new sweeps here: the next one starts a new driver."""
        self._release()

    def handle(self, conn: socket.socket) -> None:
        """One request: ``ping``, ``stop`` or ``run`` (a child forked for it)."""
        conn.settimeout(REQUEST_TIMEOUT_S)  # one request at a time: a silent client must not hold the driver
        request, fds = read_request(conn)
        try:
            self._answer(conn, request, fds)
        finally:  # whatever happened, the child's copies alone stay open: else `nbscale sweep | tee` never ends
            close_all(fds)

    def _answer(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
        op = request.get("op")
        if op == "ping":
            send_line(conn, {"ok": True, "version": self.version, "pid": os.getpid()})
        elif op == "stop":
            self.stopping = True
            self._release()  # the next sweep starts a new driver; the sweeps running here finish first
            send_line(conn, {"ok": True})
        elif op != "run" or request.get("version") != self.version or len(fds) != len(STREAMS):
            send_line(conn, {"ok": False, "error": f"the sweep driver runs code version {self.version}"})
        elif (other := other_interpreter(request, self.interpreter)) is not None:
            send_line(conn, {"ok": False, "error": other})
        else:
            from ..private_files import peer_credentials

            client_pid = peer_credentials(conn)[0]
            pid = os.fork()
            if pid == 0:
                os._exit(_child(conn, self.server, request, fds, client_pid))
            self.children.add(pid)

    def _release(self) -> None:
        from ..tracking.daemon import close_and_release

        close_and_release(self.server, self.path, self.path.with_name(PID_NAME))


def _child(conn: socket.socket, server: socket.socket, request: dict[str, Any], fds: list[int], client_pid: int) -> int:
    """In the forked child: become the client's command, run it, report its exit code; returns it."""
    code = 1
    try:
        server.close()
        os.setsid()  # a process group of its own: the daemon's signals are not its
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        try:
            take_caller(request, client_pid)
        except OSError as exc:  # another namespace, higher limits, a lower nice...: the client runs it itself
            send_line(conn, {"ok": False, "error": f"the sweep driver cannot act for your process: {exc}"})
            return 0
        send_line(conn, {"ok": True, "pid": os.getpid()})
        conn.settimeout(START_TIMEOUT_S)
        if json.loads(read_line(conn) or "{}").get("op") != "go":
            return 0  # the client gave up waiting and runs the command itself
        conn.settimeout(None)
        _reset_logging()
        take_place(request, client_pid)
        take_streams(fds, request["streams"])
        take_interpreter(request)
        from .worker import reseed_random

        reseed_random()  # Tune samples from NumPy's global generator: a fork would give every sweep the same trials
        warm_driver.IN_DRIVER = True
        done = _watch_client(conn)
        code = _run_entry(entries()[request["entry"]], list(request["argv"]))
        done.append(True)
        _flush()
        send_line(conn, {"exit": code})
    except BaseException:  # noqa: BLE001 - the child must reach os._exit, whatever happened
        from ..redaction import print_redacted_exception

        # no log handler is left (_reset_logging): printed redacted on the stderr it has, the caller's once taken on
        print(f"the sweep's process {os.getpid()} failed:", file=sys.stderr)
        print_redacted_exception(*sys.exc_info())
        _flush()
    return code


def _run_entry(main: Callable[[list[str]], int], argv: list[str]) -> int:
    """``main(argv)``'s exit code as the process would have had it, at-exit handlers run."""
    import atexit

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exit_code(exc)
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - printed as an uncaught exception is: by sys.excepthook, which the command may redact
        sys.excepthook(*sys.exc_info())
        code = 1
    atexit._run_exitfuncs()
    return code


def _watch_client(conn: socket.socket) -> list[bool]:
    """A thread that raises the client's forwarded signals here, and SIGTERM when the client is gone."""
    import threading

    done: list[bool] = []

    def watch() -> None:
        while True:
            try:
                line = read_line(conn)
            except OSError:
                line = ""
            if not line:
                if not done:  # the client died: the sweep is cancelled as on SIGTERM
                    os.kill(os.getpid(), signal.SIGTERM)
                return
            os.kill(os.getpid(), int(json.loads(line)["signal"]))

    threading.Thread(target=watch, name="client-signals", daemon=True).start()
    return done


def _reset_logging() -> None:
    """The daemon's log handlers off: the command sets up its own logging, as in a process of its own."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point of the driver's daemon (started by a sweep command)."""
    from ..tracking.daemon import daemon_arguments, listen_on

    args = daemon_arguments(argv, name="nbscale-sweep-driver", description="nbscale's warm sweep driver (started by a sweep command)")
    try:
        server = listen_on(args.socket, args.socket.with_name(PID_NAME))  # bound before the imports: clients wait in the backlog
    except OSError as exc:  # another driver bound it first
        log.info("not starting: %s", exc)
        return
    driver = Driver(args.socket, args.idle, server)
    started = time.monotonic()
    preload()
    import threading

    log.info("serving %s (code %s, preloaded in %.1f s, %d thread(s))", args.socket, driver.version, time.monotonic() - started,
             threading.active_count())
    signal.signal(signal.SIGTERM, lambda *_: setattr(driver, "stopping", True))
    try:
        driver.serve_forever()
    finally:
        driver._release()
    sys.stderr.flush()
    os._exit(0)  # skip tearing down Ray's and MLflow's modules


if __name__ == "__main__":
    main()
