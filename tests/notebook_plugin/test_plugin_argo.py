"""The server extension and the magics on the Argo executor, against tests/kube_sim (a simulation of
the Kubernetes API and of Argo): the REST API follows a cluster run (status, logs, outputs from
MLflow), a restarted server re-attaches to in-flight runs, and ``%nbscale status`` shows Kueue's
queued state."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from kernel_helpers import LocalKernel

from workflow_compiler.executors.argo import ArgoExecutor
from workflow_compiler.spec import build_run_spec
from workflow_compiler.store import RunStore
from workflow_compiler.submit import submit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def inflight(kube_sim, tmp_path: Path) -> dict[str, str]:
    """Runs started by a server that then stopped: one its store knows, one whose store was lost."""
    kube_sim.behaviour.step_seconds = 2.0
    spec = build_run_spec("train.ipynb", root=EXAMPLES)
    known = submit(spec, executor=ArgoExecutor(store=RunStore(tmp_path / "runs.db"), kubeconfig=str(kube_sim.kubeconfig)),
                   root=EXAMPLES)
    lost = submit(spec, executor=ArgoExecutor(store=RunStore(tmp_path / "lost.db"), kubeconfig=str(kube_sim.kubeconfig)),
                  root=EXAMPLES)
    return {"known": known.id, "lost": lost.id}


@pytest.fixture
def jp_server_config(notebook_root: Path, tmp_path: Path, kube_sim, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The extension on the Argo executor, its cluster reached through the simulation's kubeconfig."""
    if "restart" in request.node.name:
        request.getfixturevalue("inflight")  # before the server starts, as a previous server left them
    return {
        "ServerApp": {"jpserver_extensions": {"notebook_plugin": True}},
        "NbscaleExtension": {"run_store_path": str(tmp_path / "runs.db"),
                             "executor_class": "workflow_compiler.executors.argo.ArgoExecutor",
                             "executor_options": {"kubeconfig": str(kube_sim.kubeconfig)},
                             "refresh_interval": 0.3 if "periodic" in request.node.name else 0},
    }


async def _wait_status(api, run_id: str, wanted: set[str], timeout: float = 30.0) -> dict[str, Any]:
    for _ in range(int(timeout / 0.2)):
        status, record = await api("GET", f"runs/{run_id}")
        assert status == 200, record
        if record["status"] in wanted:
            return record
        await asyncio.sleep(0.2)
    raise AssertionError(f"{run_id} never reached {wanted}: {record}")


def _log_outputs(uri: str, workflow: str, folder: Path) -> str:
    """What the cluster step would have logged: an MLflow run tagged with the workflow, and its outputs."""
    from workflow_compiler.tracking_uri import open_client

    client = open_client(uri)
    experiment = client.create_experiment("argo-outputs", artifact_location=(folder / "artifacts").as_uri())
    run = client.create_run(experiment, tags={"nbscale.workflow": workflow})
    folder.mkdir(exist_ok=True)
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("ran on the cluster")]), folder / "output.ipynb")
    (folder / "output.html").write_text("<p>ran on the cluster</p>")
    for name in ("output.ipynb", "output.html"):
        client.log_artifact(run.info.run_id, str(folder / name))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


