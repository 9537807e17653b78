"""The sweep benchmark's own process care (``benchmarks/sweep_cli.py``): it reaps only the daemons it started."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sweeps = pytest.importorskip("benchmarks.sweep_cli", reason="run from the repository's root: benchmarks/ is not installed")


def test_only_the_benchmarks_own_daemons_are_reaped(tmp_path: Path) -> None:
    """It once reaped any ended child: a server it runs (``mlflow server``) lost its exit status to it."""
    agent = tmp_path / "home" / "agent"
    agent.mkdir(parents=True)
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    (agent / "ray-head.pid").write_text(str(daemon.pid))
    (agent / "sweep-driver.pid").write_text(str(os.getpid()))  # a daemon that is not this process's child: left alone
    own = sweeps.own_daemons(tmp_path / "home")
    assert own == {daemon.pid}
    time.sleep(1.0)  # both have ended
    sweeps.reap(own)
    assert not own
    assert server.wait(timeout=10) == 3, "the server's exit status was taken by the benchmark's reaping"
    daemon.wait()  # already reaped: Popen takes that as ended
