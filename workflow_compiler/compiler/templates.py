"""One builder per kind of Argo template the compiler emits.

``notebook_template`` runs one notebook through the step entrypoint; ``open_parent_template`` and
``close_parent_template`` bracket a pipeline (or a fan-out sweep) with its parent MLflow run;
``rayjob_template`` creates the KubeRay RayJob of a sweep. A new kind is one more function here
and one more case in ``workflow.py``.

Every user-supplied string reaches a template only inside ``StepConfig.to_arg()`` or a parameter
value from ``argo_safe_json``; the ``{{...}}`` expressions below are the only ones written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..cluster import ClusterConfig
from ..pools import DEFAULT_GPU_RESOURCE, Pool
from ..spec import Resources
from ..stepconfig import StepConfig
from .manifest import ApiObject, compact, parameter
from .podspec import PodSettings

#: The command every step runs; installed in the single-user image (and locally by setup.py).
STEP_COMMAND = "nbscale-step"
OUTPUT_DIR = "/nbscale/outputs"
OUTPUTS_VOLUME = "outputs"
PARENT_TASK = "mlflow-parent"
PARENT_RUN_ID = "run-id"
PARENT_RUN_ID_GLOBAL = "mlflow-parent-run-id"
PARENT_RUN_INPUT = "parent-run-id"
OPEN_PARENT_TEMPLATE = "open-parent-run"
CLOSE_PARENT_TEMPLATE = "close-parent-run"
#: What the small helper steps (open/close the parent run) ask for: enough to import mlflow.
HELPER_RESOURCES = Resources(cpu=0.1, memory="512Mi", gpus=0, pool=None)
SWEEP_TEMPLATE = "sweep"
#: KubeRay's ``status.jobDeploymentStatus`` and ``status.jobStatus`` in Argo's label-selector syntax
#: (requirements joined by ',' must all hold; ``!=`` also holds for a missing field). KubeRay ends a
#: RayJob Complete (job SUCCEEDED, STOPPED or FAILED), Failed (job FAILED, or any job status once
#: activeDeadlineSeconds passes) or ValidationFailed (no job at all). Suspended, while Kueue
#: holds it in the queue, matches neither, so the step keeps waiting.
RAYJOB_SUCCESS = "status.jobDeploymentStatus == Complete, status.jobStatus == SUCCEEDED"
RAYJOB_FAILURE = "status.jobDeploymentStatus in (Complete, Failed, ValidationFailed), status.jobStatus != SUCCEEDED"


@dataclass(frozen=True)
class NotebookTemplatePlan:
    """Everything one notebook container template is made of."""

    name: str
    config: StepConfig
    parameters: list[str]
    resources: Resources
    image: str
    pool: Pool | None = None
    retries: int = 0
    timeout_seconds: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    parent_run: bool = False


def cpu_quantity(cores: float) -> str:
    """CPU cores as a Kubernetes quantity: ``2`` or ``500m`` (rounded up to whole millicores)."""
    if float(cores).is_integer():
        return str(int(cores))
    return f"{max(1, math.ceil(round(cores * 1000, 6)))}m"


def container_resources(cpus: float, memory: str, gpus: int, gpu_resource: str, cluster: ClusterConfig) -> ApiObject:
    """Requests for CPU and memory; limits for memory, GPUs (``gpu_resource``) and, if the cluster says so, CPU."""
    cpu = cpu_quantity(cpus)
    limits = {"memory": memory}
    if cluster.limit_cpu:
        limits["cpu"] = cpu
    if gpus:
        limits[gpu_resource] = str(gpus)
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}


def resource_requirements(resources: Resources, pool: Pool | None, cluster: ClusterConfig) -> ApiObject:
    """A step's ``container_resources``: GPUs under the pool's resource name."""
    gpu_resource = pool.gpu_resource if pool is not None else DEFAULT_GPU_RESOURCE
    return container_resources(resources.cpu, resources.memory, resources.gpus, gpu_resource, cluster)


def step_env(cluster: ClusterConfig, pod: PodSettings) -> list[ApiObject]:
    """Environment of every step container: the captured pod's, then nbscale's own (which wins)."""
    own = [{"name": "NBSCALE_WORKFLOW_NAME", "value": "{{workflow.name}}"}]
    if cluster.mlflow_tracking_uri:
        own.insert(0, {"name": "MLFLOW_TRACKING_URI", "value": cluster.mlflow_tracking_uri})
    return pod.container_env(own)


def pod_fields(pod: PodSettings) -> ApiObject:
    """Container fields every pod takes from the captured environment (none without one)."""
    return compact({"imagePullPolicy": pod.image_pull_policy, "envFrom": pod.env_from or None,
                    "securityContext": pod.container_security_context or None})


def _placement(plan: NotebookTemplatePlan, pod: PodSettings) -> ApiObject:
    """GPU steps (and steps naming a pool) go where their pool says; CPU steps may follow the notebook's pod."""
    pool = plan.pool
    if pool is not None:
        selector, tolerations = dict(pool.node_selector), [t.to_k8s() for t in pool.tolerations]
    elif plan.resources.gpus == 0:
        selector, tolerations = pod.cpu_node_selector, pod.cpu_tolerations
    else:
        selector, tolerations = {}, []
    return compact({"nodeSelector": selector or None, "tolerations": tolerations or None, "affinity": pod.affinity or None})


