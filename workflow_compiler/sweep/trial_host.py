"""The warm trial host: trial workers' notebook side, forked from one process that imported it all.

Each Ray trial worker of a sweep would otherwise import MLflow, IPython and papermill itself before
its first trial: ~2 s of CPU per worker, on a 2-core machine the largest part of a sweep's cold
start after Ray Tune's own imports (B2 of issue 3). On this machine the driver starts one host per
``NBSCALE_HOME`` that imports them once and then only accepts connections. A trial worker connects,
and the host forks a child that runs that worker's trials one after another in its warm shell
(``worker.py``), exactly as the worker would have: the same sandbox per trial, the worker's own
environment, ``sys.path`` and working directory. The worker keeps what needs Ray: Tune's reports
(and so ASHA's stop decisions), the trial's GPU ids and its MLflow run.

Written here rather than with ``multiprocessing``'s forkserver: that one belongs to a single parent
process and starts cold with it, while this host is shared by every worker of every sweep on the
machine and outlives a sweep, like the tracking agent (``tracking/agent.py``). The host runs no
thread of its own, so a fork copies no lock that another thread holds. It leaves when it has had
no connection and no child for ``NBSCALE_TRACKING_AGENT_IDLE`` seconds.

The host is a speed-up, never a dependency: a worker that cannot use it (none running, another
code version or Python, a Ray node on another machine, ``NBSCALE_TRIAL_HOST=0``, a worker in another
namespace, cgroup or group set, or with limits the child cannot take on: ``tracking/caller_context.py``) runs its trials
in its own process.

Protocol, one JSON object per line on a Unix socket in the user's 0700 agent folder, between
processes of one user only (``SO_PEERCRED`` on both ends): ``ping`` and ``stop`` as the agent's;
``hello`` (version, environ_changed, environ_removed, path, cwd) is answered by the
forked child with its pid, and is followed by ``run`` requests (notebook, output, params, cwd, env,
run_id, metric, interval, kernel_name, cancel_marker). For each run the child sends ``metric`` lines, with
``"ask": true`` when the objective is due for a report to Tune (the worker answers
``{"stop": bool}``), and one ``outcome``. The child leaves when the worker's connection closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..private_files import connect_own, peer_credentials
from ..tracking.caller_context import become_caller
from ..tracking.daemon import ForkingServer
from .caller_environ import environ_changes, take_on_environ
from .trial_metrics import ReportThrottle, active_run
from .worker import FAILED, TrialOutcome, TrialStopped

log = logging.getLogger(__name__)

ENV_HOST = "NBSCALE_TRIAL_HOST"  # "0": trials run in the Ray workers' own processes
SOCKET_NAME, PID_NAME = "trials.sock", "trial-host.pid"
HELLO_TIMEOUT_S = 60.0  # a host that has just started imports MLflow first (~2 s; much longer on a loaded machine)


def code_version() -> str:
    """The sweep package's code and this Python: a worker is served only by a host that runs what it would.

    The environment is named by ``sys.prefix``, not ``sys.executable``: ``python`` and ``python3``
    of one virtualenv are the same interpreter (a ``ray start`` worker runs the one its script names).
    """
    digest = hashlib.sha256(f"{sys.prefix}\n{sys.version}\n".encode())
    here = Path(__file__).parent
    for source in sorted(here.glob("*.py")):
        digest.update(source.read_bytes())
    digest.update((here.parent / "runtime" / "speedups.py").read_bytes())
    return digest.hexdigest()[:16]


def socket_path(home: Path) -> Path | None:
    from ..tracking.agent import socket_path as agent_socket

    path = agent_socket(home)  # the agent's folder, and its check of the path's length
    return None if path is None else path.with_name(SOCKET_NAME)


def start_for_local_ray() -> str | None:
    """The host's socket (started if needed) when the sweep's trial workers run on this machine."""
    from ..store import nbscale_home
    from ..tracking.daemon import start_daemon

    address = os.environ.get("RAY_ADDRESS", "")
    if os.environ.get(ENV_HOST) == "0" or (address and not address.startswith(("127.0.0.1:", "localhost:"))):
        return None
    path = socket_path(nbscale_home())
    if path is None:
        return None
    try:
        return str(start_daemon(path, "workflow_compiler.sweep.trial_host", code_version(), lock="host-start.lock",
                                log_name="trial-host.log"))
    except OSError as exc:
        log.warning("no warm trial host: %s", exc)
        return None


def stop(home: Path, timeout: float = 10) -> int | None:
    """Stop the host of ``home`` if one runs; returns its pid. For tests, benchmarks and clean-ups."""
    from ..tracking.daemon import stop_daemon

    path = socket_path(home)
    return None if path is None else stop_daemon(path, path.with_name(PID_NAME), timeout)


# -- worker side -------------------------------------------------------------------------------


class HostChild:
    """A trial worker's connection to its child of the host."""

    def __init__(self, sock: socket.socket, reader: IO[str], writer: IO[str], pid: int) -> None:
        self.sock, self.reader, self.writer, self.pid = sock, reader, writer, pid

    @classmethod
    def connect(cls, path: str) -> HostChild | None:
        """Start a new child of the host at ``path`` that takes on this process's environment; None if there is none to use.

        Only a host of this user is used (``connect_own``). The environment is not sent whole: the
        child reads the one this worker started with from ``/proc/<pid>/environ`` (the kernel shows
        it only to this user, and the pid is the one it saw connect), and the hello carries only
        what this process changed since (``environ_changes``).
        """
        try:
            sock = connect_own(path, timeout=HELLO_TIMEOUT_S)
        except OSError as exc:
            log.info("trial host at %s not used: %s", path, exc)
            return None
        try:
            reader, writer = sock.makefile("r", encoding="utf-8"), sock.makefile("w", encoding="utf-8")
            changed, removed = environ_changes()
            # path and cwd: the notebook imports what the worker would import, and opens files relative to where it would
            _send(writer, {"op": "hello", "version": code_version(), "environ_changed": changed, "environ_removed": removed,
                           "path": sys.path, "cwd": os.getcwd()})
            answer = json.loads(reader.readline() or "{}")
        except (OSError, ValueError) as exc:
            sock.close()
            log.info("trial host at %s not used: %s", path, exc)
            return None
        if not answer.get("ok"):
            log.info("trial host at %s not used: %s", path, answer.get("error") or "no answer")
            sock.close()
            return None
        sock.settimeout(None)  # a trial runs as long as its notebook does
        return cls(sock, reader, writer, int(answer["pid"]))

    def run(self, request: dict[str, Any], *, on_metric: Callable[[str, float, int | None], None],
            report: Callable[[float, int | None], None]) -> TrialOutcome:
        """Run one trial in the child. ``report`` may raise TrialStopped: the child then stops the notebook.

        A child that dies (the notebook ended its process) gives a FAILED outcome; the next trial gets a new child.
        """
        output = Path(request["output"])
        try:
            _send(self.writer, {"op": "run", **request})
            for line in self.reader:
                message = json.loads(line)
                if "metric" in message:
                    on_metric(message["metric"], message["value"], message["step"])
                    if message.get("ask"):
                        try:
                            report(message["value"], message["step"])
                            _send(self.writer, {"stop": False})
                        except TrialStopped:
                            _send(self.writer, {"stop": True})
                elif "outcome" in message:
                    done = message["outcome"]
                    return TrialOutcome(status=done["status"], output_path=output, error=done["error"], seconds=done["seconds"],
                                        pid=self.pid)
        except (OSError, ValueError) as exc:
            log.warning("lost the trial host's child %d: %s", self.pid, exc)
        except BaseException:  # the child may be waiting for an answer that will not come: it leaves with the connection
            self.close()
            raise
        self.close()
        return TrialOutcome(status=FAILED, output_path=output, error=f"the trial's process died (pid {self.pid})", pid=self.pid)

    def close(self) -> None:
        for handle in (self.reader, self.writer, self.sock):
            with contextlib.suppress(OSError):
                handle.close()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0


