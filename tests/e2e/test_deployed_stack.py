"""The deployed stack (helm/nbscale beside z2jh, Argo, KubeRay, Kueue), driven as a user would.

Run by tests/e2e/kind/run.sh, which installs everything on a kind cluster and sets the variables
below; skipped otherwise. Runs start from a single-user server's REST API and go through the Argo
executor inside the pod (NBSCALE_CLUSTER_CONFIG from the chart's ConfigMap).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.hub_session import HubUser

ROOT = Path(__file__).resolve().parents[2]
ENV = {name: os.environ.get(f"NBSCALE_E2E_{name}", "") for name in ("HUB_URL", "HUB_TOKEN", "MLFLOW_URL", "NAMESPACE", "KUEUE_QUEUE")}

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not (ENV["HUB_URL"] and ENV["HUB_TOKEN"]),
                       reason="set NBSCALE_E2E_HUB_URL and NBSCALE_E2E_HUB_TOKEN (tests/e2e/kind/run.sh does)"),
]


def _kubectl(*args: str) -> str:
    return subprocess.run(["kubectl", "-n", ENV["NAMESPACE"] or "jhub", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def user() -> Iterator[HubUser]:
    alice = HubUser(ENV["HUB_URL"], ENV["HUB_TOKEN"], f"e2e-{uuid.uuid4().hex[:6]}")
    alice.start_server()
    for example in ("train.ipynb", "prepare.ipynb", "pipeline.yaml"):
        alice.upload(ROOT / "examples" / example)
    yield alice


def test_the_quota_service_answers_a_user_with_the_role(user: HubUser) -> None:
    answer = user.quotas.get("me")
    assert answer.status_code == 200, answer.text
    assert answer.json()["user"] == user.name


def test_example_run_succeeds_and_is_recorded_in_mlflow(user: HubUser) -> None:
    record = user.submit({"notebook": "train.ipynb", "parameters": {"n_estimators": 20}}).json()
    done = user.wait(record["id"])
    assert done["status"] == "SUCCEEDED", done["error"]
    if ENV["MLFLOW_URL"]:
        run = httpx.get(f"{ENV['MLFLOW_URL']}/api/2.0/mlflow/runs/get", params={"run_id": done["mlflow_run_id"]}, timeout=30)
        assert run.status_code == 200, run.text
        assert run.json()["run"]["info"]["status"] == "FINISHED"


def test_example_pipeline_succeeds(user: HubUser) -> None:
    pod = f"jupyter-{user.name}"
    out = _kubectl("exec", pod, "--", "nbscale", "run", "pipeline.yaml", "--json")
    assert '"SUCCEEDED"' in out, out


def test_a_sweep_runs_as_a_rayjob(user: HubUser) -> None:
    spec = {"notebook": "train.ipynb", "parameters": {"n_estimators": 10},
            "sweep": {"space": {"n_estimators": "grid(10, 20)"}, "search": "grid", "metric": "val_accuracy", "mode": "max", "concurrency": 1}}
    record = user.submit(spec).json()
    time.sleep(30)
    assert "rayjob" in _kubectl("get", "rayjobs", "-o", "name")
    assert user.wait(record["id"], timeout=1800)["status"] == "SUCCEEDED"


def test_cancel_kills_a_run(user: HubUser) -> None:
    record = user.submit({"notebook": "train.ipynb", "parameters": {"n_estimators": 400}}).json()
    time.sleep(15)
    user.cancel(record["id"])
    assert user.wait(record["id"], timeout=300)["status"] == "KILLED"


def test_a_run_over_quota_is_refused(user: HubUser) -> None:
    answer = user.submit({"notebook": "train.ipynb", "resources": {"gpus": 64}}, ok=(409,))
    assert "quota" in answer.json()["message"].lower() or answer.json().get("limit")


@pytest.mark.skipif(not ENV["KUEUE_QUEUE"], reason="set NBSCALE_E2E_KUEUE_QUEUE to a LocalQueue whose cohort holds one run")
def test_kueue_queues_a_run_when_the_cohort_is_full(user: HubUser) -> None:
    first = user.submit({"notebook": "train.ipynb", "parameters": {"n_estimators": 400}, "resources": {"cpu": 1}}).json()
    second = user.submit({"notebook": "train.ipynb", "parameters": {"n_estimators": 400}, "resources": {"cpu": 1}}).json()
    time.sleep(30)
    workloads = _kubectl("get", "workloads", "-o", "jsonpath={range .items[*]}{.status.conditions[?(@.type=='QuotaReserved')].status}{'\\n'}{end}")
    assert "False" in workloads.split(), workloads
    for run in (first, second):
        user.cancel(run["id"])
