"""Outputs of Argo runs come from their MLflow run: found by the Workflow's tag on a real
``mlflow server``, downloaded into the run's folder on first request; an MLflow that does not
answer costs seconds, not minutes. The cluster is tests/kube_sim, a simulation."""

from __future__ import annotations

import time

import nbformat
import pytest
from argo_helpers import argo_executor, submit_run

from workflow_compiler.errors import NbscaleError


def _log_step_outputs(uri: str, workflow: str, folder) -> str:
    """What the cluster step logs: an MLflow run tagged with its Workflow, with the notebook and HTML."""
    from workflow_compiler.tracking_uri import open_client

    client = open_client(uri)
    experiment = client.create_experiment(f"argo-{workflow}")
    run = client.create_run(experiment, tags={"nbscale.workflow": workflow})
    folder.mkdir()
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("from the cluster")]), folder / "output.ipynb")
    (folder / "output.html").write_text("<p>from the cluster</p>")
    for name in ("output.ipynb", "output.html"):
        client.log_artifact(run.info.run_id, str(folder / name))
    client.set_terminated(run.info.run_id)
    return str(run.info.run_id)


def test_outputs_come_from_the_mlflow_run_of_the_workflow(kube_sim, tmp_path, mlflow_server, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    kube_sim.behaviour.step_seconds = 10
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    mlflow_run = _log_step_outputs(mlflow_server, record.workflow_name, tmp_path / "step")

    done = executor.wait(record.id, timeout=30)

    assert done.status == "SUCCEEDED" and done.mlflow_run_id == mlflow_run
    assert done.links["mlflow"] == f"{mlflow_server}/#/experiments/{done.mlflow_experiment_id}/runs/{mlflow_run}"
    notebook = executor.output_file(record.id, "output.ipynb")
    assert notebook.is_relative_to(done.run_dir) and notebook.parent.name == "outputs"
    assert "from the cluster" in notebook.read_text() and notebook == executor.output_file(record.id, "output.ipynb")
    assert executor.output_file(record.id, "output.html").read_text() == "<p>from the cluster</p>"


def test_an_mlflow_that_does_not_answer_is_reported_quickly(kube_sim, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    executor = argo_executor(kube_sim, tmp_path)
    record = submit_run(executor)
    started = time.monotonic()

    done = executor.wait(record.id, timeout=30)

    assert done.status == "SUCCEEDED" and done.mlflow_run_id is None and time.monotonic() - started < 15
    with pytest.raises(NbscaleError, match="has no output.ipynb"):
        executor.output_file(record.id, "output.ipynb")