async def test_rest_api_follows_an_argo_run_with_logs_and_outputs(api, kube_sim, tmp_path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    kube_sim.behaviour.step_seconds = 6.0
    status, record = await api("POST", "runs", body={"notebook": "train.ipynb"})
    assert status == 201, record
    assert record["executor"] == "argo" and record["namespace"] == kube_sim.namespace
    mlflow_run = await asyncio.to_thread(_log_outputs, uri, record["workflow_name"], tmp_path / "step")

    status, first = await api("GET", f"runs/{record['id']}/logs", params={"offset": 0, "wait": 5})
    done = await _wait_status(api, record["id"], {"SUCCEEDED", "FAILED"})
    status, rest = await api("GET", f"runs/{record['id']}/logs", params={"offset": first["offset"]})

    assert done["status"] == "SUCCEEDED" and done["progress"]["done"] == 1 and done["mlflow_run_id"] == mlflow_run
    assert (first["text"] + rest["text"]).startswith("----- step notebook -----\nnotebook: line 1\n")
    assert rest["done"] is False or rest["text"] == ""
    assert done["links"]["output_notebook"].endswith(f"runs/{record['id']}/outputs/output.ipynb")
    status, notebook = await api("GET", f"runs/{record['id']}/outputs/output.ipynb")
    assert status == 200 and "ran on the cluster" in json.dumps(notebook)
    status, page = await api("GET", f"runs/{record['id']}/outputs/output.html")
    assert status == 200 and page == "<p>ran on the cluster</p>"


async def test_restart_reattaches_to_inflight_argo_runs(api, kube_sim, inflight) -> None:
    status, listing = await api("GET", "runs")
    assert status == 200
    ids = {r["id"] for r in listing["runs"]}
    assert {inflight["known"], inflight["lost"]} <= ids  # the lost record was rebuilt from its Workflow

    for run_id in inflight.values():
        done = await _wait_status(api, run_id, {"SUCCEEDED", "FAILED", "KILLED"})
        assert done["status"] == "SUCCEEDED" and done["executor"] == "argo" and done["notebook"] == "train.ipynb"


def test_magics_status_shows_an_argo_run_queued_in_kueue(kube_sim, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(kube_sim.kubeconfig))
    kube_sim.behaviour.hold_queue = "team-gpu"
    record = submit(build_run_spec("train.ipynb", root=EXAMPLES), executor=ArgoExecutor(), root=EXAMPLES)
    kernel = LocalKernel(EXAMPLES)
    try:
        assert kernel.run("%load_ext notebook_plugin").error is None
        out = kernel.run(f"import time\nfor _ in range(100):\n    h = %nbscale status {record.id}\n"
                         "    if h.record['progress']['queued']: break\n    time.sleep(0.2)\n"
                         "print('LABEL', h.record['status_label'])")
        assert out.error is None, out
        assert "LABEL queued in team-gpu" in str(out) and "text/html" in out.mimetypes
        assert re.search(r"<b>(PENDING|RUNNING)</b> queued in team-gpu</td>", str(out)), str(out)
    finally:
        kernel.close()


@pytest.mark.parametrize(("in_pod", "expected"), [(True, "ArgoExecutor"), (False, "LocalExecutor")])
def test_the_extension_defaults_to_argo_inside_a_cluster_pod(tmp_path, monkeypatch, in_pod, expected) -> None:
    from notebook_plugin.extension import NbscaleExtension
    from workflow_compiler.executors.selection import POD_NAMESPACE_FILE_ENV

    (tmp_path / "namespace").write_text("ml")
    monkeypatch.setenv(POD_NAMESPACE_FILE_ENV, str(tmp_path / "namespace"))
    monkeypatch.setenv("NBSCALE_CLUSTER_CONFIG", str(tmp_path / "cluster.yaml"))
    if in_pod:
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    else:
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert NbscaleExtension().executor_class.__name__ == expected


async def test_rest_api_passes_on_what_the_cluster_refused(api, kube_sim) -> None:
    kube_sim.sim.fail("POST", r"/workflows$", 403, times=10)

    status, answer = await api("POST", "runs", body={"notebook": "train.ipynb"})

    assert status == 403 and "The Role nbscale-singleuser grants it" in answer["message"]
    assert answer["type"] == "KubernetesForbidden"


async def test_the_server_looks_at_inflight_runs_periodically(api, kube_sim, tmp_path) -> None:
    status, record = await api("POST", "runs", body={"notebook": "train.ipynb"})
    assert status == 201, record
    store = RunStore(tmp_path / "runs.db")

    for _ in range(100):  # nobody asks the API: the server's own look records the end
        if store.get(record["id"]).status == "SUCCEEDED":
            break
        await asyncio.sleep(0.2)
    assert store.get(record["id"]).status == "SUCCEEDED"
