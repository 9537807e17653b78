"""Kueue in compiled workflows: which pods carry the queue label, where the queue comes from, the RayJob's wait."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from compiler_helpers import REPO, no_site_config, train, train_sweep  # noqa: F401 - the fixture applies by import
from pydantic import ValidationError

from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.compiler import compile_workflow
from workflow_compiler.compiler.queueing import QUEUE_LABEL, queue_from_quota
from workflow_compiler.errors import CompileError
from workflow_compiler.executors.interpreter import WorkflowInterpreter
from workflow_compiler.executors.rayjob_local import condition_holds
from workflow_compiler.executors.templating import substitute
from workflow_compiler.spec import PipelineSpec, RunSpec, load_pipeline
from workflow_compiler.validation import validate_rayjob, validate_workflow

_train = train


def _sweep(**fields: Any) -> RunSpec:
    return train_sweep(1, **fields)


def _pipeline(**fields: Any) -> PipelineSpec:
    return load_pipeline(REPO / "examples" / "pipeline.yaml", root=REPO).model_copy(update={"user": "alice", **fields})


def _templates(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in manifest["spec"]["templates"]}


def _queue_of(template: dict[str, Any]) -> str | None:
    return (template.get("metadata") or {}).get("labels", {}).get(QUEUE_LABEL)


def _rayjob(manifest: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = yaml.safe_load(_templates(manifest)["sweep"]["resource"]["manifest"])
    return job


@pytest.mark.parametrize(("spec_queue", "cluster_queue", "hub_queue", "expected"), [
    ("vision", "shared", "hub-group", "vision"),
    (None, "shared", "hub-group", "shared"),
    (None, None, "hub-group", "hub-group"),
    (None, None, None, None),
])
def test_the_queue_comes_from_spec_then_cluster_then_hub(spec_queue: str | None, cluster_queue: str | None,
                                                         hub_queue: str | None, expected: str | None) -> None:
    manifest = compile_workflow(_train(queue=spec_queue), cluster=ClusterConfig(kueue_queue=cluster_queue), hub_queue=hub_queue)
    assert _queue_of(_templates(manifest)["notebook"]) == expected
    assert QUEUE_LABEL not in manifest["spec"]["podMetadata"]["labels"]  # podMetadata would label every pod
    validate_workflow(manifest)


def test_pipeline_steps_queue_but_not_the_parent_run_helpers() -> None:
    templates = _templates(compile_workflow(_pipeline(queue="vision")))
    assert {name: _queue_of(t) for name, t in templates.items() if "container" in t} == {
        "open-parent-run": None, "notebook-prepare": "vision", "notebook-train": "vision", "close-parent-run": None}


def test_fanout_trials_queue() -> None:
    templates = _templates(compile_workflow(_sweep(queue="vision"), fanout=True))
    assert _queue_of(templates["trial"]) == "vision" and _queue_of(templates["open-parent-run"]) is None


def test_a_queued_rayjob_is_one_kueue_workload() -> None:
    """Label on the RayJob, not on the step that creates it nor on the Ray pods; the shape Kueue's webhook takes."""
    manifest = compile_workflow(_sweep(queue="vision"))
    validate_workflow(manifest)
    step = _templates(manifest)["sweep"]
    assert _queue_of(step) is None and step["resource"]["setOwnerReference"] is True
    job = _rayjob(manifest)
    validate_rayjob({**job, "metadata": {**job["metadata"], "labels": {**job["metadata"]["labels"], "nbscale.io/run-id": "nbs-1"}}})
    assert job["metadata"]["labels"][QUEUE_LABEL] == "vision"
    assert job["metadata"]["labels"]["nbscale.io/run-id"] == "{{workflow.labels.nbscale.io/run-id}}"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and "clusterSelector" not in spec and "suspend" not in spec
    cluster = spec["rayClusterSpec"]
    assert not cluster.get("enableInTreeAutoscaling")
    for pod in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        assert QUEUE_LABEL not in pod["metadata"]["labels"]


