"""The real-browser test: JupyterLab with the extension, driven in Debian's chromium by playwright-core."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from nbplugin_helpers import JupyterProcess, assert_browser_tools, checkout_lab_env, write_notebook

from workflow_compiler.private_files import private_home
from workflow_compiler.store import RunRecord, RunStore

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("e2e_lab.mjs")
ARTIFACTS = ROOT / "test-artifacts" / "notebook_plugin"
DOC_IMAGES = ROOT / "docs" / "img"
SWEEP_ID = "nbs-5eed5eed00"


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProcess]:
    """One ``jupyter lab`` on 127.0.0.1 for the session, serving a copy of the examples."""
    root = tmp_path_factory.mktemp("lab-root")
    shutil.copy(ROOT / "examples" / "train.ipynb", root / "train.ipynb")
    write_notebook(root / "sleepy.ipynb", "seconds = 1  # how long to sleep", "import time\ntime.sleep(seconds)")
    state = tmp_path_factory.mktemp("lab-state")
    # a home of its own, holding one finished sweep as `nbscale sweep` records it: its row in the panel is checked
    home = private_home(state / "home")
    RunStore(home / "runs.db").create(RunRecord(id=SWEEP_ID, kind="sweep", notebook="train.ipynb", status="SUCCEEDED",
                                                links={"mlflow": "http://127.0.0.1:5000/#/experiments/1/runs/0"}))
    extra_env = checkout_lab_env(state, ROOT / "notebook_plugin" / "labextension_build")
    server = JupyterProcess("lab", root, state, extra_env={**extra_env, "NBSCALE_HOME": str(home)}).start(timeout=120)
    yield server
    server.stop()


def test_run_at_scale_from_the_toolbar(lab: JupyterProcess) -> None:
    assert_browser_tools(ROOT)
    listing = subprocess.run([str(Path(os.sys.executable).with_name("jupyter")), "labextension", "list"],
                             capture_output=True, text=True, env=lab.env, check=True)
    assert "nbscale" in listing.stdout + listing.stderr, "the nbscale lab extension is not installed"

    shots = [str(ARTIFACTS)]
    if os.environ.get("NBSCALE_UPDATE_SCREENSHOTS") or not (DOC_IMAGES / "runs-panel.png").exists():
        shots.insert(0, str(DOC_IMAGES))
    config = {"url": lab.url, "token": lab.token, "notebook": "train.ipynb", "parameter": "n_estimators",
              "value": 37, "shots": shots, "timeoutMs": 240_000, "notebook7": True,
              "slowNotebook": "sleepy.ipynb", "sweepId": SWEEP_ID, "docsDir": str(DOC_IMAGES), "docsNames": ["run-at-scale-dialog.png", "runs-panel.png"]}
    proc = subprocess.run(["node", str(SCRIPT), json.dumps(config)], capture_output=True, text=True, timeout=420, cwd=ROOT)
    (ARTIFACTS).mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "e2e-stderr.txt").write_text(proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the browser script (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    result = json.loads(lines[-1])
    assert result["ok"], f"{result}\n{proc.stderr[-3000:]}\nserver log: {lab.log_path}"

    assert result["buttonText"] == "Run at scale"
    assert result["defaultValue"] == "100"
    for where in ("dialogQuota", "panelQuota"):  # no hub here: the quota line says so, in both places
        assert result[where].startswith("GPU quotas are off: "), (where, result[where])
    assert result["sweepFields"] >= 8  # a space per parameter plus metric, mode, samples, ...
    assert "Kubernetes quantity" in result["fieldError"] and "[0-9]" not in result["fieldError"]  # plain words, no regex
    assert result["memoryErrorAfterFix"] == 0
    assert "1.5 is not a whole number" in result["intError"] and result["intErrorAfterFix"] == 0
    assert result["requiredError"] == "required" and result["requiredErrorAfterFill"] == 0
    assert result["modeInitial"] == "" and "--mode max or --mode min" in result["modeError"]  # never guessed
    assert result["fontSizes"][0] == result["fontSizes"][1], result["fontSizes"]
    labels = [a["label"] for a in result["actions"]]
    assert {"Logs", "Output notebook", "HTML", "MLflow"} <= set(labels), labels
    assert len({a["style"] for a in result["actions"]}) == 1, result["actions"]  # one button style
    assert result["sweepActions"] == ["Logs", "MLflow"]  # a sweep has no one output notebook: its trials have theirs
    assert "n_estimators = 37" in result["htmlText"] and "<!DOCTYPE" not in result["htmlText"]  # rendered, not source
    assert result["status"] == "SUCCEEDED"
    assert "succeeded" in result["notification"] and result["runId"] in result["notification"]
    assert "n_estimators = 37" in result["outputCell"]
    assert result["logText"].strip(), "the logs view showed nothing"
    assert result["notebook7"] is True
    assert result["darkBackground"] != result["lightBackground"], "the Runs panel ignores the theme"
    for name in ("run-at-scale-dialog.png", "sweep-dialog.png", "runs-panel.png", "output-notebook.png", "runs-panel-dark.png",
                 "dialog-field-error.png", "output-html.png"):
        assert (ARTIFACTS / name).stat().st_size > 10_000

    status, cancelled = lab.api("GET", f"runs/{result['cancelledRun']}")
    assert status == 200 and cancelled["status"] == "KILLED" and cancelled["parameters"] == {"seconds": 300}
    status, record = lab.api("GET", f"runs/{result['runId']}")
    assert status == 200 and record["parameters"] == {"n_estimators": 37}
