"""The warm sweep driver (``sweep/warm_driver.py``): a sweep command runs in a child of it, exactly as its caller.

Real ``nbscale sweep`` and ``python -m workflow_compiler.sweep`` processes against a real Ray, in
one home for the module, in order: the child takes on the caller's environment, working folder,
umask and stdout; exit codes and messages are those of the command run on its own
(``NBSCALE_WARM_DRIVER=0``); Ctrl-C and SIGTERM reach the sweep, which ends KILLED with exit 130,
as it does when its command is killed; Ctrl-Z stops the sweep with its command and ``fg`` continues
both; ``nbscale daemons stop`` during a sweep says what it waits for and reports each daemon only
once it has exited; two
sweeps at once share the driver; a driver of another version, a killed one and one stopped by
``nbscale daemons stop`` are replaced by the next sweep; another user cannot reach it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from workflow_compiler.store import pid_alive
from workflow_compiler.sweep import ray_head, trial_host, warm_driver
from workflow_compiler.tracking import agent

pytestmark = pytest.mark.slow  # a Ray head and a dozen sweeps: about 3 minutes here

NOTEBOOKS = Path(__file__).parent / "sweep_notebooks"
NBSCALE = str(Path(sys.executable).parent / "nbscale")
SWEEP = ["sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0)", "--search", "grid", "--metric", "score", "--mode", "max",
         "--concurrency", "2", "--json"]


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A folder with the sweep notebook and a home whose socket paths fit (under /tmp); its daemons stopped afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-drv-"))
    shutil.copy(NOTEBOOKS / "objective.ipynb", parent / "objective.ipynb")
    try:
        yield parent
    finally:
        for stop in (warm_driver.stop, ray_head.stop, trial_host.stop, agent.stop):
            stop(parent / "home")
        shutil.rmtree(parent, ignore_errors=True)


def _environ(work: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "NBSCALE_HOME": str(work / "home"), "COLUMNS": "200", "RAY_AUTH_MODE": "disabled",
           "NBSCALE_TRACKING_AGENT_IDLE": "600", **extra}  # the daemons stay up between the tests (the fixture stops them)
    for name in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", warm_driver.ENV_WARM_DRIVER):
        env.pop(name, None)
    return env


def _nbscale(work: Path, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBSCALE, *args], cwd=work, env=env or _environ(work), capture_output=True, text=True, timeout=600, **kwargs)


def _succeeded(done: subprocess.CompletedProcess[str], trials: int = 2) -> dict[str, Any]:
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["status"], summary["counts"]["COMPLETED"]) == ("SUCCEEDED", trials), summary
    return dict(summary)


def _driver_pid(work: Path) -> int:
    listed = json.loads(_nbscale(work, "daemons", "--json", check=True).stdout)
    driver = {d["name"]: d for d in listed}["sweep driver"]
    assert driver["running"] is True, driver
    return int(driver["pid"])


def test_a_sweep_runs_in_a_child_of_the_driver_with_the_callers_environment_folder_umask_and_stdout(work: Path) -> None:
    spec = {"notebook": "objective.ipynb", "sweep": {"space": {"x": "grid(1.0, 3.0)"}, "search": "grid", "metric": "score", "mode": "max"}}
    env = _environ(work, NBS_TEST_SPEC=json.dumps(spec), MLFLOW_TRACKING_URI=f"sqlite:///{work / 'caller.db'}")
    starter = _environ(work, AWS_SECRET_ACCESS_KEY="AKSECRETOFTHESTARTER")
    _succeeded(_nbscale(work, *SWEEP, env=starter))  # the driver (and Ray's head) up: the sweep below runs in a child of it
    pid = _driver_pid(work)
    assert b"AKSECRETOFTHESTARTER" not in Path(f"/proc/{pid}/environ").read_bytes()  # the driver keeps no caller's secret
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", "workflow_compiler.sweep", "--spec-env", "NBS_TEST_SPEC", "--no-progress", "--json"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600, umask=0o027)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    summary = _succeeded(done)  # read from the caller's own stdout, which the child wrote to
    assert summary["tracking_uri"] == f"sqlite:///{work / 'caller.db'}" and (work / "caller.db").is_file()  # the caller's variables
    state = work / "home" / "sweeps" / summary["sweep_id"] / "sweep.json"
    assert json.loads(state.read_text())["notebook_path"] == str(work / "objective.ipynb")  # found from the caller's folder
    assert stat.S_IMODE(state.stat().st_mode) == 0o640  # made under the caller's umask, not the driver's 077
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert cpu < 1.5, f"the command used {cpu:.1f} s of CPU: it imported Ray and MLflow itself instead of asking the driver"
    assert _driver_pid(work) == pid


@pytest.mark.parametrize(("args", "code", "shown"), [
    (["sweep", "objective.ipynb", "--param", "x=grid(1.0,", "--metric", "score", "--mode", "max"], 2, "error:"),
    (["sweep", "missing.ipynb", "--param", "x=grid(1.0, 2.0)", "--metric", "score", "--mode", "max"], 2, "missing.ipynb"),
    (["sweep", "--help"], 0, "usage: nbscale sweep"),
])
def test_messages_and_exit_codes_are_those_of_the_command_on_its_own(work: Path, args: list[str], code: int, shown: str) -> None:
    warm = _nbscale(work, *args)
    alone = _nbscale(work, *args, env=_environ(work, **{warm_driver.ENV_WARM_DRIVER: "0"}))
    assert (warm.returncode, warm.stdout, warm.stderr) == (alone.returncode, alone.stdout, alone.stderr)
    assert warm.returncode == code and shown in warm.stdout + warm.stderr


def _sampled(work: Path, *extra: str) -> list[float]:
    done = _nbscale(work, "sweep", "objective.ipynb", "--param", "x=uniform(0, 100)", "--metric", "score", "--mode", "max", "--samples", "2",
                    "--json", *extra)
    return sorted(trial["params"]["x"] for trial in _succeeded(done)["trials"])


def test_each_sweep_samples_afresh_unless_seeded(work: Path) -> None:
    """Tune samples from NumPy's global generator, which every child of the driver would inherit in one state."""
    assert _sampled(work) != _sampled(work)
    assert _sampled(work, "--seed", "7") == _sampled(work, "--seed", "7")


