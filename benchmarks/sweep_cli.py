"""B2 end to end (``--only b2cli``): ``nbscale sweep`` as the process a user waits for, and the
benchmark's care of its home's daemons: which are this process's children, reaping them once
ended, the memory one holds while idle, and stopping them all on the way out.

Kept apart from ``sweeps.py`` (B1-B3 in one process); the process care is tested in
``tests/benchmarks/test_benchmark_sweeps.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import sweep_setup as setup


def bench_b2_cli(root: Path, n: int, repeats: int) -> dict[str, Any]:
    """B2 end to end: ``nbscale sweep`` of N near-empty trials as a process, the wall a user waits for;
    with the warm sweep driver and Ray head (a sweep of the idle window before it), with the head
    alone (``NBSCALE_WARM_DRIVER=0``, as before the driver) and with a Ray of the sweep's own
    (``NBSCALE_WARM_RAY=0``, as before issue 19), alternating; then one whose driver and head start
    cold. ``cli_cpu_s`` is the command's own process: with the driver, only its thin client."""
    from workflow_compiler.sweep import ray_head, warm_driver
    from workflow_compiler.sweep.driver import release_warm_ray

    # this process joined the head (B1-B3): its token settings are not the sweeps' (a Ray of their own runs without)
    env = {**{k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}, "RAY_AUTH_MODE": "disabled"}
    modes = {"warm_driver": env, "warm_head": {**env, warm_driver.ENV_WARM_DRIVER: "0"}, "own_ray": {**env, ray_head.ENV_WARM_RAY: "0"}}
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    home = Path(os.environ["NBSCALE_HOME"])
    ours = own_daemons(home)  # the Ray head, agent and trial host that B1-B3 started from this process

    def once(mode: str, tag: str) -> dict[str, Any]:
        record = root / f"b2cli-{tag}.jsonl"
        reap(ours)
        run = {"load_1m_before": round(os.getloadavg()[0], 2), **setup.cli_sweep(root, "trivial.ipynb", n, record, modes[mode])}
        run["overhead_per_trial_s"] = setup.overhead_per_trial(run, n)
        print(f"  b2 end to end, {mode:11s}: {run['wall_s']:.1f} s, first trial done after {run['first_trial_done_s']:.1f} s "
              f"(CLI CPU {run['cli_cpu_s']:.1f} s, load {run['load_1m_before']})", flush=True)
        return run

    once("warm_driver", "warm-up")  # the driver and head of this home are up for the timed runs, as for a second sweep
    for repeat in range(repeats):
        for mode in modes:
            runs[mode].append(once(mode, f"{mode}-{repeat}"))
    time.sleep(2)  # the driver's last child has ended
    idle_driver_mb = pss_mb(home / "agent" / warm_driver.PID_NAME)
    release_warm_ray()  # this process's own lease (B1-B3), then the driver and the head: the next sweep starts them
    warm_driver.stop(home)
    ray_head.stop(home)
    cold = once("warm_driver", "cold-head")
    summary = {mode: {key: setup.median(per, key) for key in ("wall_s", "first_trial_done_s", "cli_cpu_s", "overhead_per_trial_s")}
               for mode, per in runs.items()}
    return {"setup": {"trials": n, "concurrency": 2, "command": "nbscale sweep trivial.ipynb --param seed=grid(...)"},
            "runs": runs, "median": summary, "cold_head_run": cold, "idle_driver_pss_mb": idle_driver_mb}


def own_daemons(home: Path) -> set[int]:
    """The daemons of ``home`` (by their pid files) that are children of this process."""
    pids = set()
    for pid_file in (home / "agent").glob("*.pid"):
        try:
            pid = int(pid_file.read_text())
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == os.getpid():
            pids.add(pid)
    return pids


def reap(pids: set[int]) -> None:
    """Reap those of ``pids`` that have ended (the Ray head B1-B3 started, once stopped), and forget them: else
    their CPU, and their Ray's, lands in the next sweep's ``cli_cpu_s`` when ``subprocess`` reaps them.
    Only these: another child (a server this process runs, a command being timed) is its owner's to wait for."""
    for pid in list(pids):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            pids.discard(pid)


def pss_mb(pid_file: Path) -> float | None:
    """The proportional set size of the daemon named by ``pid_file`` (its share of pages it shares), in MB."""
    try:
        rollup = Path(f"/proc/{int(pid_file.read_text())}/smaps_rollup").read_text()
    except (OSError, ValueError):
        return None
    kilobytes = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return round(kilobytes / 1024, 1)


def stop_helpers(home: Path) -> None:
    """This process's lease on the warm Ray head, then every daemon the sweeps started in ``home``, by their pid files."""
    from workflow_compiler.sweep import ray_head, trial_host, warm_driver
    from workflow_compiler.sweep.driver import release_warm_ray
    from workflow_compiler.tracking import agent

    stops: list[Callable[[Path], object]] = [lambda _home: release_warm_ray(), warm_driver.stop, agent.stop, trial_host.stop, ray_head.stop]
    for stop in stops:
        try:
            stop(home)
        except Exception as exc:  # noqa: BLE001 - on the way out, perhaps of a crash: the others are still stopped
            print(f"  could not stop a helper of {home}: {exc!r}", flush=True)
