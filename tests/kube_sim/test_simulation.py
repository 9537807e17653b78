"""The simulation itself holds to what the executor's tests rely on: bodies checked against the
vendored CRDs (unknown fields rejected), conflicts, selectors, and 410 for an expired watch."""

from __future__ import annotations

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from workflow_compiler.executors.argo.kube import WORKFLOWS

GROUP, VERSION, PLURAL = WORKFLOWS
MINIMAL = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "wf-a"},
           "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox"}}]}}


@pytest.fixture
def custom(kube_sim):
    return client.CustomObjectsApi(kube_sim.api_client())


def test_unknown_fields_are_rejected_on_create_and_patch(kube_sim, custom):
    bad = {**MINIMAL, "spec": {**MINIMAL["spec"], "entrypiont": "main"}}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, bad)
    assert refused.value.status == 422 and "entrypiont" in refused.value.body

    custom.create_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, MINIMAL)
    with pytest.raises(ApiException) as refused:
        custom.patch_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, "wf-a", {"spec": {"shutdown": 3}})
    assert refused.value.status == 422
    with pytest.raises(ApiException) as duplicate:
        custom.create_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, MINIMAL)
    assert duplicate.value.status == 409


def test_selectors_and_an_expired_watch(kube_sim, custom):
    for name, team in (("wf-a", "red"), ("wf-b", "blue")):
        body = {**MINIMAL, "metadata": {"name": name, "labels": {"team": team}}}
        custom.create_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, body)
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, label_selector="team=blue")
    assert [w["metadata"]["name"] for w in listed["items"]] == ["wf-b"]
    named = custom.list_namespaced_custom_object(GROUP, VERSION, kube_sim.namespace, PLURAL, field_selector="metadata.name=wf-a")
    assert [w["metadata"]["name"] for w in named["items"]] == ["wf-a"]
    old = listed["metadata"]["resourceVersion"]
    kube_sim.sim.compact()
    with pytest.raises(ApiException) as gone:
        for _ in watch.Watch().stream(custom.list_namespaced_custom_object, GROUP, VERSION, kube_sim.namespace, PLURAL,
                                      resource_version=old, timeout_seconds=5):
            pass
    assert gone.value.status == 410