def test_a_sweep_whose_trials_all_fail_exits_1(work: Path) -> None:
    done = _nbscale(work, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 3.0)", "-p", "fail=raise", "--search", "grid",
                    "--metric", "score", "--mode", "max", "--json")
    assert done.returncode == 1, done.stderr[-3000:]
    assert json.loads(done.stdout)["status"] == "FAILED"


def _slow_sweep(work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([NBSCALE, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0, 3.0, 4.0)", "-p", "sleep=1.0",
                             "-p", "steps=30", "--search", "grid", "--metric", "score", "--mode", "max", "--concurrency", "2", "--json"],
                            cwd=work, env=_environ(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_trial_runs(work: Path, known: set[Path], client: subprocess.Popen[str]) -> dict[str, Any]:
    """The new sweep's saved state, once its trials have MLflow runs."""
    from workflow_compiler.sweep import tracking

    deadline = time.monotonic() + 180
    while True:
        states = [folder / "sweep.json" for folder in set((work / "home" / "sweeps").glob("*")) - known if (folder / "sweep.json").is_file()]
        if states:
            state: dict[str, Any] = json.loads(states[0].read_text())
            mc = tracking.client(state["tracking_uri"])
            if tracking.child_runs(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"]):
                return state
        assert time.monotonic() < deadline and client.poll() is None, "no trial started"
        time.sleep(0.5)


def _killed_with_its_runs(state: dict[str, Any]) -> bool:
    from workflow_compiler.sweep import tracking

    mc = tracking.client(state["tracking_uri"])
    runs = tracking.child_runs(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"])
    return mc.get_run(state["parent_run_id"]).info.status == "KILLED" and bool(runs) and all(r.info.status == "KILLED" for r in runs)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_reaches_the_sweep_which_ends_killed_with_exit_130_and_keeps_its_runs(work: Path, signum: int) -> None:
    """SIGTERM once ended the sweep through the exit handler that ``ray.init`` installs, its runs left RUNNING."""
    known = set((work / "home" / "sweeps").glob("*"))
    client = _slow_sweep(work)
    state = _wait_for_trial_runs(work, known, client)
    client.send_signal(signum)
    out, err = client.communicate(timeout=120)
    assert client.returncode == 130, err[-3000:]
    summary = json.loads(out)
    assert summary["status"] == "KILLED" and summary["counts"]["COMPLETED"] == 0, summary
    assert f"nbscale sweep --resume {summary['sweep_id']}" in " ".join(err.split()), err[-3000:]  # how to finish it
    assert _killed_with_its_runs(state)


def test_a_sweep_whose_command_is_killed_is_cancelled_not_left_running(work: Path) -> None:
    known = set((work / "home" / "sweeps").glob("*"))
    client = _slow_sweep(work)
    state = _wait_for_trial_runs(work, known, client)
    client.kill()  # no chance to pass anything on: its child sees the connection close
    client.communicate(timeout=60)
    deadline = time.monotonic() + 120
    while not _killed_with_its_runs(state):
        assert time.monotonic() < deadline, "the sweep went on without its command"
        time.sleep(1)


def test_two_sweeps_at_once_are_two_children_of_one_driver(work: Path) -> None:
    pid = _driver_pid(work)
    first, second = (subprocess.Popen([NBSCALE, *SWEEP], cwd=work, env=_environ(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2))
    for sweep in (first, second):
        out, err = sweep.communicate(timeout=600)
        _succeeded(subprocess.CompletedProcess(sweep.args, sweep.returncode, out, err))
    assert _driver_pid(work) == pid


def test_a_caller_of_another_version_gets_a_driver_of_its_own_and_the_old_one_leaves(work: Path) -> None:
    old = _driver_pid(work)
    _succeeded(_nbscale(work, *SWEEP, env=_environ(work, PYTHONHASHSEED="123")))  # read at start-up: another version
    new = _driver_pid(work)
    assert new != old
    deadline = time.monotonic() + 30
    while pid_alive(old) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(old)


def test_a_killed_driver_is_replaced_by_the_next_sweep(work: Path) -> None:
    pid = _driver_pid(work)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    _succeeded(_nbscale(work, *SWEEP))
    assert _driver_pid(work) != pid


def _short_sweep(work: Path, **popen: Any) -> subprocess.Popen[str]:
    """Three trials of ~2 s, one at a time."""
    return subprocess.Popen([NBSCALE, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0, 3.0)", "-p", "sleep=0.5", "-p", "steps=4",
                             "--search", "grid", "--metric", "score", "--mode", "max", "--concurrency", "1", "--json"],
                            cwd=work, env=_environ(work), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _trial_runs(state: dict[str, Any]) -> int:
    from workflow_compiler.sweep import tracking

    mc = tracking.client(state["tracking_uri"])
    return len(tracking.child_runs(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"]))


def _wait_for_status(process: psutil.Process, status: str) -> None:
    deadline = time.monotonic() + 30
    try:
        while process.status() != status:
            assert time.monotonic() < deadline, f"{process.pid} is {process.status()}, not {status}"
            time.sleep(0.05)
    except psutil.NoSuchProcess:
        pytest.fail(f"{process.pid} ended instead of being {status}")


def test_ctrl_z_stops_the_sweep_with_its_command_and_fg_continues_both(work: Path) -> None:
    _succeeded(_nbscale(work, *SWEEP))  # the driver up, so that its children can be told apart
    known = set((work / "home" / "sweeps").glob("*"))
    before = {p.pid for p in psutil.Process(_driver_pid(work)).children()}
    client = _short_sweep(work, process_group=0)  # a job of its own, as a shell starts it: its Ctrl-Z is not discarded
    try:
        state = _wait_for_trial_runs(work, known, client)
        child = psutil.Process(({p.pid for p in psutil.Process(_driver_pid(work)).children()} - before).pop())
        client.send_signal(signal.SIGTSTP)
        _wait_for_status(psutil.Process(client.pid), psutil.STATUS_STOPPED)
        _wait_for_status(child, psutil.STATUS_STOPPED)
        started = _trial_runs(state)
        time.sleep(8)  # long enough for the rest of the trials, were the sweep going on
        assert _trial_runs(state) == started < 3
        assert (psutil.Process(client.pid).status(), child.status()) == (psutil.STATUS_STOPPED, psutil.STATUS_STOPPED)
    finally:
        client.send_signal(signal.SIGCONT)  # a failed check must not leave a stopped sweep behind
    out, err = client.communicate(timeout=300)
    _succeeded(subprocess.CompletedProcess(client.args, client.returncode, out, err), trials=3)


def test_daemons_stop_says_at_once_it_waits_for_a_running_sweep_and_ctrl_c_leaves_it_running(work: Path) -> None:
    known = set((work / "home" / "sweeps").glob("*"))
    client = _short_sweep(work)
    _wait_for_trial_runs(work, known, client)
    pid = _driver_pid(work)
    stopper = subprocess.Popen([NBSCALE, "daemons", "stop", "--json"], cwd=work, env=_environ(work), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert stopper.stderr is not None
    said = stopper.stderr.readline()
    assert f"waiting for the sweep driver (pid {pid}) to finish its 1 running sweep (Ctrl-C to leave it running)" in said, said
    assert stopper.poll() is None and pid_alive(pid)
    stopper.send_signal(signal.SIGINT)
    out, err = stopper.communicate(timeout=60)
    assert stopper.returncode == 130, err
    assert json.loads(out) == [{"name": "sweep driver", "pid": pid, "state": "leaving"}]
    out, err = client.communicate(timeout=300)
    _succeeded(subprocess.CompletedProcess(client.args, client.returncode, out, err), trials=3)  # the sweep went on to its end
    deadline = time.monotonic() + 60
    while pid_alive(pid):  # and the driver, asked to stop, left after it
        assert time.monotonic() < deadline, "the driver did not leave after its sweep"
        time.sleep(0.1)


def test_daemons_stop_during_a_sweep_reports_each_stopped_only_once_it_has_exited(work: Path) -> None:
    known = set((work / "home" / "sweeps").glob("*"))
    client = _short_sweep(work)
    _wait_for_trial_runs(work, known, client)
    stopped = _nbscale(work, "daemons", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "to finish its 1 running sweep" in stopped.stderr
    pids = [int(line.rsplit("pid ", 1)[1].rstrip(")")) for line in stopped.stdout.splitlines() if line.startswith("stopped the ")]
    assert len(pids) == len(stopped.stdout.splitlines()) >= 3, stopped.stdout  # the driver, the Ray head, the host (and the agent if up)
    assert not any(pid_alive(p) for p in pids)
    out, err = client.communicate(timeout=60)
    _succeeded(subprocess.CompletedProcess(client.args, client.returncode, out, err), trials=3)
    _succeeded(_nbscale(work, *SWEEP))  # the next sweep starts them again (the tests after this one use the driver)


def test_daemons_stop_ends_the_driver_and_the_next_sweep_starts_it_again(work: Path) -> None:
    pid = _driver_pid(work)
    stopped = json.loads(_nbscale(work, "daemons", "stop", "--json", check=True).stdout)
    assert {"name": "sweep driver", "pid": pid, "state": "stopped"} in stopped
    assert not pid_alive(pid)
    _succeeded(_nbscale(work, *SWEEP))
    assert _driver_pid(work) != pid


def test_another_user_cannot_reach_the_driver(work: Path, other_user: Any) -> None:
    path = warm_driver.socket_path(work / "home")
    assert path is not None and path.exists()

    def connect(target: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(target)
            except OSError as exc:
                return type(exc).__name__
        return "connected"

    assert other_user.run(connect, str(path)) == "PermissionError"  # the home's agent folder is 0700
