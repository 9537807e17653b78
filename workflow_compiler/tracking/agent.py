"""A warm tracking agent for the embedded default: MLflow imported once, not once per run.

Every step needs MLflow, and ``import mlflow`` plus its SQLite store costs 2-4 s on a 2-core
machine, more than a short notebook's own run. On a cluster each pod pays it in its own tracker
helper (tracker.py), overlapped with the kernel. On one machine the local executor keeps a single
agent process per ``NBSCALE_HOME`` that has imported MLflow and answers the helper's protocol over
a Unix socket, one thread per connected step: ``open`` creates the run in milliseconds instead of
after the import. The agent leaves when idle (``NBSCALE_TRACKING_AGENT_IDLE`` seconds, default
600) and only serves local SQLite stores, whose requests need nothing from the client's
environment (a tracking server's credentials would go stale in a long-lived process).

Steps that cannot reach the agent (none running, or another version of this code) start their own
helper process exactly as in a pod: the agent is a speed-up, never a dependency.

Protocol: the client's first line is ``{"op": "hello", "version": ..., "uri": ..., "serve": ...}``;
after an ``{"ok": true}`` the connection speaks the protocol of the handler registered under that
``serve`` name: ``step`` (step_tracker.py) or ``trials`` (trial_tracker.py, a sweep's trial worker,
many runs one after another). This module imports neither: the agent process's entry point
(``python -m workflow_compiler.tracking``, ``__main__.py``) registers them in ``ServeHandlers``.
The socket sits in a 0700 folder of the user's ``NBSCALE_HOME``, and both ends check the other's uid
(``SO_PEERCRED``, ``private_files``): only that user's processes talk to it, and it to them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from ..errors import ExecutionError
from ..private_files import ForeignPeer, accept_own, connect_own, peer_credentials
from .caller_context import unlike_caller
from .daemon import close_and_release, daemon_arguments, listen_on, probe, start_daemon, stop_daemon

log = logging.getLogger(__name__)

#: Set by the local executor for its steps: the agent's socket.
ENV_SOCKET = "NBSCALE_TRACKING_AGENT"
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
#: The code that serves requests, relative to ``workflow_compiler/``: the agent, both protocols and their MLflow calls.
_SOURCES = ("tracking/agent.py", "tracking/daemon.py", "tracking/__main__.py", "tracking/step_tracker.py",
            "tracking/trial_tracker.py", "runtime/tracking.py", "sweep/tracking.py", "tracking_uri.py")
#: The daemon's module, as ``start_daemon`` runs it.
AGENT_MODULE = "workflow_compiler.tracking"


class Handler(Protocol):
    """A protocol the agent serves on one connection, after the hello: requests in, answers out, for ``uri``'s store."""

    def __call__(self, requests: IO[str], answers: IO[str], *, uri: str) -> None: ...


class ServeHandlers:
    """The protocols an agent serves, by the ``serve`` name a client's hello gives; filled by whoever starts the agent."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        """Serve ``handler``'s protocol to clients whose hello says ``"serve": name``."""
        self._handlers[name] = handler

    def get(self, name: str) -> Handler:
        """The handler registered as ``name``; ExecutionError naming the ones there are otherwise."""
        try:
            return self._handlers[name]
        except KeyError:
            raise ExecutionError(f"the tracking agent serves no {name!r} protocol; it serves: "
                                 f"{', '.join(sorted(self._handlers)) or 'none'}. Update the client or restart the agent "
                                 "(`nbscale daemons stop`).") from None


def code_version() -> str:
    """A digest of the code that serves requests: an agent started from other code is not used."""
    digest = hashlib.sha256()
    package = Path(__file__).parent.parent
    for name in _SOURCES:
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:16]


def socket_path(home: Path) -> Path | None:
    """``<home>/agent/tracking.sock``, or None when that path is too long for a Unix socket."""
    path = home / "agent" / "tracking.sock"
    return path if len(os.fsencode(str(path))) <= _MAX_SOCKET_PATH else None


