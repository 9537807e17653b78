"""`nbscale daemons [stop]`: the warm tracking agent of a home, listed with its pid file, then stopped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.store import pid_alive
from workflow_compiler.tracking import agent

NBSCALE = str(Path(sys.executable).parent / "nbscale")


@pytest.fixture
def short_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An NBSCALE_HOME whose socket path fits a Unix socket; anything left running is stopped afterwards."""
    home = Path(tempfile.mkdtemp(prefix="nbs-daemons-"))
    monkeypatch.setenv("NBSCALE_HOME", str(home))
    yield home
    agent.stop(home)
    shutil.rmtree(home, ignore_errors=True)


def nbscale(*args: str, home: Path) -> list[dict[str, object]]:
    result = subprocess.run([NBSCALE, "daemons", *args, "--json"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NBSCALE_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_daemons_lists_and_stops_the_tracking_agent(short_home: Path) -> None:
    socket = agent.start_for(f"sqlite:///{short_home / 'mlflow.db'}")
    assert socket is not None
    listed = {d["name"]: d for d in nbscale(home=short_home)}
    assert listed["tracking agent"]["running"] is True
    assert listed["tracking agent"]["pid_file"] == str(short_home / "agent" / "agent.pid")
    assert listed["trial host"]["running"] is False
    pid = int(str(listed["tracking agent"]["pid"]))

    assert nbscale("stop", home=short_home) == [{"name": "tracking agent", "pid": pid, "state": "stopped"}]
    assert not pid_alive(pid)
    assert nbscale("stop", home=short_home) == []
    assert {d["name"]: d["running"] for d in nbscale(home=short_home)} == {"sweep driver": False, "tracking agent": False,
                                                                          "trial host": False, "ray head": False}