def _send(writer: IO[str], message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, default=_plain) + "\n")
    writer.flush()


def _plain(value: Any) -> Any:
    """A NumPy scalar (a search algorithm's sample, a notebook's metric) as the Python number it holds."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    raise TypeError(f"{type(value).__name__} cannot be sent to the trial host: {value!r}")


# -- host side ---------------------------------------------------------------------------------


def preload() -> None:
    """What every trial worker would import before its first trial, and the first uses that warm caches."""
    from ..runtime.speedups import skip_slow_optional_imports

    skip_slow_optional_imports()
    import IPython  # noqa: F401
    import mlflow  # noqa: F401 - the notebooks log with it, and the metric hooks patch it
    import nbformat
    import papermill  # noqa: F401
    from papermill.engines import papermill_engines  # noqa: F401

    from .worker import quiet_papermill, warm_runner

    # One small notebook through the warm runner: its shell, papermill's parameter injection and
    # the notebook's reading, validation and writing pay their first-use costs here (~0.5 s), not
    # in every child's first trial.
    source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                                             nbformat.v4.new_code_cell("print(x)")])
    source.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    with tempfile.TemporaryDirectory(prefix="nbscale-host-") as folder, quiet_papermill():
        nbformat.write(source, Path(folder) / "warm.ipynb")
        warm_runner().run(Path(folder) / "warm.ipynb", Path(folder) / "out.ipynb", {"x": 2}, cwd=Path(folder))


class Host(ForkingServer):
    """Accepts trial workers' connections on ``path`` and forks a child for each."""

    def __init__(self, path: Path, idle: float) -> None:
        super().__init__(path, idle)
        self.version = code_version()

    def bind(self) -> None:
        """Listen before the imports: a worker that connects meanwhile waits in its hello."""
        from ..tracking.daemon import listen_on

        self.server = listen_on(self.path, self.path.with_name(PID_NAME))

    def serve_forever(self) -> None:
        """Serve workers until stopped or idle; then the socket is released (children finish on their own)."""
        super().serve_forever()
        from ..tracking.daemon import close_and_release

        close_and_release(self.server, self.path, self.path.with_name(PID_NAME))

    def handle(self, conn: socket.socket) -> None:
        """A worker's greeting: ``ping``, ``stop`` or ``hello`` (a child forked to serve it)."""
        conn.settimeout(5)  # the host serves one greeting at a time: a silent client must not hold it
        reader, writer = conn.makefile("r", encoding="utf-8"), conn.makefile("w", encoding="utf-8")
        first = json.loads(reader.readline() or "{}")
        op = first.get("op")
        if op == "ping":
            _send(writer, {"ok": True, "version": self.version, "pid": os.getpid()})
        elif op == "stop":
            self.stopping = True
            _send(writer, {"ok": True})
        elif op != "hello" or first.get("version") != self.version:
            _send(writer, {"ok": False, "error": f"the trial host runs code version {self.version}"})
        else:
            worker_pid = peer_credentials(conn)[0]
            pid = os.fork()
            if pid == 0:
                self.server.close()
                code = 1
                try:
                    conn.settimeout(None)
                    code = _serve_worker(reader, writer, first, worker_pid)
                except BaseException:
                    log.exception("child %d could not serve its worker", os.getpid())
                finally:
                    os._exit(code)
            self.children.add(pid)
        for handle in (reader, writer):  # then the child's copy alone keeps the connection: its end is the worker's EOF
            handle.close()