def test_an_unqueued_rayjob_has_no_queue_label() -> None:
    assert QUEUE_LABEL not in _rayjob(compile_workflow(_sweep()))["metadata"]["labels"]


# (jobDeploymentStatus, jobStatus) as KubeRay reports them -> what Argo makes of the resource step.
@pytest.mark.parametrize(("deployment", "job", "expected"), [
    ("Complete", "SUCCEEDED", "Succeeded"),
    ("Complete", "FAILED", "Failed"),
    ("Complete", "STOPPED", "Failed"),
    ("Failed", "FAILED", "Failed"),
    ("Failed", "RUNNING", "Failed"),  # activeDeadlineSeconds passed
    ("Failed", None, "Failed"),  # the Ray cluster never came up
    ("ValidationFailed", None, "Failed"),
    ("Suspended", None, "waiting"),  # queued by Kueue
    ("Initializing", None, "waiting"),
    ("Running", "RUNNING", "waiting"),
    ("Running", "SUCCEEDED", "waiting"),  # KubeRay has not caught up yet
])
def test_the_sweep_step_waits_on_deployment_and_job_status(deployment: str, job: str | None, expected: str) -> None:
    resource = _templates(compile_workflow(_sweep()))["sweep"]["resource"]
    status = {"jobDeploymentStatus": deployment, **({"jobStatus": job} if job else {})}
    failed = condition_holds(resource["failureCondition"], {"status": status})
    succeeded = condition_holds(resource["successCondition"], {"status": status})
    assert not (failed and succeeded)
    assert ("Failed" if failed else "Succeeded" if succeeded else "waiting") == expected


def test_the_run_id_expression_resolves_from_the_workflow_label() -> None:
    """The local executor labels the Workflow with the run id as Argo's executor does; the RayJob copy resolves."""
    manifest = compile_workflow(_sweep())
    manifest["metadata"]["labels"]["nbscale.io/run-id"] = "nbs-0123456789"
    interpreter = WorkflowInterpreter(manifest, workflow_name="w", root=REPO, run_dir=REPO)
    text = substitute(_templates(manifest)["sweep"]["resource"]["manifest"], interpreter.scope)
    assert yaml.safe_load(text)["metadata"]["labels"]["nbscale.io/run-id"] == "nbs-0123456789"


@pytest.mark.parametrize("queue", ["Vision", "a_b", "-x", "x" * 64])
def test_a_queue_name_must_be_a_dns_label(queue: str) -> None:
    with pytest.raises(ValidationError, match="queue"):
        RunSpec(notebook="a.ipynb", queue=queue)
    with pytest.raises(ValidationError, match="kueue_queue"):
        ClusterConfig(kueue_queue=queue)


def test_a_hub_queue_that_cannot_be_a_label_is_refused() -> None:
    with pytest.raises(CompileError, match="'Data Science' cannot name a Kueue LocalQueue"):
        compile_workflow(_train(), hub_queue="Data Science")


@pytest.mark.parametrize(("status", "expected"), [
    ({"enabled": False}, None),
    ({"enabled": True, "groups": ["vision", "nlp"], "limits": {"sources": {"max_gpus": "group:nlp"}}}, "nlp"),
    ({"enabled": True, "groups": ["vision"], "limits": {"sources": {"max_gpus": "user:alice"}}}, "vision"),
    ({"enabled": True, "groups": ["vision", "nlp"], "limits": {"sources": {"max_gpus": "default"}}}, None),
    ({"enabled": True, "groups": ["Data Science"], "limits": {"sources": {}}}, None),
    ({"enabled": True, "groups": [], "limits": {}}, None),
])
def test_queue_from_the_hub_quota_group(status: dict[str, Any], expected: str | None) -> None:
    assert queue_from_quota(status) == expected
