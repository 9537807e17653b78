"""The warm Ray head (``sweep/ray_head.py``): shared by sweeps, private, stoppable, replaced when it dies.

Real ``nbscale sweep`` processes against a real Ray, in one home for the module, in order: two
sweeps at once share one head that stays up afterwards and refuses a driver without its token;
a sweep from another environment gets a head of its own while the old one stops; a CLI sweep
after a kernel-started head sees none of the kernel's variables; a killed Ray
is noticed and the next sweep starts another; ``nbscale daemons stop`` ends the head
and its Ray, and the next sweep starts it again; during a sweep run outside the warm driver, it
says that it waits for that sweep's lease.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from workflow_compiler.store import pid_alive
from workflow_compiler.sweep import ray_head, trial_host, warm_driver
from workflow_compiler.tracking import agent

pytestmark = pytest.mark.slow  # five sweeps and three Ray starts: about 3 minutes here

NOTEBOOKS = Path(__file__).parent / "sweep_notebooks"
NBSCALE = str(Path(sys.executable).parent / "nbscale")


@pytest.fixture(scope="module")
def warm_home() -> Iterator[Path]:
    """A home whose socket paths fit (under /tmp), with the sweep notebook beside it; its daemons stopped afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-warm-"))
    for name in ("objective.ipynb", "environ.ipynb"):
        shutil.copy(NOTEBOOKS / name, parent / name)
    home = parent / "home"
    try:
        yield home
    finally:
        for stop in (warm_driver.stop, ray_head.stop, trial_host.stop, agent.stop):
            stop(home)
        shutil.rmtree(parent, ignore_errors=True)


def _environ(home: Path) -> dict[str, str]:
    env = {**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "200", "RAY_AUTH_MODE": "disabled",  # the head turns tokens on itself
           "NBSCALE_TRACKING_AGENT_IDLE": "600"}  # up between the tests' sweeps (the fixture stops it)
    env.pop("RAY_ADDRESS", None)
    env.pop("NBSCALE_WARM_RAY", None)
    return env


