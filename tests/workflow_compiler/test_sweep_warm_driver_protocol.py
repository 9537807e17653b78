"""The warm sweep driver's protocol, without Ray: what the daemon does with a request that goes wrong.

Each test talks to a ``Driver`` (``sweep/warm_driver_daemon.py``) over a real Unix socket pair in
this process; the children it would fork are not reached, so nothing heavy is imported or started.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
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
            driver._serve(conn)
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
    assert warm_driver_daemon.other_interpreter(request) is None
    monkeypatch.setattr(sys, "warnoptions", [])
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    with warnings.catch_warnings():
        warm_driver_daemon.take_interpreter(request)
        assert sys.dont_write_bytecode
        with pytest.raises(UserWarning):
            warnings.warn("from the sweep", UserWarning, stacklevel=1)
    sys.set_int_max_str_digits(0)


@pytest.mark.parametrize("options", [("-O",), ("-X", "dev"), ("-s",)])
def test_a_caller_whose_python_options_a_child_cannot_take_on_runs_the_command_itself(options: tuple[str, ...]) -> None:
    assert "other options" in str(warm_driver_daemon.other_interpreter(_callers_request(*options)))


def test_a_password_in_the_tracking_uri_does_not_cross_the_socket() -> None:
    """``nbscale`` moves it to MLFLOW_TRACKING_PASSWORD: that change must come after the request is made, not travel in it."""
    probe = ("import json, sys\n"
             "from workflow_compiler import cli\n"
             "from workflow_compiler.sweep import warm_driver\n"
             "def sent(entry, argv):\n"
             "    print(json.dumps(warm_driver._request(entry, argv, 'v')))\n"
             "    return 0\n"
             "warm_driver.run_in_driver = sent\n"
             "sys.exit(cli.main(['sweep', 'objective.ipynb', '--metric', 'score']))\n")
    env = {**os.environ, "PYTHONPATH": ":".join(sys.path), "MLFLOW_TRACKING_URI": "https://alice:hunter2-secret@mlflow.example"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, check=True)
    request = json.loads(done.stdout)
    assert request["argv"][0] == "sweep" and "hunter2" not in done.stdout, request["environ_changed"]
