"""GPU leases of runs on the Argo executor, against the real quota service of a local JupyterHub and
tests/kube_sim (a simulation of the Kubernetes API and of Argo): a Workflow the cluster refuses to
create gives its lease back at once, and a run that ends on the cluster gives it back when it ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hub_extension.client import QuotaClient
from workflow_compiler.executors.argo import ArgoExecutor, Backoff, KubernetesForbidden
from workflow_compiler.spec import build_run_spec
from workflow_compiler.store import RunStore
from workflow_compiler.submit import submit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HUB_ENV = {"JUPYTERHUB_API_URL": "http://127.0.0.1:1/hub/api", "JUPYTERHUB_SERVICE_PREFIX": "/user/x/"}


@pytest.fixture
def gpu_user(quota_hub, unique_user, set_limits, monkeypatch) -> QuotaClient:
    """A hub user allowed 1 GPU, whose environment (like a single-user server's) reaches the quota service."""
    name = unique_user("argo")
    set_limits(name, max_gpus=1)
    env = {"JUPYTERHUB_API_TOKEN": quota_hub.token_for(name), **HUB_ENV, "NBSCALE_QUOTA_URL": quota_hub.service_direct_url}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    client = QuotaClient.from_env()
    assert client is not None
    yield client
    client.close()


def _executor(kube_sim, tmp_path) -> ArgoExecutor:
    return ArgoExecutor(store=RunStore(tmp_path / "runs.db"), api_client=kube_sim.api_client(), namespace=kube_sim.namespace,
                        backoff=Backoff(attempts=2, first=0.01, longest=0.01))


def test_a_refused_create_releases_the_lease(kube_sim, tmp_path, gpu_user) -> None:
    kube_sim.sim.fail("POST", r"/workflows$", 403, times=2)
    spec = build_run_spec("train.ipynb", root=EXAMPLES, resources={"gpus": 1})

    with pytest.raises(KubernetesForbidden):
        submit(spec, executor=_executor(kube_sim, tmp_path), root=EXAMPLES)

    assert gpu_user.my_quota()["usage"]["gpus_in_use"] == 0


def test_a_finished_cluster_run_releases_the_lease(kube_sim, tmp_path, gpu_user) -> None:
    kube_sim.behaviour.step_seconds = 2.0
    executor = _executor(kube_sim, tmp_path)
    record = submit(build_run_spec("train.ipynb", root=EXAMPLES, resources={"gpus": 1}), executor=executor, root=EXAMPLES)
    assert record.lease_id and gpu_user.my_quota()["usage"]["gpus_in_use"] == 1

    assert executor.wait(record.id, timeout=30).status == "SUCCEEDED"

    assert gpu_user.my_quota()["usage"]["gpus_in_use"] == 0


def test_following_a_cluster_run_heartbeats_its_lease(kube_sim, tmp_path, gpu_user) -> None:
    kube_sim.behaviour.step_seconds = 30
    executor = _executor(kube_sim, tmp_path)
    record = submit(build_run_spec("train.ipynb", root=EXAMPLES, resources={"gpus": 1}), executor=executor, root=EXAMPLES)
    first = {x["id"]: x["expires_at"] for x in gpu_user.my_quota()["leases"]}[record.lease_id]
    time.sleep(1.1)  # the service's times have whole seconds

    executor.get(record.id)  # what the CLI's follow, the REST API and the server's periodic look do

    assert {x["id"]: x["expires_at"] for x in gpu_user.my_quota()["leases"]}[record.lease_id] > first
    executor.cancel(record.id, wait=10)
    assert gpu_user.my_quota()["usage"]["gpus_in_use"] == 0
