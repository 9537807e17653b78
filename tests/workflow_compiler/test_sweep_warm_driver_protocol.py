"""The warm sweep driver's protocol, without Ray: what the daemon does with a request that goes wrong.

Each test talks to a ``Driver`` (``sweep/warm_driver_daemon.py``) over a real Unix socket pair in
this process; the children it would fork are not reached, so nothing heavy is imported or started.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.sweep import warm_driver_daemon
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
