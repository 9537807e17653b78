"""The Argo executor's errors an operator can act on: RBAC, Argo missing, retries with a one-line end.

Faults are injected into tests/kube_sim (a simulation of the Kubernetes API); the real
``kubernetes`` client meets them.
"""

from __future__ import annotations

import pytest
from argo_helpers import argo_executor, submit_run

from workflow_compiler.executors.argo import SINGLEUSER_ROLE, ArgoNotInstalled, KubernetesError, KubernetesForbidden
from workflow_compiler.executors.argo.kube import Backoff


@pytest.mark.parametrize(("method", "path", "action", "verb", "resource"), [
    ("POST", r"/workflows$", "submit", "create", "workflows"),
    ("GET", r"/workflows/", "get", "get", "workflows"),
    ("PATCH", r"/workflows/", "cancel", "patch", "workflows"),
    ("GET", r"/pods$", "logs", "list", "pods"),
])
@pytest.mark.parametrize("status", [401, 403])
def test_refusals_name_verb_resource_namespace_and_role(kube_sim, tmp_path, method, path, action, verb, resource, status):
    executor = argo_executor(kube_sim, tmp_path)
    record = None if action == "submit" else submit_run(executor)
    kube_sim.sim.fail(method, path, status, times=10)

    with pytest.raises(KubernetesForbidden) as refused:
        if record is None:
            submit_run(executor)
        else:
            getattr(executor, action)(record.id)

    message = refused.value.message
    assert f"refused to {verb} {resource} in namespace {kube_sim.namespace}" in message
    assert f"The Role {SINGLEUSER_ROLE} grants it" in message and refused.value.http_status == 403
    assert (refused.value.verb, refused.value.resource, refused.value.status) == (verb, resource, status)


def test_a_404_on_workflows_says_argo_is_not_installed(kube_sim, tmp_path):
    executor = argo_executor(kube_sim, tmp_path)
    kube_sim.sim.fail("POST", r"/workflows$", 404, message="the server could not find the requested resource")

    with pytest.raises(ArgoNotInstalled, match=f"Argo Workflows is not installed on this cluster, or not in namespace "
                                               f"{kube_sim.namespace}"):
        submit_run(executor)
    assert executor.store.list()[1] == 0  # nothing recorded


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_failures_are_retried(kube_sim, tmp_path, status):
    executor = argo_executor(kube_sim, tmp_path)
    kube_sim.sim.fail("POST", r"/workflows$", status, times=2)

    record = submit_run(executor)

    assert record.workflow_name and len(kube_sim.workflows()) == 1
    assert [m for m, p in kube_sim.sim.state.requests if m == "POST"] == ["POST"] * 3


def test_a_create_that_failed_after_it_happened_is_not_repeated(kube_sim, tmp_path):
    executor = argo_executor(kube_sim, tmp_path)
    kube_sim.sim.fail("POST", r"/workflows$", 500, after=True, message="etcdserver: request timed out")

    record = submit_run(executor)

    assert [w["metadata"]["name"] for w in kube_sim.workflows()] == [record.workflow_name]
    assert [m for m, p in kube_sim.sim.state.requests if m == "POST"] == ["POST"]


def test_persistent_failures_end_in_one_line(kube_sim, tmp_path):
    executor = argo_executor(kube_sim, tmp_path, backoff=Backoff(attempts=3, first=0.01, longest=0.02))
    record = submit_run(executor)
    kube_sim.sim.fail("GET", r"/workflows/", 500, times=3, message="etcdserver: request timed out")

    with pytest.raises(KubernetesError) as failed:
        executor.get(record.id)

    assert failed.value.message == (f"the Kubernetes API failed to get workflows in namespace {kube_sim.namespace} after 3 "
                                    "attempts: 500 etcdserver: request timed out")
    assert executor.get(record.id).workflow_name == record.workflow_name  # the fault is spent: it works again


def test_an_unreachable_api_server_is_one_line_too(tmp_path):
    from kubernetes import client

    from workflow_compiler.executors.argo import ArgoExecutor
    from workflow_compiler.store import RunStore

    configuration = client.Configuration()
    configuration.host, configuration.retries = "http://127.0.0.1:9", 0
    executor = ArgoExecutor(store=RunStore(tmp_path / "runs.db"), api_client=client.ApiClient(configuration), namespace="ml",
                            backoff=Backoff(attempts=2, first=0.01, longest=0.01))
    with pytest.raises(KubernetesError, match=r"^cannot reach the Kubernetes API at http://127.0.0.1:9 to create workflows in "
                                              r"namespace ml after 2 attempts: \w+\. Check") as failed:
        submit_run(executor)
    assert "\n" not in failed.value.message