def _serve_worker(reader: IO[str], writer: IO[str], hello: dict[str, Any], worker_pid: int) -> int:
    """In a forked child: take on the worker's environment, then run its trials until it disconnects."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    try:
        become_caller(worker_pid)  # else paths would be the host's, or a sandboxed worker let out
    except OSError as exc:  # the worker runs its trials in its own process
        _send(writer, {"ok": False, "error": f"the trial host cannot act for your process: {exc}"})
        return 0
    take_on_environ(worker_pid, hello["environ_changed"], hello["environ_removed"])
    sys.path[:] = hello["path"]
    os.chdir(hello["cwd"])
    _send(writer, {"ok": True, "pid": os.getpid()})
    inbox: queue.Queue[dict[str, Any]] = queue.Queue()

    def pump() -> None:  # the only reader of the socket; the worker gone means the child goes too
        with contextlib.suppress(OSError, ValueError):
            for line in reader:
                inbox.put(json.loads(line))
        os._exit(0)

    threading.Thread(target=pump, name="worker-connection", daemon=True).start()
    exchange = threading.Lock()  # a notebook may log from threads of its own: one message, or question and answer, at a time
    while True:
        request = inbox.get()
        if request.get("op") == "run":
            outcome = _run(request, writer, inbox, exchange)
            with exchange:
                _send(writer, {"outcome": {"status": outcome.status, "error": outcome.error, "seconds": outcome.seconds}})


def _run(request: dict[str, Any], writer: IO[str], inbox: queue.Queue[dict[str, Any]], exchange: threading.Lock) -> TrialOutcome:
    from .worker import quiet_papermill, warm_runner

    throttle = ReportThrottle(request["metric"], request["interval"])

    def hook(name: str, value: float, step: int | None) -> None:
        with exchange:
            ask = throttle.due(name)
            _send(writer, {"metric": name, "value": value, "step": step, "ask": ask})
            stop = ask and bool(inbox.get().get("stop"))
        if stop:
            throttle.stopped = True
            raise TrialStopped()

    try:
        with quiet_papermill():
            return warm_runner().run(Path(request["notebook"]), Path(request["output"]), request["params"], cwd=Path(request["cwd"]),
                                     env=request["env"], kernel_name=request["kernel_name"],
                                     context=lambda: active_run(request["run_id"], hook, request.get("cancel_marker")))
    except Exception as exc:  # papermill refused the notebook: the trial fails with its message, the child stays
        return TrialOutcome(status=FAILED, output_path=Path(request["output"]), error=f"{type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the host process (started by a sweep's driver)."""
    from ..tracking.daemon import daemon_arguments

    args = daemon_arguments(argv, name="nbscale-trial-host", description="nbscale's warm trial host (started by a sweep's driver)")
    host = Host(args.socket, args.idle)
    try:
        host.bind()
    except OSError as exc:  # another host bound it first
        log.info("not starting: %s", exc)
        return
    started = time.monotonic()
    preload()
    log.info("serving %s (code %s, preloaded in %.1f s, %d thread(s))", args.socket, host.version, time.monotonic() - started,
             threading.active_count())
    signal.signal(signal.SIGTERM, lambda *_: setattr(host, "stopping", True))
    host.serve_forever()
    sys.stderr.flush()
    os._exit(0)  # skip tearing down mlflow's modules


if __name__ == "__main__":
    main()
