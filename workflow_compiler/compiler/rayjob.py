"""The KubeRay ``RayJob`` a compiled sweep creates: a Ray cluster sized from the sweep, running the sweep driver.

Pure: ``rayjob_manifest(plan)`` returns a dict that validates against the vendored
``ray.io_rayjobs.yaml``. The head runs only the driver (``num-cpus: 0``, so no trial lands there);
one worker group holds the trials, ``trials_per_worker`` to a pod so that fractional GPUs share a
device (two 0.5-GPU trials on one ``nvidia.com/gpu``). Head and workers mount the user's workspace,
where the notebook is and where the driver keeps its state and the trials' output notebooks
(``NBSCALE_HOME`` on the workspace), so that every pod sees the same files.

How the spec reaches the driver, and why: a RayJob ``entrypoint`` is a shell command line (Ray
runs it with a shell), and Argo substitutes ``{{...}}`` in the whole manifest. So the entrypoint
is a constant written here, ``python -m workflow_compiler.sweep --spec-env NBSCALE_SWEEP_SPEC ...``
with no user text at all, and the RunSpec travels as data: JSON in the ``env_vars`` of
``runtimeEnvYAML`` (Ray sets them for the entrypoint), encoded by ``argo_safe_json`` so that no
``{{`` can form, then YAML-quoted by ``yaml.safe_dump``. No shell ever parses it, and no
ConfigMap or file has to exist before the job starts.
"""

from __future__ import annotations

import copy
import math
import shlex
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..cluster import ClusterConfig
from ..errors import CompileError
from ..pools import DEFAULT_GPU_RESOURCE, Pool
from ..spec import RunSpec
from ..stepconfig import argo_safe_json
from ..sweep.spec import SweepSpec
from ..yaml_dump import NO_WRAP, dump_yaml
from .podspec import PodSettings
from .templates import container_resources

API_VERSION = "ray.io/v1"
#: The environment variable (set through runtimeEnvYAML) that carries the RunSpec JSON.
SPEC_ENV = "NBSCALE_SWEEP_SPEC"
WORKER_GROUP = "trials"
#: The head runs the Tune driver and the MLflow client, not trials.
HEAD_CPU, HEAD_MEMORY = 1.0, "4Gi"
#: Seconds KubeRay keeps the finished Ray cluster (logs stay readable a while), unless the cluster config says otherwise.
DEFAULT_TTL_SECONDS = 300
#: Added to the sweep's time budget for the RayJob's own deadline: pods to schedule, images to pull, the summary to write.
DEADLINE_MARGIN_SECONDS = 1800


@dataclass(frozen=True)
class WorkerLayout:
    """How the trials are packed into worker pods."""

    replicas: int
    trials_per_worker: int
    cpus: float
    gpus: int
    memory: str


@dataclass(frozen=True)
class RayJobPlan:
    """Everything the RayJob is made of."""

    spec: RunSpec
    image: str
    labels: dict[str, str]
    pool: Pool | None
    cluster: ClusterConfig
    pod: PodSettings
    env: dict[str, str] = field(default_factory=dict)


def scale_quantity(quantity: str, factor: int) -> str:
    """A Kubernetes quantity times a whole number, keeping its suffix: ``1.5Gi`` × 3 = ``4.5Gi``."""
    digits = len(quantity) - len(quantity.lstrip("0123456789."))
    number = Decimal(quantity[:digits]) * factor
    text = format(number.normalize(), "f")
    return text + quantity[digits:]


def worker_layout(sweep: SweepSpec, memory_per_trial: str) -> WorkerLayout:
    """Worker pods for ``concurrency`` trials at once (fewer when the sweep has fewer trials)."""
    slots = max(1, min(sweep.concurrency, sweep.total_trials()))
    gpus = sweep.gpus_per_trial
    per_worker = math.floor(1 / gpus + 1e-9) if 0 < gpus < 1 else 1  # fractional GPUs share one device
    per_worker = min(per_worker, slots)
    return WorkerLayout(
        replicas=math.ceil(slots / per_worker),
        trials_per_worker=per_worker,
        cpus=sweep.cpus_per_trial * per_worker,
        gpus=math.ceil(gpus * per_worker - 1e-9) if gpus else 0,
        memory=scale_quantity(memory_per_trial, per_worker),
    )


def entrypoint(workspace_mount: str) -> str:
    """The RayJob's command line: the sweep driver reading its spec from ``SPEC_ENV``; no user text."""
    return shlex.join(["python", "-m", "workflow_compiler.sweep", "--spec-env", SPEC_ENV,
                       "--root", workspace_mount, "--no-progress", "--json"])


