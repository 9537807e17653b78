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
from typing import Any

from hera.workflows import Container, Parameter, Resource
from hera.workflows import models as m

from ..cluster import ClusterConfig
from ..pools import Pool
from ..spec import Resources
from ..stepconfig import StepConfig
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


def resource_requirements(resources: Resources, pool: Pool | None, cluster: ClusterConfig) -> m.ResourceRequirements:
    """Requests for CPU and memory; limits for memory, GPUs (the pool's resource name) and optionally CPU."""
    cpu = cpu_quantity(resources.cpu)
    requests = {"cpu": m.Quantity(cpu), "memory": m.Quantity(resources.memory)}
    limits = {"memory": m.Quantity(resources.memory)}
    if cluster.limit_cpu:
        limits["cpu"] = m.Quantity(cpu)
    if resources.gpus:
        resource = pool.gpu_resource if pool is not None else "nvidia.com/gpu"
        limits[resource] = m.Quantity(str(resources.gpus))
    return m.ResourceRequirements(requests=requests, limits=limits)


def step_env(cluster: ClusterConfig, pod: PodSettings) -> list[m.EnvVar]:
    """Environment of every step container: the captured pod's, then nbscale's own (which wins)."""
    own = [{"name": "NBSCALE_WORKFLOW_NAME", "value": "{{workflow.name}}"}]
    if cluster.mlflow_tracking_uri:
        own.insert(0, {"name": "MLFLOW_TRACKING_URI", "value": cluster.mlflow_tracking_uri})
    return [m.EnvVar.model_validate(e) for e in pod.container_env(own)]


def pod_fields(pod: PodSettings) -> dict[str, Any]:
    """Container template fields every pod takes from the captured environment (none without one)."""
    return {
        "image_pull_policy": pod.image_pull_policy,
        "env_from": [m.EnvFromSource.model_validate(e) for e in pod.env_from] or None,
        "security_context": m.SecurityContext.model_validate(pod.container_security_context)
        if pod.container_security_context else None,
    }


def _placement(plan: NotebookTemplatePlan, pod: PodSettings) -> dict[str, Any]:
    """GPU steps (and steps naming a pool) go where their pool says; CPU steps may follow the notebook's pod."""
    pool = plan.pool
    if pool is not None:
        selector, tolerations = dict(pool.node_selector), [t.to_k8s() for t in pool.tolerations]
    elif plan.resources.gpus == 0:
        selector, tolerations = pod.cpu_node_selector, pod.cpu_tolerations
    else:
        selector, tolerations = {}, []
    return {"node_selector": dict(selector) or None, "tolerations": [m.Toleration.model_validate(t) for t in tolerations] or None,
            "affinity": m.Affinity.model_validate(pod.affinity) if pod.affinity else None}


def _outputs_volume() -> tuple[list[m.Volume], list[m.VolumeMount]]:
    return ([m.Volume(name=OUTPUTS_VOLUME, empty_dir=m.EmptyDirVolumeSource())],
            [m.VolumeMount(name=OUTPUTS_VOLUME, mount_path=OUTPUT_DIR)])


def _artifact(name: str, filename: str, cluster: ClusterConfig) -> m.Artifact:
    # optional: a run that fails before writing its outputs should fail for its own reason
    archive = None if cluster.archive_artifacts else m.ArchiveStrategy(none=m.NoneStrategy())
    return m.Artifact(name=name, path=f"{OUTPUT_DIR}/{filename}", optional=True, archive=archive)


def notebook_template(plan: NotebookTemplatePlan, cluster: ClusterConfig, pod: PodSettings) -> Container:
    """The container template that executes one notebook with ``nbscale-step run``."""
    args = ["run", "--config", plan.config.to_arg(), "--output-dir", OUTPUT_DIR]
    for name in plan.parameters:
        args += ["--parameter", f"{name}={{{{inputs.parameters.{name}}}}}"]
    inputs = [Parameter(name=name) for name in plan.parameters]
    if plan.parent_run:
        args += ["--parent-run-id", f"{{{{inputs.parameters.{PARENT_RUN_INPUT}}}}}"]
        inputs.append(Parameter(name=PARENT_RUN_INPUT))
    artifacts = [_artifact("notebook", "output.ipynb", cluster)]
    if plan.config.html:
        artifacts.append(_artifact("html", "output.html", cluster))
    volumes, mounts = _outputs_volume()
    return Container(
        name=plan.name,
        image=plan.image,
        command=[STEP_COMMAND],
        args=args,
        inputs=inputs or None,
        outputs=artifacts,
        env=step_env(cluster, pod),
        working_dir=cluster.workspace_mount,
        resources=resource_requirements(plan.resources, plan.pool, cluster),
        volumes=volumes,
        volume_mounts=[*(m.VolumeMount.model_validate(v) for v in pod.mounts), *mounts],
        retry_strategy=m.RetryStrategy(limit=m.IntOrString(plan.retries)) if plan.retries else None,
        active_deadline_seconds=plan.timeout_seconds,
        labels=plan.labels or None,
        **_placement(plan, pod),
        **pod_fields(pod),
    )


def open_parent_template(config: StepConfig, image: str, cluster: ClusterConfig, pod: PodSettings) -> Container:
    """Opens the pipeline's parent MLflow run; its id becomes the global output ``mlflow-parent-run-id``."""
    volumes, mounts = _outputs_volume()
    return Container(
        name=OPEN_PARENT_TEMPLATE,
        image=image,
        command=[STEP_COMMAND],
        args=["open-parent", "--config", config.to_arg(), "--output-dir", OUTPUT_DIR],
        outputs=[Parameter(name=PARENT_RUN_ID, value_from=m.ValueFrom(path=f"{OUTPUT_DIR}/{PARENT_RUN_ID}"),
                           global_name=PARENT_RUN_ID_GLOBAL)],
        env=step_env(cluster, pod),
        resources=resource_requirements(HELPER_RESOURCES, None, cluster),
        volumes=volumes,
        volume_mounts=mounts,
        **pod_fields(pod),
    )


def close_parent_template(image: str, cluster: ClusterConfig, pod: PodSettings) -> Container:
    """The exit handler: ends the parent MLflow run with the workflow's status."""
    return Container(
        name=CLOSE_PARENT_TEMPLATE,
        image=image,
        command=[STEP_COMMAND],
        args=["close-parent", "--run-id", f"{{{{workflow.outputs.parameters.{PARENT_RUN_ID_GLOBAL}}}}}",
              "--workflow-status", "{{workflow.status}}"],
        env=step_env(cluster, pod),
        resources=resource_requirements(HELPER_RESOURCES, None, cluster),
        **pod_fields(pod),
    )


def rayjob_template(manifest: str) -> Resource:
    """Creates the sweep's RayJob (owned by the Workflow, so deleted with it) and waits for its job status."""
    return Resource(name=SWEEP_TEMPLATE, action="create", manifest=manifest, set_owner_reference=True,
                    success_condition=RAYJOB_SUCCESS, failure_condition=RAYJOB_FAILURE)


def task_arguments(names: dict[str, str]) -> list[Parameter]:
    """DAG task arguments: input name → the expression (written by the compiler) that feeds it."""
    return [Parameter(name=name, value=value) for name, value in names.items()]


