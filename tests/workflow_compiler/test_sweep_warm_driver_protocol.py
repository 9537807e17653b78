"""The warm sweep driver's protocol, without Ray: what the daemon does with a request that goes wrong.

Each test talks to a ``Driver`` (``sweep/warm_driver_daemon.py``) over a real Unix socket pair in
this process; the children it would fork are not reached, so nothing heavy is imported or started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.sweep import warm_driver, warm_driver_daemon
from workflow_compiler.sweep.warm_driver import STREAMS


@pytest.fixture()
def driver(tmp_path: Path) -> Iterator[warm_driver_daemon.Driver]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    yield warm_driver_daemon.Driver(tmp_path / "driver.sock", 60, server)
    server.close()


def _fail(exc: BaseException) -> object:
    def raising(*_args: object) -> object:
        raise exc
    return raising


@pytest.mark.parametrize("case", ["bad json", "silent client", "peer check raises", "fork raises"])
def test_the_callers_descriptors_are_closed_whatever_goes_wrong(driver: warm_driver_daemon.Driver, monkeypatch: pytest.MonkeyPatch,
                                                               case: str) -> None:
    """A descriptor left open in the daemon is a pipe whose reader never sees its end (``nbscale sweep | tee``)."""
    monkeypatch.setattr(warm_driver_daemon, "REQUEST_TIMEOUT_S", 0.2)
    monkeypatch.setattr("workflow_compiler.private_files.peer_credentials",
                        _fail(OSError("no credentials")) if case == "peer check raises" else lambda _s: (os.getpid(), os.getuid()))
    monkeypatch.setattr(os, "fork", _fail(OSError("no memory")))  # a child is never forked here: this or an error comes first
    request = {"op": "run", "version": driver.version}
    line = b"{not json\n" if case == "bad json" else b"" if case == "silent client" else (json.dumps(request) + "\n").encode()
    read_end, write_end = os.pipe()
    client, conn = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, conn:
        socket.send_fds(client, [b"F"], [write_end] * len(STREAMS))
        client.sendall(line)
        os.close(write_end)  # ours: the driver's copies alone keep the pipe open now
        with pytest.raises((OSError, ValueError)):
            driver.handle(conn)
    os.set_blocking(read_end, False)
    try:
        assert os.read(read_end, 1) == b""  # the end of the pipe: no copy of its write end is left open
    except BlockingIOError:
        pytest.fail("the driver kept the caller's descriptors open")
    finally:
        os.close(read_end)


def _callers_request(*python_options: str, **environ: str) -> dict[str, Any]:
    """The request a caller started with ``python_options`` and ``environ`` (never this runner's own) sends, its stdout a pipe."""
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONUNBUFFERED", "PYTHONWARNINGS")}  # as the driver's
    env.update(PYTHONPATH=":".join(sys.path), **environ)  # this machine exports PYTHONUNBUFFERED=1: here only when given
    probe = "import json; from workflow_compiler.sweep import warm_driver; print(json.dumps(warm_driver._request('cli', [], 'v')))"
    done = subprocess.run([sys.executable, *python_options, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize(("options", "environ", "at_once"), [
    ((), {}, False),
    (("-u",), {}, True),
    ((), {"PYTHONUNBUFFERED": "1"}, True),
], ids=["buffered", "dash-u", "PYTHONUNBUFFERED"])
def test_the_child_writes_to_a_file_as_buffered_as_its_caller(options: tuple[str, ...], environ: dict[str, str], at_once: bool) -> None:
    """The local executor sets PYTHONUNBUFFERED=1: a sweep's log shows each line as it is written, not at 8 KB or the end."""
    settings = _callers_request(*options, **environ)["streams"][1]
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        stream = warm_driver_daemon.make_stream(write_end, settings)
        stream.write("trial 1 done\n")
        try:
            shown = os.read(read_end, 100)
        except BlockingIOError:
            shown = b""
        assert shown == (b"trial 1 done\n" if at_once else b"")
        stream.flush()
        assert shown + (b"" if at_once else os.read(read_end, 100)) == b"trial 1 done\n"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_unbuffered_and_buffered_callers_share_one_driver() -> None:
    """A Lab sweep (PYTHONUNBUFFERED=1) and a terminal's must not replace each other's driver."""
    assert warm_driver.code_version({"PYTHONUNBUFFERED": "1"}) == warm_driver.code_version({})
    assert warm_driver.code_version({"PYTHONHASHSEED": "1"}) != warm_driver.code_version({})  # read at start-up: another driver


def test_the_child_takes_on_the_callers_warning_options(monkeypatch: pytest.MonkeyPatch) -> None:
    request = _callers_request("-W", "error::UserWarning", "-B")
    assert warm_driver_daemon.other_interpreter(request, warm_driver.interpreter_options()) is None
    monkeypatch.setattr(sys, "warnoptions", [])
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    with warnings.catch_warnings():
        warm_driver_daemon.take_interpreter(request)
        assert sys.dont_write_bytecode and sys.get_int_max_str_digits() == sys.int_info.default_max_str_digits
        with pytest.raises(UserWarning):
            warnings.warn("from the sweep", UserWarning, stacklevel=1)


@pytest.mark.parametrize("options", [("-O",), ("-X", "dev"), ("-s",)])
def test_a_caller_whose_python_options_a_child_cannot_take_on_runs_the_command_itself(options: tuple[str, ...]) -> None:
    assert "other options" in str(warm_driver_daemon.other_interpreter(_callers_request(*options), warm_driver.interpreter_options()))


def test_a_caller_without_the_drivers_own_warning_filters_runs_the_command_itself() -> None:
    """The daemon's options are taken once, at its start: its ``-W`` filters come first in every child, so a caller must have them."""
    own = {**warm_driver.interpreter_options(), "warnoptions": ["ignore::DeprecationWarning"]}
    assert "(warnings)" in str(warm_driver_daemon.other_interpreter(_callers_request(), own))
    assert warm_driver_daemon.other_interpreter(_callers_request("-W", "ignore::DeprecationWarning", "-W", "error"), own) is None


def test_a_password_in_the_tracking_uri_does_not_cross_the_socket() -> None:
    """``nbscale`` moves it to MLFLOW_TRACKING_PASSWORD: that change must come after the request is made, not travel in it."""
    probe = ("import json, sys\n"
             "from workflow_compiler import cli\n"
             "from workflow_compiler.sweep import warm_driver\n"
             "def sent(entry, argv, precheck=None):\n"
             "    precheck()  # a cold driver's: it runs before the request is made\n"
             "    print(json.dumps(warm_driver._request(entry, argv, 'v')))\n"
             "    return 0\n"
             "warm_driver.run_in_driver = sent\n"
             "sys.exit(cli.main(['sweep', 'objective.ipynb', '--metric', 'score', '--mode', 'max']))\n")
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path), "MLFLOW_TRACKING_URI": "https://alice:hunter2-secret@mlflow.example"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    request = json.loads(done.stdout)
    assert request["argv"][0] == "sweep" and "hunter2" not in done.stdout, request["environ_changed"]


@pytest.fixture()
def listening(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Callable[[float], threading.Thread]]]:
    """A driver's socket path, and a function that serves it in a thread with an idle time (stopped afterwards)."""
    from workflow_compiler.tracking.daemon import ask_to_stop, listen_on

    folder = Path(tempfile.mkdtemp(prefix="nbs-drv-"))  # short: a Unix socket's path has ~100 bytes
    path = folder / "driver.sock"
    threads: list[threading.Thread] = []

    def serve(idle: float) -> threading.Thread:
        server = listen_on(path, folder / warm_driver.PID_NAME)
        server.settimeout(0.1)
        thread = threading.Thread(target=warm_driver_daemon.Driver(path, idle, server).serve_forever, daemon=True)
        thread.start()
        threads.append(thread)
        return thread

    yield path, serve
    monkeypatch.undo()
    for thread in threads:
        if thread.is_alive():
            ask_to_stop(path)
        thread.join(10)
    shutil.rmtree(folder, ignore_errors=True)


def test_a_ping_starts_the_idle_time_again(listening: tuple[Path, Callable[[float], threading.Thread]]) -> None:
    """A client pings before it sends its sweep: the driver must not leave between the two."""
    from workflow_compiler.tracking.daemon import probe

    path, serve = listening
    thread = serve(1.5)
    time.sleep(1.0)
    assert probe(path, warm_driver.code_version(os.environ)) == "current"
    time.sleep(1.0)  # 2 s after the start, 1 s after the ping
    assert thread.is_alive(), "the driver left 1 s after a ping, its idle time counted from its start"
    thread.join(10)
    assert not thread.is_alive()  # and it does leave, once idle


def test_another_users_connection_is_closed_unheard(listening: tuple[Path, Callable[[float], threading.Thread]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Beside the home's 0700 folder: the driver itself refuses a peer of another uid (SO_PEERCRED)."""
    from workflow_compiler.tracking.daemon import probe

    path, serve = listening
    serve(60)
    assert probe(path, warm_driver.code_version(os.environ)) == "current"
    monkeypatch.setattr("workflow_compiler.private_files.is_own_peer", lambda _sock: False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        sock.settimeout(10)
        try:
            sock.sendall(b'{"op": "ping"}\n')
            answer = sock.recv(100)
        except (BrokenPipeError, ConnectionResetError):  # closed before the ping was read
            answer = b""
        assert answer == b""  # closed without an answer


def test_a_driver_that_cannot_start_leaves_the_command_to_itself_printing_nothing(tmp_path: Path) -> None:
    probe = ("import sys\n"
             "from workflow_compiler.tracking import daemon\n"
             "from workflow_compiler.sweep import warm_driver\n"
             "def broken(*args, **kwargs):\n"
             "    raise OSError('no room for a socket')\n"
             "daemon.launch_daemon = broken\n"
             "print(warm_driver.run_in_driver('cli', ['sweep', '--help']))\n")
    env = {name: value for name, value in os.environ.items() if name not in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", warm_driver.ENV_WARM_DRIVER)}
    env.update(PYTHONPATH=":".join(sys.path), NBSCALE_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert (done.stdout, done.stderr) == ("None\n", "")


def test_the_child_takes_on_the_callers_nice_level_and_cpus() -> None:
    cpus = sorted(os.sched_getaffinity(0))[-1:]
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path)}
    probe = "import json; from workflow_compiler.sweep import warm_driver; print(json.dumps(warm_driver._request('cli', [], 'v')))"
    request = json.loads(subprocess.run(["nice", "-n", "7", "taskset", "-c", str(cpus[0]), sys.executable, "-c", probe],
                                        capture_output=True, text=True, timeout=60, env=env, check=True).stdout)
    assert (request["nice"], request["affinity"]) == (os.getpriority(os.PRIO_PROCESS, 0) + 7, cpus)
    child = ("import json, os, sys; from workflow_compiler.sweep import warm_driver_daemon\n"
             "warm_driver_daemon.take_scheduling(json.loads(sys.argv[1]))\n"
             "print(json.dumps([os.getpriority(os.PRIO_PROCESS, 0), sorted(os.sched_getaffinity(0))]))\n")
    done = subprocess.run([sys.executable, "-c", child, json.dumps(request)], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert json.loads(done.stdout) == [request["nice"], cpus]


@pytest.mark.parametrize(("ignored", "forwarded"), [(False, True), (True, False)], ids=["handled", "ignored"])
def test_a_signal_the_caller_ignores_is_not_passed_on(ignored: bool, forwarded: bool) -> None:
    """A script's ``nbscale sweep &`` ignores SIGINT: a Ctrl-C in its terminal must not cancel the sweep."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN if ignored else signal.default_int_handler)
    client, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, child:
        def interrupt_then_exit() -> None:
            time.sleep(0.3)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
            child.sendall(b'{"exit": 0}\n')

        threading.Thread(target=interrupt_then_exit, daemon=True).start()
        try:
            assert warm_driver._follow(client, 1, Path("driver.log")) == 0
        finally:
            signal.signal(signal.SIGINT, previous)
        child.settimeout(0.5)
        try:
            sent = child.recv(100)
        except TimeoutError:
            sent = b""
    assert (b'"signal": 2' in sent) is forwarded


@pytest.fixture()
def fresh_key() -> Iterator[None]:
    """``installed_key`` read anew (it is read once a process), and again after the test."""
    warm_driver.installed_key.cache_clear()
    yield
    warm_driver.installed_key.cache_clear()


@pytest.mark.parametrize("change", ["upgrade", "reinstall of the same version"])
def test_an_upgraded_or_reinstalled_ray_mlflow_or_pandas_is_another_version(fresh_key: None, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    """The driver holds them imported: after ``pip install -U mlflow`` the next sweep must not run the old one."""
    from importlib import metadata

    installed = tmp_path / "mlflow-3.0.dist-info"
    installed.mkdir()
    (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: mlflow\nVersion: 3.0\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # found first, as importlib.metadata finds it
    assert metadata.version("mlflow") == "3.0" and str(installed) in " ".join(warm_driver.distributions_key(("mlflow",)))
    before = warm_driver.code_version({})
    assert warm_driver.code_version({}) == before  # read once
    if change == "upgrade":  # pip removes the old .dist-info folder and writes the new one
        installed = installed.rename(tmp_path / "mlflow-99.0.dist-info")
    else:
        time.sleep(0.02)  # past the clock tick of the first write
        (installed / "METADATA").write_text("Metadata-Version: 2.1\nName: mlflow\nVersion: 3.0\n")
    warm_driver.installed_key.cache_clear()  # a new process
    assert warm_driver.code_version({}) != before


@pytest.mark.parametrize("change", ["edited, same size and mtime", "added", "removed"])
def test_a_changed_package_file_is_another_version(tmp_path: Path, change: str) -> None:
    """The key is the files' stats: an edit that keeps size and mtime (``cp -p``, a tool that sets mtime back) still changes the ctime."""
    shutil.copytree(Path(warm_driver.__file__).parent, tmp_path / "sweep")
    source = tmp_path / "sweep" / "warm_driver.py"
    before = warm_driver.files_key(tmp_path)
    assert warm_driver.files_key(tmp_path) == before
    time.sleep(0.02)  # past the clock tick of the copy
    if change == "added":
        (tmp_path / "sweep" / "extra.py").write_text("")
    elif change == "removed":
        source.unlink()
    else:
        stat = source.stat()
        text = source.read_text()
        source.write_text(text.replace("True", "Tru3", 1))
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    assert warm_driver.files_key(tmp_path) != before


def test_a_driver_dying_at_start_up_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """It cost every sweep 5 + 30 s before the command ran itself; now it runs itself once the started process has exited."""
    home = Path(tempfile.mkdtemp(prefix="nbs-drv-"))
    for name in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", warm_driver.ENV_WARM_DRIVER):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    monkeypatch.setattr(warm_driver, "DAEMON_MODULE", "workflow_compiler.sweep.no_such_daemon")  # python -m exits with 1
    try:
        started = time.monotonic()
        assert warm_driver.run_in_driver("cli", ["sweep", "--help"]) is None
        assert time.monotonic() - started < 4.0, "waited for a driver that had already exited"
        assert "no_such_daemon" in (home / "agent" / warm_driver.LOG_NAME).read_text()  # why, in the driver's log
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_child_that_ends_without_an_exit_code_names_the_drivers_log_beside_its_socket(capsys: pytest.CaptureFixture[str],
                                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_HOME", raising=False)  # the log is where the socket is, whatever the variable says
    client, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    child.close()
    with client:
        assert warm_driver._follow(client, 42, Path("/srv/home/agent") / warm_driver.LOG_NAME) == 1
    shown = capsys.readouterr().err
    assert "(pid 42)" in shown and f"/srv/home/agent/{warm_driver.LOG_NAME}" in shown


def test_a_child_that_fails_prints_its_traceback_redacted() -> None:
    """Its log handlers are gone by then: Python's last-resort handler printed the secret on the caller's stderr."""
    probe = ("import json, os, socket, sys\n"
             "from workflow_compiler.sweep import warm_driver_daemon\n"
             "conn, client = socket.socketpair()\n"
             "client.sendall(b'{\"op\": \"go\"}\\n')\n"
             "request = {'nice': os.getpriority(os.PRIO_PROCESS, 0), 'affinity': sorted(os.sched_getaffinity(0)),\n"
             "           'environ_changed': {}, 'environ_removed': [], 'umask': 63, 'path': sys.path, 'argv0': 'nbscale', 'argv': [],\n"
             "           'cwd': '/nonexistent/https://alice:hunter2-secret@mlflow.example/x'}\n"
             "read_end, write_end = os.pipe()\n"
             "print(warm_driver_daemon._child(conn, socket.socket(socket.AF_UNIX), request, [write_end] * 3, os.getpid()))\n")
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    assert done.stdout.strip() == "1"
    assert "FileNotFoundError" in done.stderr and "mlflow.example" in done.stderr and "hunter2" not in done.stderr, done.stderr
