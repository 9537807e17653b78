"""A daemon's child acts only for a caller whose process it can be: same namespaces, root, groups, cgroup; the caller's limits.

Callers are real processes started under ``unshare``, ``setpriv`` and ``prlimit`` (root is needed to
make them); each daemon's request handling runs in this process over a real Unix socket, and forks
its real child, which answers before it would import or run anything heavy.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workflow_compiler.private_files import accept_own
from workflow_compiler.tracking.caller_context import unlike_caller

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "setpriv", "prlimit"))),
                                reason="making callers in other namespaces and groups needs root and util-linux")

#: Wrappers that make a caller a daemon's child must not act for, and what it is told differs.
OTHER_CALLERS = [(["unshare", "-m"], "mnt namespace"),
                 (["unshare", "-m", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', "/mnt"],
                  "mnt namespace"),
                 (["setpriv", "--groups=4242"], "groups"),
                 (["setpriv", "--regid=4242", "--keep-groups"], "gid"),
                 (["setpriv", "--no-new-privs"], "nonewprivs"),
                 (["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin"], "capbnd")]
IDS = ["unshare-m", "tmpfs-over-a-folder", "groups", "gid", "no-new-privs", "fewer-capabilities"]


@pytest.fixture()
def serve_one() -> Iterator[tuple[Path, Callable[[Callable[[socket.socket], None]], threading.Thread]]]:
    """A socket path, and a function that accepts one connection there in a thread and hands it to a handler."""
    folder = Path(tempfile.mkdtemp(prefix="nbs-ctx-"))  # short: a Unix socket's path has ~100 bytes
    os.chmod(folder, 0o755)  # a caller with other groups still reaches it (its uid is ours)
    path = folder / "daemon.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    server.settimeout(60)

    def serve(handle: Callable[[socket.socket], None]) -> threading.Thread:
        def accept() -> None:
            with accept_own(server) as conn:
                handle(conn)
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        return thread

    yield path, serve
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def _caller(wrapper: list[str], code: str) -> str:
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([*wrapper, sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


#: The caller logs at INFO on stderr: why a daemon was not used (``... not used: <the daemon's answer>``).
LOGGED = "import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"


def _refused_for(wrapper: list[str], code: str, differs: str) -> str:
    """Run ``code`` (which prints the connection) as a caller; its stdout, once its log shows the daemon named ``differs``.

    ``connect`` returns None on any error: without the reason, a child that crashed would pass as a refusal.
    """
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([*wrapper, sys.executable, "-c", LOGGED + code], capture_output=True, text=True, timeout=120,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    [reason] = [line for line in done.stderr.splitlines() if " not used: " in line]
    assert "your process differs from the daemon's (" in reason, reason
    assert differs in reason.partition("differs from the daemon's (")[2].partition(")")[0].split(", "), reason
    return done.stdout.strip()


def _reap(children: set[int]) -> None:
    for pid in children:
        os.waitpid(pid, 0)


@pytest.mark.parametrize(("wrapper", "differs"), OTHER_CALLERS, ids=IDS)
def test_the_sweep_driver_refuses_a_caller_it_cannot_be(serve_one: tuple[Path, Callable[..., threading.Thread]],
                                                       wrapper: list[str], differs: str) -> None:
    """``unshare -m ... nbscale sweep nb.ipynb`` ran the host's ``nb.ipynb``; a sandboxed caller got out of its sandbox."""
    from workflow_compiler.sweep import warm_driver_daemon

    path, serve = serve_one
    driver = warm_driver_daemon.Driver(path, 60, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    thread = serve(driver.handle)
    code = ("from workflow_compiler.private_files import connect_own\n"
            "from workflow_compiler.sweep import warm_driver\n"
            f"sock = connect_own({str(path)!r}, timeout=60)\n"
            f"print(warm_driver._start_child(sock, warm_driver._request('cli', ['sweep'], {driver.version!r})))\n")
    assert _caller(wrapper, code) == "None"  # no child: the command runs in the caller's own process
    thread.join(10)
    _reap(driver.children)
    assert len(driver.children) == 1  # the refusal came from the forked child, which compared the caller with itself


@pytest.mark.parametrize(("wrapper", "differs"), OTHER_CALLERS, ids=IDS)
def test_the_trial_host_refuses_a_worker_it_cannot_be(serve_one: tuple[Path, Callable[..., threading.Thread]],
                                                     wrapper: list[str], differs: str) -> None:
    from workflow_compiler.sweep import trial_host

    path, serve = serve_one
    host = trial_host.Host(path, 60)
    host.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = serve(host.handle)
    code = f"from workflow_compiler.sweep import trial_host\nprint(trial_host.HostChild.connect({str(path)!r}))\n"
    assert _refused_for(wrapper, code, differs) == "None"  # the worker runs its trials itself
    thread.join(10)
    _reap(host.children)


@pytest.mark.parametrize(("wrapper", "differs"), OTHER_CALLERS, ids=IDS)
def test_the_tracking_agent_refuses_a_step_it_cannot_be(serve_one: tuple[Path, Callable[..., threading.Thread]], tmp_path: Path,
                                                       wrapper: list[str], differs: str) -> None:
    """The agent opens the ``sqlite:///`` path it is given: in another mount namespace that is another file."""
    from workflow_compiler.tracking import agent

    path, serve = serve_one
    handlers = agent.ServeHandlers()
    handlers.register("step", lambda requests, answers, *, uri: None)  # served, were the step let in
    daemon = agent.Agent(path, 60, handlers, lambda: None)
    warm = threading.Thread(target=lambda: None)
    warm.start()
    daemon.active = 1
    thread = serve(lambda conn: daemon._connection(conn, warm))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = f"from workflow_compiler.tracking import agent\nprint(agent.connect({str(path)!r}, {uri!r}))\n"
    assert _refused_for(wrapper, code, differs) == "None"  # the step writes to MLflow itself
    thread.join(10)


@pytest.mark.parametrize(("wrapper", "differs"), [*OTHER_CALLERS, ([], None)], ids=[*IDS, "alike"])
def test_the_ray_head_leases_only_to_a_caller_whose_trials_it_can_run(serve_one: tuple[Path, Callable[..., threading.Thread]],
                                                                      wrapper: list[str], differs: str | None) -> None:
    """A lease's trials run in the head's Ray workers: a caller in other namespaces or groups starts a Ray of its own."""
    from workflow_compiler.sweep import ray_head

    path, serve = serve_one
    head = ray_head.Head(path, 60, server=None)  # type: ignore[arg-type]
    thread = serve(head.handle)
    code = ("import json, socket\ns = socket.socket(socket.AF_UNIX)\n"
            f"s.connect({str(path)!r})\ns.sendall(b'{{\"op\": \"lease\"}}\\n')\ns.settimeout(5)\n"
            "try:\n    print(s.makefile().readline().strip() or 'closed')\nexcept TimeoutError:\n    print('waiting')\n")
    answer = _caller(wrapper, code)
    thread.join(10)
    if differs is None:
        # queued, to be answered with Ray's address once it is up (the fixture closes it after the handler)
        assert answer in ("waiting", "closed") and len(head.waiting) == 1
    else:
        refused = json.loads(answer)
        assert refused["ok"] is False and differs in refused["error"] and head.waiting == []


@pytest.mark.parametrize(("wrapper", "differs"), OTHER_CALLERS, ids=IDS)
def test_what_differs_is_named(wrapper: list[str], differs: str) -> None:
    with subprocess.Popen([*wrapper, "sleep", "60"]) as caller:
        try:
            for _ in range(200):  # until the wrapper has made its change and run sleep
                if Path(f"/proc/{caller.pid}/exe").resolve().name == "sleep":
                    break
                threading.Event().wait(0.02)
            assert differs in (unlike_caller(caller.pid) or "")
        finally:
            caller.kill()


def test_a_caller_like_the_daemon_is_served() -> None:
    assert unlike_caller(os.getpid()) is None
    with subprocess.Popen(["sleep", "60"]) as caller:
        assert unlike_caller(caller.pid) is None
        caller.kill()


def test_a_child_takes_on_the_callers_lower_limits() -> None:
    """``prlimit --nofile=200:200 --as=8000000000: nbscale sweep``: the child had the daemon's 20000 files and no memory limit."""
    child = ("import json, resource, sys\n"
             "from workflow_compiler.tracking.caller_context import become_caller\n"
             "become_caller(int(sys.argv[1]))\n"
             "print(json.dumps([resource.getrlimit(resource.RLIMIT_NOFILE), resource.getrlimit(resource.RLIMIT_AS)]))\n")
    with subprocess.Popen(["prlimit", "--nofile=200:200", "--as=8000000000:", "sleep", "60"]) as caller:
        try:
            for _ in range(200):
                if resource.prlimit(caller.pid, resource.RLIMIT_NOFILE) == (200, 200):
                    break
                threading.Event().wait(0.02)
            env = {**os.environ, "PYTHONPATH": ":".join(sys.path)}
            done = subprocess.run([sys.executable, "-c", child, str(caller.pid)], capture_output=True, text=True, timeout=60,
                                  env=env, check=True)
        finally:
            caller.kill()
    assert json.loads(done.stdout) == [[200, 200], [8000000000, resource.getrlimit(resource.RLIMIT_AS)[1]]]