def serves(uri: str) -> bool:
    """Whether the agent may serve ``uri`` (a local SQLite store)."""
    from ..tracking_uri import sqlite_path

    return sqlite_path(uri) is not None


# -- client side -------------------------------------------------------------------------------


def connect(path: str | os.PathLike[str], uri: str, *, wait: float = 0.0, serve: str = "step",
            hello: dict[str, Any] | None = None) -> tuple[socket.socket, IO[str], IO[str]] | None:
    """A handshaken connection to the agent at ``path`` for ``uri``, or None (then run a helper).

    ``wait`` seconds are spent retrying while the socket does not exist yet (an agent being started).
    ``serve`` picks the protocol: a step's (step_tracker.py) or a sweep trial worker's (trial_tracker.py).
    ``hello``, when given, receives the agent's answer (``ready``: whether it has imported MLflow yet).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            sock = connect_own(path)
            break
        except ForeignPeer:  # another user's socket: it hears nothing from us, not even the hello
            return None
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)
        except OSError:
            return None
    reader = sock.makefile("r", encoding="utf-8")
    writer = sock.makefile("w", encoding="utf-8")
    try:
        writer.write(json.dumps({"op": "hello", "version": code_version(), "uri": uri, "serve": serve}) + "\n")
        writer.flush()
        answer = json.loads(reader.readline() or "{}")
    except (OSError, ValueError):
        answer = {}
    if not answer.get("ok"):
        log.info("tracking agent at %s not used: %s", path, answer.get("error") or "no answer")
        for handle in (reader, writer, sock):
            handle.close()
        return None
    if hello is not None:
        hello.update(answer)
    return sock, reader, writer


def ensure_started(home: Path) -> Path | None:
    """Start the agent for ``home`` unless one of this code's version is there; returns its socket.

    Does not wait for MLflow to be imported: the first step's requests simply wait in the agent.
    """
    path = socket_path(home)
    return None if path is None else start_daemon(path, AGENT_MODULE, code_version(), lock="start.lock",
                                                  log_name="agent.log")


def start_for(uri: str) -> Path | None:
    """The socket of this user's agent (started if needed) when it may serve ``uri``; None when it may
    not, when ``NBSCALE_TRACKING_AGENT=0`` opts out, or when it cannot start (callers then write to
    MLflow themselves)."""
    from ..store import nbscale_home

    if os.environ.get(ENV_SOCKET) == "0" or not serves(uri):
        return None
    try:
        return ensure_started(nbscale_home())
    except OSError as exc:
        log.warning("no warm tracking agent: %s", exc)
        return None


def _probe(path: Path) -> str:
    """Whether this code's agent answers at ``path``: ``current``, ``other`` (another version) or ``none``."""
    return probe(path, code_version())


def stop(home: Path, timeout: float = 10) -> int | None:
    """Stop the agent of ``home`` if one runs; returns its pid. For tests, benchmarks and clean-ups."""
    path = socket_path(home)
    return None if path is None else stop_daemon(path, home / "agent" / "agent.pid", timeout)


# -- server side -------------------------------------------------------------------------------


