"""The magics find the Jupyter server that started their kernel from its info file, cheaply.

The first ``%nbscale`` call looks for the server once; reading ``jpserver-<pid>.json`` directly keeps
it from importing ``jupyter_server.serverapp`` (issue 19: the magics answer as fast as the CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from notebook_plugin.client import find_server


def write_info(runtime: Path, name: str, pid: int) -> dict[str, object]:
    """A server info file as jupyter_server writes it (the fields the client reads)."""
    info = {"pid": pid, "url": "http://127.0.0.1:8888/", "token": "t", "root_dir": str(runtime)}
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / name).write_text(json.dumps(info), encoding="utf-8")
    return info


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    return tmp_path / "runtime"


@pytest.mark.parametrize(("parent_env", "file_pid", "found"), [
    (False, "ppid", True),  # the parent process is the server
    (True, "jpy", True),  # JPY_PARENT_PID names it
    (False, "other", False),  # another user's or session's server is not ours
    (True, "other", False),
])
def test_the_info_file_named_by_the_parent_pid_is_the_server(runtime: Path, monkeypatch: pytest.MonkeyPatch,
                                                            parent_env: bool, file_pid: str, found: bool) -> None:
    pids = {"ppid": os.getppid(), "jpy": os.getpid(), "other": 2**22 + 7}
    if parent_env:
        monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    info = write_info(runtime, f"jpserver-{pids[file_pid]}.json", pids[file_pid])
    assert find_server() == (info if found else None)


def test_a_server_with_its_own_info_file_name_is_found_by_listing(runtime: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JPY_PARENT_PID", str(os.getpid()))
    info = write_info(runtime, "jpserver-custom.json", os.getpid())
    assert find_server() == info


def test_a_half_written_info_file_is_skipped(runtime: Path) -> None:
    runtime.mkdir(parents=True)
    (runtime / f"jpserver-{os.getppid()}.json").write_text('{"pid": ', encoding="utf-8")
    assert find_server() is None


def test_finding_the_server_does_not_import_the_server_app(runtime: Path) -> None:
    write_info(runtime, f"jpserver-{os.getpid()}.json", os.getpid())  # the child's parent: this process
    script = ("import sys\nfrom notebook_plugin.client import find_server\ninfo = find_server()\n"
              "print(info['pid'], 'jupyter_server.serverapp' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == [str(os.getpid()), "False"]
