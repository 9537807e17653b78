"""``fresh_kernel``: one new Python process per trial, for notebooks that need full isolation.

The child runs the same engine as a warm worker, once, and streams each ``mlflow.log_metric`` to
the parent as a JSON line on its real stdout (the notebook's own prints are captured into the
output notebook). The parent forwards them to MLflow and Tune and kills the child when Tune
stops the trial. Run as ``python -m workflow_compiler.sweep.fresh`` with a JSON request on stdin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .tracking import MetricHook
from .trial_metrics import active_run
from .worker import EARLY_STOPPED, FAILED, TrialOutcome, TrialStopped

#: Beside the trial's output notebook: the fresh process's own stderr (what the notebook wrote to fd 2, a crash).
STDERR_FILE = "stderr.txt"


def run_in_fresh_process(notebook: str, output: Path, params: dict[str, Any], *, cwd: Path, env: dict[str, str],
                         kernel_name: str, on_metric: MetricHook, stopped: Callable[[], bool]) -> TrialOutcome:
    """Run one trial in a new process; ``on_metric`` sees every metric as it is logged."""
    request = {"notebook": notebook, "output": str(output), "params": params, "cwd": str(cwd), "env": env, "kernel_name": kernel_name}
    output.parent.mkdir(parents=True, exist_ok=True)
    # the child imports this very package: a Ray worker may have found it on a path its environment does not name
    package_root = str(Path(__file__).resolve().parents[2])
    child_env = {**os.environ, **env, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    with open(output.parent / STDERR_FILE, "wb") as stderr:
        child = subprocess.Popen([sys.executable, "-m", "workflow_compiler.sweep.fresh"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=stderr, text=True, env=child_env)
    if child.stdin is None or child.stdout is None:
        raise RuntimeError("subprocess pipes were not created")
    child.stdin.write(json.dumps(request))
    child.stdin.close()
    outcome: dict[str, Any] | None = None
    try:
        for line in child.stdout:
            message = json.loads(line)
            if "metric" in message:
                on_metric(message["metric"], message["value"], message["step"])
            elif "outcome" in message:
                outcome = message["outcome"]
    except TrialStopped:
        child.kill()
        child.wait()
        return TrialOutcome(status=EARLY_STOPPED, output_path=output, pid=child.pid)
    code = child.wait()
    if outcome is None:
        last = _last_line(output.parent / STDERR_FILE)
        return TrialOutcome(status=FAILED, output_path=output, pid=child.pid,
                            error=f"the trial's process died (exit code {code})" + (f": {last}" if last else ""))
    return TrialOutcome(status=outcome["status"], output_path=output, error=outcome["error"], seconds=outcome["seconds"], pid=child.pid)


def _last_line(path: Path) -> str:
    """The last non-blank line of a file (a dead process's last words), at most 500 characters."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:500] if lines else ""


def main() -> int:
    """Child side: run the request from stdin, stream metrics and the outcome to stdout."""
    from .worker import quiet_papermill, warm_runner

    request = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # fd 1 is the notebook's (a subprocess may write there), not the channel

    def send(name: str, value: float, step: int | None) -> None:
        channel.write(json.dumps({"metric": name, "value": value, "step": step}) + "\n")

    try:
        with quiet_papermill():
            outcome = warm_runner().run(Path(request["notebook"]), Path(request["output"]), request["params"],
                                        cwd=Path(request["cwd"]), env=request["env"], kernel_name=request["kernel_name"],
                                        context=lambda: active_run(request["env"]["MLFLOW_RUN_ID"], send))
    except Exception as exc:  # papermill refused the notebook: the parent reports why, not only an exit code
        outcome = TrialOutcome(status=FAILED, output_path=Path(request["output"]), error=f"{type(exc).__name__}: {exc}")
    channel.write(json.dumps({"outcome": {"status": outcome.status, "error": outcome.error, "seconds": outcome.seconds}}) + "\n")
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