class Agent:
    """Accepts steps' connections and serves each in a thread until it has been idle long enough."""

    def __init__(self, path: Path, idle: float, handlers: ServeHandlers, warm_up: Callable[[], None]) -> None:
        self.path, self.idle = path, idle
        self.handlers, self._warm_up = handlers, warm_up
        self.version = code_version()
        self.active = 0
        self.last_seen = time.monotonic()
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def bind(self) -> None:
        """Listen on the socket (before the heavy imports, so clients can connect at once)."""
        self.server = listen_on(self.path, self.path.parent / "agent.pid")
        self.inode = self.path.stat().st_ino

    def warm_up(self) -> None:
        """Import MLflow and what the handlers need (the starter's ``warm_up``) now, while the first step starts its kernel."""
        started = time.monotonic()
        self._warm_up()
        log.info("mlflow imported in %.1f s", time.monotonic() - started)

    def serve_forever(self) -> None:
        """Accept until idle for ``idle`` seconds or asked to stop."""
        warm = threading.Thread(target=self.warm_up, name="warm-up")
        warm.start()
        while not self.stopping.is_set():
            try:
                conn = accept_own(self.server)
            except TimeoutError:
                with self.lock:
                    if self.active == 0 and time.monotonic() - self.last_seen > self.idle:
                        log.info("idle for %.0f s: leaving", self.idle)
                        break
                continue
            with self.lock:
                self.active += 1
            threading.Thread(target=self._connection, args=(conn, warm), name="step", daemon=True).start()
        close_and_release(self.server, self.path, self.path.parent / "agent.pid", inode=self.inode)
        deadline = time.monotonic() + 60
        while self.active and time.monotonic() < deadline:  # let connected steps finish their runs
            time.sleep(0.05)

    def _connection(self, conn: socket.socket, warm: threading.Thread) -> None:
        reader = conn.makefile("r", encoding="utf-8")
        writer = conn.makefile("w", encoding="utf-8")
        try:
            first = json.loads(reader.readline() or "{}")
            op = first.get("op")
            if op == "ping":
                _answer(writer, {"ok": True, "version": self.version, "pid": os.getpid()})
            elif op == "stop":
                self.stopping.set()
                _answer(writer, {"ok": True})
            elif op != "hello" or first.get("version") != self.version:
                _answer(writer, {"ok": False, "error": f"agent runs code version {self.version}"})
            elif not serves(str(first.get("uri", ""))):
                _answer(writer, {"ok": False, "error": "the agent serves local SQLite stores only"})
            elif (unlike := unlike_caller(peer_credentials(conn)[0])) is not None:  # its store's path would be ours, not its
                _answer(writer, {"ok": False, "error": f"the agent cannot act for your process: {unlike}"})
            else:
                self._serve(first, reader, writer, warm)
        except ConnectionResetError:  # a sweep's trial worker that Tune ended before it read its last answer
            log.info("a client left without reading its last answers")
        except (OSError, ValueError) as exc:
            log.warning("connection ended: %s", exc)
        finally:
            for handle in (reader, writer, conn):
                with contextlib.suppress(OSError):
                    handle.close()
            with self.lock:
                self.active -= 1
                self.last_seen = time.monotonic()


    def _serve(self, hello: dict[str, Any], reader: IO[str], writer: IO[str], warm: threading.Thread) -> None:
        """Answer the hello, then hand the connection to the handler its ``serve`` name picks."""
        try:
            handler = self.handlers.get(str(hello.get("serve", "step")))
        except ExecutionError as exc:
            _answer(writer, {"ok": False, "error": str(exc)})
            return
        _answer(writer, {"ok": True, "pid": os.getpid(), "ready": not warm.is_alive()})
        warm.join()
        handler(reader, writer, uri=hello["uri"])


def _answer(writer: IO[str], answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer) + "\n")
    writer.flush()


def run_agent(argv: list[str] | None, handlers: ServeHandlers, warm_up: Callable[[], None]) -> None:
    """The agent process: serve ``handlers`` on the command line's socket until idle or stopped (or leave if another agent has it)."""
    args = daemon_arguments(argv, name="nbscale-agent", description="nbscale's warm MLflow tracking agent (started by the local executor)")
    agent = Agent(args.socket, args.idle, handlers, warm_up)
    try:
        agent.bind()
    except OSError as exc:  # another agent bound it first
        log.info("not starting: %s", exc)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    log.info("serving %s (code %s, idle %.0f s)", args.socket, agent.version, args.idle)
    agent.serve_forever()
    sys.stderr.flush()
    os._exit(0)  # skip tearing down mlflow's modules
