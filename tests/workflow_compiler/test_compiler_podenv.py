"""Compiled manifests with a captured pod: what reaches every pod, what never does, and claims that cannot be shared.

The hostile check serializes each manifest (the embedded RayJob is part of its text) and searches it for
every secret value planted in the recorded pods, the token volume and the hub's variable names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from compiler_helpers import REPO, no_site_config, train, train_sweep  # noqa: F401 - the fixture applies by import
from recorded_pods import captured, recorded_pod

from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.compiler import compile_workflow, to_yaml
from workflow_compiler.errors import CompileError
from workflow_compiler.executors.templating import substitute_all
from workflow_compiler.spec import load_pipeline
from workflow_compiler.validation import validate_rayjob, validate_workflow

_train, _sweep = train, train_sweep


SPECS: dict[str, Callable[[], Any]] = {
    "run": lambda: _train(),
    "gpu-run": lambda: _train(resources={"gpus": 1, "pool": "a100"}),
    "pipeline": lambda: load_pipeline(REPO / "examples" / "pipeline.yaml", root=REPO).model_copy(update={"user": "alice"}),
    "rayjob": lambda: _sweep(1),
    "fanout": lambda: _sweep(),
}
POD_CASES = [("jupyter-alice", "ReadWriteMany", ClusterConfig()),
             ("jupyter-bob", "ReadWriteOnce", ClusterConfig(pin_steps_to_user_node=True, cpu_steps_inherit_placement=True))]


#: The secret values planted in each recorded pod, written out (not derived from the code under test).
PLANTED = {
    "jupyter-alice": ["e3b0c44298fc1c149afbf4c8996fb924", "postgres://u:pw@db.internal", "u:pw@", "wJalrXUtnFEMI/K7MDENG",
                      "AKIAIOSFODNN7EXAMPLE", "0123456789abcdef0123456789abcdef01234567", "build:hunter2@", "hunter2"],
    "jupyter-bob": ["9f86d081884c7d659a2feaa0c55ad015", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"],
}


def _secrets(pod: dict[str, Any]) -> list[str]:
    """Every value the pod holds that must never reach a manifest: the planted list, checked against the fixture."""
    planted = PLANTED[pod["metadata"]["name"]]
    values = [e["value"] for c in pod["spec"]["containers"] for e in c.get("env") or [] if e.get("value")]
    assert all(any(secret in value for value in values) for secret in planted)  # the fixture still holds them
    return planted


def _compiled(kind: str, pod: str, modes: str, cluster: ClusterConfig) -> dict[str, Any]:
    return compile_workflow(SPECS[kind](), cluster=cluster, pod_env=captured(pod, modes), fanout=kind == "fanout")


def _rayjob_as_created(manifest: dict[str, Any]) -> dict[str, Any] | None:
    sweep = next((t for t in manifest["spec"]["templates"] if "resource" in t), None)
    if sweep is None:
        return None
    job = yaml.safe_load(sweep["resource"]["manifest"])
    created: dict[str, Any] = substitute_all(job, {"workflow.labels.nbscale.io/run-id": "nbs-0123456789", "workflow.name": "nbscale-x"})
    return created


def _pods(manifest: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod-level fields, container) of every pod the manifest creates: step templates and RayJob pods."""
    pods = [(t, t["container"]) for t in manifest["spec"]["templates"] if "container" in t]
    job = _rayjob_as_created(manifest)
    if job is not None:
        cluster = job["spec"]["rayClusterSpec"]
        for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
            pods.append((group["template"]["spec"], group["template"]["spec"]["containers"][0]))
    return pods