def _start_sweep(home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([NBSCALE, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0)", "--search", "grid", "--metric", "score",
                             "--mode", "max", "--concurrency", "2", "--json"], cwd=home.parent, env=_environ(home),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finished(sweep: subprocess.Popen[str]) -> dict[str, object]:
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert (summary["status"], summary["counts"]["COMPLETED"]) == ("SUCCEEDED", 2), summary
    return dict(summary)


def _head_pid(home: Path) -> int:
    listed = subprocess.run([NBSCALE, "daemons", "--json"], env=_environ(home), capture_output=True, text=True, timeout=60, check=True)
    head = {d["name"]: d for d in json.loads(listed.stdout)}["ray head"]
    assert head["running"] is True, head
    return int(head["pid"])


def _connect(address: str, env: dict[str, str]) -> str:
    """What a new driver with ``env`` prints trying to join the Ray at ``address``: ends with ``connected`` if it did."""
    probe = (f"import ray; ray.init(address={address!r}, _node_ip_address='127.0.0.1', logging_level='ERROR', log_to_driver=False);"
             "print('connected')")
    try:
        done = subprocess.run([sys.executable, "-c", probe], env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:  # Ray's driver may retry a refused token for long: not connected
        return "timed out"
    return done.stderr[-2000:] + done.stdout.strip()


def test_two_sweeps_at_once_share_one_head_that_stays_private_and_needs_its_token(warm_home: Path) -> None:
    first, second = _start_sweep(warm_home), _start_sweep(warm_home)
    _finished(first), _finished(second)
    pid = _head_pid(warm_home)
    assert _finished(_start_sweep(warm_home))  # a later sweep in the idle window leases the same head
    assert _head_pid(warm_home) == pid

    ray_files = warm_home / "agent" / "ray"
    shared = [str(p) for p in [ray_files, *ray_files.rglob("*")]
              if not p.is_symlink() and not p.is_socket() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert shared == []  # Ray makes its folders 0777: the head closes them

    address = (ray_files / str(pid) / "ray_current_cluster").read_text().strip()  # written by `ray start`, in its head's folder
    token = warm_home / "agent" / f"{ray_head.TOKEN_NAME}-{pid}"
    assert address.startswith("127.0.0.1:")
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    without = {k: v for k, v in _environ(warm_home).items() if not k.startswith("RAY_AUTH")}
    refused = _connect(address, {**without, "RAY_AUTH_MODE": "disabled"})
    assert not refused.endswith("connected"), refused
    joined = _connect(address, {**without, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)})
    assert joined.endswith("connected"), joined


def test_a_sweep_from_another_environment_gets_a_head_of_its_own_while_the_old_one_stops(warm_home: Path) -> None:
    """The old head stops as the new one starts: it once unlinked the new head's token and session files,
    so the new Ray timed out after 30 s and the sweep fell back to a Ray of its own."""
    old = _head_pid(warm_home)
    sweep = subprocess.Popen([NBSCALE, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0)", "--search", "grid", "--metric", "score",
                              "--mode", "max", "--json"], cwd=warm_home.parent, env={**_environ(warm_home), "NBSCALE_TEST_FLAVOUR": "other"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0 and json.loads(out)["status"] == "SUCCEEDED", err[-3000:]
    assert "no warm Ray head" not in err, err[-3000:]
    assert not pid_alive(old)
    assert (warm_home / "agent" / f"{ray_head.TOKEN_NAME}-{_head_pid(warm_home)}").exists()


def _environ_sweep(home: Path, x: float, env: dict[str, str]) -> dict[str, str | None]:
    """Run ``environ.ipynb`` as a one-trial sweep with ``env``: what its trial saw of the variables it records."""
    sweep = subprocess.run([NBSCALE, "sweep", "environ.ipynb", "--param", f"x=grid({x})", "--search", "grid", "--metric", "score", "--mode", "max",
                            "--json"], cwd=home.parent, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0 and json.loads(sweep.stdout)["status"] == "SUCCEEDED", sweep.stderr[-3000:]
    return dict(json.loads((home.parent / f"environ-{x}.json").read_text()))


def test_a_cli_sweep_after_a_kernel_started_head_sees_its_own_variables_not_the_kernels(warm_home: Path) -> None:
    """A head started from a kernel once gave later CLI sweeps' trials the kernel's token and colours."""
    mine = {**_environ(warm_home), "NBSCALE_TEST_MINE": "both"}
    kernel = {**mine, "JPY_API_TOKEN": "kernel-secret", "FORCE_COLOR": "1", "CLICOLOR_FORCE": "1"}
    ray_head.stop(warm_home)  # the next head is the kernel's
    assert _environ_sweep(warm_home, 1.0, kernel)["NBSCALE_TEST_MINE"] == "both"
    head = _head_pid(warm_home)
    seen = _environ_sweep(warm_home, 2.0, mine)
    assert _head_pid(warm_home) == head  # the two callers share the head
    assert seen == {"JPY_API_TOKEN": None, "FORCE_COLOR": None, "CLICOLOR_FORCE": None, "NBSCALE_TEST_MINE": "both"}


def test_a_killed_ray_is_noticed_and_the_next_sweep_starts_another(warm_home: Path) -> None:
    pid = _head_pid(warm_home)
    gcs = [p for p in psutil.Process(pid).children(recursive=True) if p.name() == "gcs_server"]
    assert len(gcs) == 1
    gcs[0].send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 60
    while pid_alive(pid) and time.monotonic() < deadline:  # `ray start --block` ends the rest, then the head leaves
        time.sleep(0.5)
    assert not pid_alive(pid)
    _finished(_start_sweep(warm_home))
    assert _head_pid(warm_home) != pid


def test_daemons_stop_ends_the_head_and_its_ray_and_a_sweep_starts_it_again(warm_home: Path) -> None:
    pid = _head_pid(warm_home)
    ray_processes = psutil.Process(pid).children(recursive=True)
    assert any(p.name() == "raylet" for p in ray_processes)
    stopped = subprocess.run([NBSCALE, "daemons", "stop", "--json"], env=_environ(warm_home), capture_output=True, text=True,
                             timeout=120, check=True)
    assert {"name": "ray head", "pid": pid, "state": "stopped"} in json.loads(stopped.stdout)
    assert not pid_alive(pid)
    _, alive = psutil.wait_procs(ray_processes, timeout=30)
    assert alive == []
    _finished(_start_sweep(warm_home))
    assert _head_pid(warm_home) != pid


def test_daemons_stop_says_it_waits_for_a_sweep_that_holds_the_head_outside_the_driver(warm_home: Path) -> None:
    env = {**_environ(warm_home), warm_driver.ENV_WARM_DRIVER: "0"}  # the sweep's own process leases the head
    sweep = subprocess.Popen([NBSCALE, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0)", "-p", "sleep=0.5", "-p", "steps=6",
                              "--search", "grid", "--metric", "score", "--mode", "max", "--concurrency", "1", "--json"], cwd=warm_home.parent, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = ray_head.socket_path(warm_home)
    assert path is not None
    deadline = time.monotonic() + 240
    while ray_head.lease_count(path) == 0:
        assert time.monotonic() < deadline and sweep.poll() is None, "the sweep never leased the head"
        time.sleep(0.2)
    pid = _head_pid(warm_home)
    stopped = subprocess.run([NBSCALE, "daemons", "stop", "--json"], env=_environ(warm_home), capture_output=True, text=True,
                             timeout=300, check=True)
    assert f"waiting for the ray head (pid {pid}) to finish its 1 sweep connected to it" in stopped.stderr, stopped.stderr
    assert {"name": "ray head", "pid": pid, "state": "stopped"} in json.loads(stopped.stdout)
    assert not pid_alive(pid)
    out, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 0, err[-3000:]  # the head left once the sweep was done with it, not before
