"""The daemons' shared parts (``tracking/daemon.py``): the forking loop's stop, releasing a daemon's files, waiting for its socket.

Real sockets and real child processes, nothing heavy imported: each test takes well under a second.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from workflow_compiler.tracking import daemon


class _Counting(daemon.ForkingServer):
    """A forking server whose listening socket is already closed (as after a stop), counting its stop calls."""

    wait_for_children = True

    def __init__(self, path: Path) -> None:
        super().__init__(path, idle=60)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.close()
        self.stops = 0

    def on_stopping(self) -> None:
        self.stops += 1


def test_a_stopped_forking_server_releases_once_while_its_children_finish(tmp_path: Path) -> None:
    """The warm driver released its files again in every round of the loop until its last sweep ended."""
    loop = _Counting(tmp_path / "d.sock")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])
    loop.children.add(child.pid)  # reaped by the loop (os.waitpid), as a forked child is
    loop.stopping = True
    runner = threading.Thread(target=loop.serve_forever)
    runner.start()
    runner.join(timeout=20)
    assert not runner.is_alive(), "the loop did not leave once its child ended"
    assert not loop.children
    assert loop.stops == 1
    child.wait()  # already reaped by the loop: Popen takes that as ended