@pytest.mark.parametrize("kind", sorted(SPECS))
@pytest.mark.parametrize(("pod", "modes", "cluster"), POD_CASES, ids=[c[0] for c in POD_CASES])
def test_no_manifest_carries_a_secret_or_the_token_volume(kind: str, pod: str, modes: str, cluster: ClusterConfig) -> None:
    manifest = _compiled(kind, pod, modes, cluster)
    validate_workflow(manifest)
    job = _rayjob_as_created(manifest)
    if job is not None:
        validate_rayjob(job)
    text = to_yaml(manifest)
    for secret in _secrets(recorded_pod(pod)):
        assert secret not in text, f"a secret value of {pod} reached the {kind} manifest"
    for forbidden in ("kube-api-access", "serviceAccountToken", "sa-token", "cloud-token", "JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN",
                      "JUPYTERHUB_OAUTH", "/var/run/secrets", "bob-notebook"):
        assert forbidden not in text, f"{forbidden} reached the {kind} manifest"


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_pod_reuses_the_notebooks_environment(kind: str) -> None:
    manifest = _compiled(kind, "jupyter-alice", "ReadWriteMany", ClusterConfig(service_account="nbscale-runner",
                                                                               mlflow_tracking_uri="http://mlflow.nbscale:5000"))
    assert manifest["spec"]["serviceAccountName"] == "nbscale-runner"
    assert manifest["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert manifest["spec"]["securityContext"] == {"fsGroup": 100}
    assert [v["name"] for v in manifest["spec"]["volumes"]] == ["volume-alice", "shared-datasets", "dshm"]
    for fields, container in _pods(manifest):
        assert container["image"] == "registry.example.com/ds/singleuser:2026.11"
        assert container["imagePullPolicy"] == "IfNotPresent"
        assert container["securityContext"] == {"runAsUser": 1000, "runAsGroup": 100}
        assert {"secretRef": {"name": "alice-cloud-credentials"}} in container["envFrom"]
        env = {e["name"]: e for e in container["env"]}
        assert env["WAREHOUSE_DSN"] == {"name": "WAREHOUSE_DSN", "valueFrom": {"secretKeyRef": {"name": "warehouse-db", "key": "dsn",
                                                                                                "optional": True}}}
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.nbscale:5000"  # the cluster config wins over the pod
        assert len(env) == len(container["env"])  # no name twice
        if "volumeMounts" in container and any(m["name"] == "volume-alice" for m in container["volumeMounts"]):
            assert container["workingDir"] == "/home/jovyan"
        if "volumes" in fields and fields is not container:
            assert "serviceAccountName" not in fields or fields["serviceAccountName"] == "nbscale-runner"


def test_a_step_that_names_its_image_keeps_it() -> None:
    manifest = compile_workflow(_train(image="ghcr.io/acme/gpu:1"), pod_env=captured("jupyter-alice"))
    step = next(t for t in manifest["spec"]["templates"] if t["name"] == "notebook")
    assert step["container"]["image"] == "ghcr.io/acme/gpu:1"


def test_gpu_steps_take_their_pool_and_cpu_steps_may_take_the_notebooks_placement() -> None:
    cluster = ClusterConfig(cpu_steps_inherit_placement=True)
    cpu = next(t for t in compile_workflow(_train(), cluster=cluster, pod_env=captured("jupyter-alice"))["spec"]["templates"]
               if t["name"] == "notebook")
    gpu = next(t for t in compile_workflow(_train(resources={"gpus": 1, "pool": "a100"}), cluster=cluster,
                                           pod_env=captured("jupyter-alice"))["spec"]["templates"] if t["name"] == "notebook")
    assert cpu["nodeSelector"] == {"hub.jupyter.org/node-purpose": "user"}
    assert cpu["tolerations"][0] == {"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user", "effect": "NoSchedule"}
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert gpu["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    default = next(t for t in compile_workflow(_train(), pod_env=captured("jupyter-alice"))["spec"]["templates"] if t["name"] == "notebook")
    assert "nodeSelector" not in default and "tolerations" not in default


def test_the_steps_own_variables_win_over_the_pods() -> None:
    step = next(t for t in compile_workflow(_train(), pod_env=captured("jupyter-bob"))["spec"]["templates"] if t["name"] == "notebook")
    assert [e for e in step["container"]["env"] if e["name"] == "NBSCALE_WORKFLOW_NAME"] == [
        {"name": "NBSCALE_WORKFLOW_NAME", "value": "{{workflow.name}}"}]


@pytest.mark.parametrize("kind", ["run", "pipeline", "rayjob", "fanout"])
def test_a_read_write_once_home_is_refused_with_what_works(kind: str) -> None:
    with pytest.raises(CompileError) as refused:
        _compiled(kind, "jupyter-bob", "ReadWriteOnce", ClusterConfig())
    message = refused.value.message
    assert "'claim-bob'" in message and "ReadWriteOnce" in message and "ContainerCreating" in message
    assert "ReadWriteMany workspace claim" in message and "pin_steps_to_user_node: true" in message and "node-a1" in message


def test_read_write_once_pod_cannot_be_pinned_either() -> None:
    with pytest.raises(CompileError, match="ReadWriteOncePod") as refused:
        _compiled("run", "jupyter-bob", "ReadWriteOncePod", ClusterConfig(pin_steps_to_user_node=True))
    assert "pin_steps_to_user_node" not in refused.value.message


def test_unknown_access_modes_are_refused() -> None:
    env = captured("jupyter-alice").model_copy(update={"claim_access_modes": {}})
    with pytest.raises(CompileError, match="'claim-alice' mounted by your notebook is of unknown access mode"):
        compile_workflow(_train(), pod_env=env)


@pytest.mark.parametrize("kind", ["run", "pipeline", "rayjob", "fanout"])
def test_pinned_steps_run_on_the_notebooks_node(kind: str) -> None:
    manifest = _compiled(kind, "jupyter-bob", "ReadWriteOnce", ClusterConfig(pin_steps_to_user_node=True))
    mounting = [(f, c) for f, c in _pods(manifest) if any(m["name"] == "home" for m in c.get("volumeMounts") or [])]
    assert mounting
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a1"]}]}
    for fields, _ in mounting:
        assert fields["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] == [term]


def test_without_a_captured_pod_the_cluster_config_applies() -> None:
    manifest = compile_workflow(_train())
    assert manifest["spec"]["volumes"] == [{"name": "workspace", "persistentVolumeClaim": {"claimName": "claim-alice"}}]
    assert "securityContext" not in manifest["spec"] and "imagePullSecrets" not in manifest["spec"]


def test_a_captured_volume_may_not_take_the_outputs_name() -> None:
    env = captured("jupyter-alice")
    env = env.model_copy(update={"volumes": [*env.volumes, {"name": "outputs", "emptyDir": {}}]})
    with pytest.raises(CompileError, match="volume named 'outputs'"):
        compile_workflow(_train(), pod_env=env)


def test_compiling_with_a_captured_pod_is_deterministic() -> None:
    assert to_yaml(_compiled("pipeline", "jupyter-alice", "ReadWriteMany", ClusterConfig())) == \
        to_yaml(_compiled("pipeline", "jupyter-alice", "ReadWriteMany", ClusterConfig()))


def _containers(node: Any) -> Iterator[Any]:
    """Every dict and list in a manifest, depth first."""
    if isinstance(node, dict | list):
        yield node
        for child in node.values() if isinstance(node, dict) else node:
            yield from _containers(child)


@pytest.mark.parametrize("kind", SPECS)
def test_a_manifest_shares_no_object_writes_no_null_and_leaves_the_pod_alone(kind: str) -> None:
    """Plain dicts: a shared one would become a YAML anchor, and a caller's edit would reach the captured pod."""
    env = captured("jupyter-alice")
    pristine = env.model_dump()
    manifest = compile_workflow(SPECS[kind](), pod_env=env, fanout=kind == "fanout")
    nodes = list(_containers(manifest))
    assert len({id(node) for node in nodes}) == len(nodes)
    assert not any(value is None for node in nodes for value in (node.values() if isinstance(node, dict) else node))
    for node in nodes:
        node.clear()
    assert env.model_dump() == pristine
