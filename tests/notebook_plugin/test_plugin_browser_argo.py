"""The Runs panel follows an Argo run in a real browser: JupyterLab with the extension on the Argo
executor, its cluster the Kubernetes API simulation (tests/kube_sim), driven by e2e_lab_argo.mjs.

The browser script and this test take turns: the script prints ``{"event": NAME}`` when it has seen
what it waited for, this test changes the simulation (Kueue admits the held pod, ...) and answers
``NAME`` on the script's stdin, and the script goes on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from nbplugin_helpers import JupyterProcess, assert_browser_tools, checkout_lab_env

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("e2e_lab_argo.mjs")
ARTIFACTS = ROOT / "test-artifacts" / "notebook_plugin" / "argo"
QUEUE = "team-gpu"


@pytest.fixture
def argo_lab(kube_sim, tmp_path: Path) -> Iterator[JupyterProcess]:
    """``jupyter lab`` whose nbscale extension submits to the simulation through its kubeconfig."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(ROOT / "examples" / "train.ipynb", root / "train.ipynb")
    state = tmp_path / "state"
    (state / "config").mkdir(parents=True)
    config = {"NbscaleExtension": {"run_store_path": str(tmp_path / "runs.db"),
                                   "executor_class": "workflow_compiler.executors.argo.ArgoExecutor",
                                   "executor_options": {"kubeconfig": str(kube_sim.kubeconfig)},
                                   "refresh_interval": 0.5}}
    (state / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    server = JupyterProcess("lab", root, state, extra_env=checkout_lab_env(state, ROOT / "notebook_plugin" / "labextension_build"))
    yield server.start(timeout=120)
    server.stop()


def _drive(config: dict[str, Any], on_event: dict[str, Callable[[], None]], timeout: float) -> tuple[dict[str, Any], str]:
    """Run the browser script, answer each event it prints after doing what ``on_event`` says; its result and stderr."""
    proc = subprocess.Popen(["node", str(SCRIPT), json.dumps(config)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    stderr: list[str] = []
    drain = threading.Thread(target=lambda: stderr.extend(proc.stderr or []), daemon=True)
    drain.start()
    result: dict[str, Any] = {}
    try:
        assert proc.stdin is not None and proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line) if line.startswith("{") else {}
            if "event" in message:
                on_event[message["event"]]()
                proc.stdin.write(message["event"] + "\n")
                proc.stdin.flush()
            elif "ok" in message:
                result = message
        proc.wait()
    finally:
        timer.cancel()
        drain.join(5)
    return result, "".join(stderr)


def test_the_runs_panel_follows_an_argo_run(argo_lab: JupyterProcess, kube_sim) -> None:
    assert_browser_tools(ROOT)
    kube_sim.behaviour.hold_queue = QUEUE  # Kueue holds the first run's step pod behind its scheduling gate
    kube_sim.behaviour.step_seconds = 4.0
    kube_sim.behaviour.log_lines = 4
    kube_sim.behaviour.stop_seconds = 6.0  # longer than the REST cancel's own wait: the panel must show the stop under way
    config = {"url": argo_lab.url, "token": argo_lab.token, "notebook": "train.ipynb", "queue": QUEUE,
              "shots": str(ARTIFACTS)}

    result, stderr = _drive(config, {"queued": kube_sim.controller.release_gates}, timeout=150)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "e2e-stderr.txt").write_text(stderr)
    assert result.get("ok"), f"{result}\n{stderr[-3000:]}\nserver log: {argo_lab.log_path}"

    # Kueue's hold, then the step running with its progress, then the end: as the controller moved it
    assert result["queuedBadge"] == f"queued in {QUEUE}"
    assert result["queuedProgress"] == "0/1 steps (1 queued)"
    assert result["runningBadge"] == "RUNNING" and result["runningProgress"] == "0/1 steps (1 running)"
    assert result["doneBadge"] == "SUCCEEDED" and result["doneProgress"] == "1/1 steps"
    assert result["doneBar"] == [1, 1]
    assert "Cancel" not in result["doneActions"]
    assert result["where"] == f"argo · {kube_sim.namespace}"
    # no step logged to MLflow here, so there is no output notebook: its button is disabled and looks it
    buttons = {b["label"]: b for b in result["doneButtons"]}
    assert buttons["Logs"]["disabled"] is False and float(buttons["Logs"]["opacity"]) == 1
    assert buttons["Output notebook"]["disabled"] is True and float(buttons["Output notebook"]["opacity"]) < 1
    assert buttons["Output notebook"]["title"] == "This run kept no output notebook"
    # the log view shows the step's log while it runs, then all of it and the end
    assert result["liveLog"].startswith("----- step notebook -----\nnotebook: line 1\n"), result["liveLog"]
    assert result["finalLog"].splitlines()[1:] == [f"notebook: line {n}" for n in range(1, 5)], result["finalLog"]
    assert result["logState"] == "the run has ended"
    # Cancel: Stop on the Workflow, and KILLED once the simulation says it ended
    assert result["atClick"] == ["Stopping…", True]  # at once, not when the cancel's answer comes 5 s later
    assert result["stoppingButton"] == "Stopping…" and result["stoppingDisabled"] and result["stoppingBadge"] == "stopping"
    assert float(result["stoppingOpacity"]) < 1
    assert result["cancelAnswer"] == {"status": "RUNNING", "label": "stopping", "asked": True}  # Stop outlasts the REST wait
    assert result["stoppingAfterAnswer"] == ["stopping", "Stopping…"]
    assert result["killedBadge"] == "KILLED" and result["killedError"].startswith("cancelled (Stopped with strategy 'Stop')")
    assert "Stopping" not in result["killedActions"] and "Cancel" not in result["killedActions"]

    first, second = result["runId"], result["cancelledRun"]
    workflows = {w["metadata"]["labels"]["nbscale.io/run-id"]: w for w in kube_sim.workflows()}
    assert workflows[first]["status"]["phase"] == "Succeeded"
    assert workflows[second]["spec"]["shutdown"] == "Stop" and workflows[second]["status"]["phase"] == "Failed"
    status, record = argo_lab.api("GET", f"runs/{second}")
    assert status == 200 and record["status"] == "KILLED" and record["executor"] == "argo"
    for name in ("argo-queued.png", "argo-running.png", "argo-logs.png", "argo-succeeded.png", "argo-stopping.png",
                 "argo-killed.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000, name