def runtime_env_yaml(spec: RunSpec) -> str:
    """``runtimeEnvYAML``: the RunSpec as JSON (no ``{{`` possible) in one environment variable."""
    return dump_yaml({"env_vars": {SPEC_ENV: argo_safe_json(spec.model_dump(mode="json"))}},
                     default_flow_style=False, width=NO_WRAP)


def _container(plan: RayJobPlan, role: str, resources: dict[str, Any]) -> dict[str, Any]:
    shared = copy.deepcopy(plan.pod)  # no object shared between pods, or the YAML would hold anchors
    container: dict[str, Any] = {
        "name": f"ray-{role}", "image": plan.image, "env": shared.container_env([{"name": k, "value": v} for k, v in plan.env.items()]),
        "resources": resources, "workingDir": plan.cluster.workspace_mount, "volumeMounts": [dict(v) for v in shared.mounts]}
    if shared.env_from:
        container["envFrom"] = [dict(e) for e in shared.env_from]
    if shared.image_pull_policy:
        container["imagePullPolicy"] = shared.image_pull_policy
    if shared.container_security_context:
        container["securityContext"] = dict(shared.container_security_context)
    return container


def _pod(plan: RayJobPlan, role: str, resources: dict[str, Any], pool: Pool | None, gpus: int) -> dict[str, Any]:
    shared = copy.deepcopy(plan.pod)
    pod: dict[str, Any] = {"containers": [_container(plan, role, resources)], "volumes": [dict(v) for v in shared.volumes]}
    if plan.cluster.service_account:
        pod["serviceAccountName"] = plan.cluster.service_account
    if shared.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in shared.image_pull_secrets]
    if shared.pod_security_context:
        pod["securityContext"] = dict(shared.pod_security_context)
    if pool is not None:  # GPU pods go where their pool says; CPU pods may follow the notebook's pod
        selector, tolerations = dict(pool.node_selector), [t.to_k8s() for t in pool.tolerations]
    else:
        selector, tolerations = (shared.cpu_node_selector, shared.cpu_tolerations) if not gpus else ({}, [])
    if selector:
        pod["nodeSelector"] = dict(selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    if shared.affinity:
        pod["affinity"] = shared.affinity
    return {"metadata": {"labels": dict(plan.labels)}, "spec": pod}


def rayjob_manifest(plan: RayJobPlan) -> dict[str, Any]:
    """The RayJob that runs ``plan.spec``'s sweep on a Ray cluster of its own."""
    sweep = plan.spec.sweep
    if sweep is None:
        raise CompileError("a RayJob runs a sweep; the spec has no 'sweep' section.")
    layout = worker_layout(sweep, plan.spec.resources.memory)
    gpu_resource = plan.pool.gpu_resource if plan.pool is not None else DEFAULT_GPU_RESOURCE
    head = _pod(plan, "head", container_resources(HEAD_CPU, HEAD_MEMORY, 0, gpu_resource, plan.cluster), None, 0)
    worker_resources = container_resources(layout.cpus, layout.memory, layout.gpus, gpu_resource, plan.cluster)
    worker = _pod(plan, "worker", worker_resources, plan.pool, layout.gpus)
    spec: dict[str, Any] = {
        "entrypoint": entrypoint(plan.cluster.workspace_mount),
        "runtimeEnvYAML": runtime_env_yaml(plan.spec),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": plan.cluster.ttl_seconds_after_finished
        if plan.cluster.ttl_seconds_after_finished is not None else DEFAULT_TTL_SECONDS,
        "rayClusterSpec": {
            "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": head},
            "workerGroupSpecs": [{
                "groupName": WORKER_GROUP, "replicas": layout.replicas, "minReplicas": layout.replicas,
                "maxReplicas": layout.replicas, "template": worker,
                # Ray's own count of each pod's resources; Tune packs trials by these numbers.
                "rayStartParams": {"num-cpus": str(math.ceil(layout.cpus)), "num-gpus": str(layout.gpus)},
            }],
        },
    }
    if sweep.time_budget_s:
        spec["activeDeadlineSeconds"] = sweep.time_budget_s + DEADLINE_MARGIN_SECONDS
    return {"apiVersion": API_VERSION, "kind": "RayJob",
            "metadata": {"generateName": "nbscale-sweep-", "labels": dict(plan.labels)}, "spec": spec}