def _outputs_volume() -> tuple[list[ApiObject], list[ApiObject]]:
    return [{"name": OUTPUTS_VOLUME, "emptyDir": {}}], [{"name": OUTPUTS_VOLUME, "mountPath": OUTPUT_DIR}]


def _artifact(name: str, filename: str, cluster: ClusterConfig) -> ApiObject:
    # optional: a run that fails before writing its outputs should fail for its own reason
    return compact({"name": name, "path": f"{OUTPUT_DIR}/{filename}", "optional": True,
                    "archive": None if cluster.archive_artifacts else {"none": {}}})


def _step_container(image: str, args: list[str], resources: Resources, cluster: ClusterConfig, pod: PodSettings,
                    *, mounts: list[ApiObject] | None = None, pool: Pool | None = None, working_dir: str | None = None) -> ApiObject:
    """The ``container`` of a template that runs ``nbscale-step`` with ``args``."""
    return compact({"image": image, "command": [STEP_COMMAND], "args": args, "env": step_env(cluster, pod),
                    "resources": resource_requirements(resources, pool, cluster), "volumeMounts": mounts,
                    "workingDir": working_dir, **pod_fields(pod)})


def notebook_template(plan: NotebookTemplatePlan, cluster: ClusterConfig, pod: PodSettings) -> ApiObject:
    """The container template that executes one notebook with ``nbscale-step run``."""
    args = ["run", "--config", plan.config.to_arg(), "--output-dir", OUTPUT_DIR]
    for name in plan.parameters:
        args += ["--parameter", f"{name}={{{{inputs.parameters.{name}}}}}"]
    inputs = [parameter(name) for name in plan.parameters]
    if plan.parent_run:
        args += ["--parent-run-id", f"{{{{inputs.parameters.{PARENT_RUN_INPUT}}}}}"]
        inputs.append(parameter(PARENT_RUN_INPUT))
    artifacts = [_artifact("notebook", "output.ipynb", cluster)]
    if plan.config.html:
        artifacts.append(_artifact("html", "output.html", cluster))
    volumes, mounts = _outputs_volume()
    container = _step_container(plan.image, args, plan.resources, cluster, pod, mounts=[*pod.mounts, *mounts],
                                pool=plan.pool, working_dir=cluster.workspace_mount)
    return compact({
        "name": plan.name,
        "metadata": {"labels": plan.labels} if plan.labels else None,
        "container": container,
        "inputs": {"parameters": inputs} if inputs else None,
        "outputs": {"artifacts": artifacts},
        "volumes": volumes,
        "retryStrategy": {"limit": plan.retries} if plan.retries else None,
        "activeDeadlineSeconds": plan.timeout_seconds or None,
        **_placement(plan, pod),
    })


def open_parent_template(config: StepConfig, image: str, cluster: ClusterConfig, pod: PodSettings) -> ApiObject:
    """Opens the pipeline's parent MLflow run; its id becomes the global output ``mlflow-parent-run-id``."""
    volumes, mounts = _outputs_volume()
    args = ["open-parent", "--config", config.to_arg(), "--output-dir", OUTPUT_DIR]
    output = {"name": PARENT_RUN_ID, "valueFrom": {"path": f"{OUTPUT_DIR}/{PARENT_RUN_ID}"}, "globalName": PARENT_RUN_ID_GLOBAL}
    return {"name": OPEN_PARENT_TEMPLATE, "container": _step_container(image, args, HELPER_RESOURCES, cluster, pod, mounts=mounts),
            "outputs": {"parameters": [output]}, "volumes": volumes}


def close_parent_template(image: str, cluster: ClusterConfig, pod: PodSettings) -> ApiObject:
    """The exit handler: ends the parent MLflow run with the workflow's status."""
    args = ["close-parent", "--run-id", f"{{{{workflow.outputs.parameters.{PARENT_RUN_ID_GLOBAL}}}}}",
            "--workflow-status", "{{workflow.status}}"]
    return {"name": CLOSE_PARENT_TEMPLATE, "container": _step_container(image, args, HELPER_RESOURCES, cluster, pod)}


def rayjob_template(manifest: str) -> ApiObject:
    """Creates the sweep's RayJob (owned by the Workflow, so deleted with it) and waits for its job status."""
    return {"name": SWEEP_TEMPLATE, "resource": {"action": "create", "manifest": manifest, "setOwnerReference": True,
                                                 "successCondition": RAYJOB_SUCCESS, "failureCondition": RAYJOB_FAILURE}}


def task_arguments(names: dict[str, str]) -> list[ApiObject]:
    """DAG task arguments: input name → the expression (written by the compiler) that feeds it."""
    return [parameter(name, value) for name, value in names.items()]
