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
from .worker import EARLY_STOPPED, FAILED, TrialOutcome, TrialStopped


def run_in_fresh_process(notebook: str, output: Path, params: dict[str, Any], *, cwd: Path, env: dict[str, str],
                         on_metric: MetricHook, stopped: Callable[[], bool]) -> TrialOutcome:
    """Run one trial in a new process; ``on_metric`` sees every metric as it is logged."""
    request = {"notebook": notebook, "output": str(output), "params": params, "cwd": str(cwd), "env": env}
    child = subprocess.Popen([sys.executable, "-m", "workflow_compiler.sweep.fresh"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env={**os.environ, **env})
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
        return TrialOutcome(status=FAILED, output_path=output, error=f"the trial's process died (exit code {code})", pid=child.pid)
    return TrialOutcome(status=outcome["status"], output_path=output, error=outcome["error"], seconds=outcome["seconds"], pid=child.pid)


def main() -> int:
    """Child side: run the request from stdin, stream metrics and the outcome to stdout."""
    from .trial import active_run
    from .worker import quiet_papermill, warm_runner

    request = json.loads(sys.stdin.read())
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)

    def send(name: str, value: float, step: int | None) -> None:
        channel.write(json.dumps({"metric": name, "value": value, "step": step}) + "\n")

    with quiet_papermill():
        outcome = warm_runner().run(Path(request["notebook"]), Path(request["output"]), request["params"],
                                    cwd=Path(request["cwd"]), env=request["env"],
                                    context=lambda: active_run(request["env"]["MLFLOW_RUN_ID"], send))
    channel.write(json.dumps({"outcome": {"status": outcome.status, "error": outcome.error, "seconds": outcome.seconds}}) + "\n")
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
