"""The workflow shell every compiled Workflow shares, and the pieces of it each builder uses.

``workflow_shell`` gives the metadata, volumes, pod GC and service account; ``notebook_plan`` the
plan of one notebook container; ``workflow_parameters`` the JSON-encoded workflow arguments. The
builders (``workflow.py`` for runs and pipelines, ``sweep.py`` for sweeps) import this module; it
imports neither of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cluster import ClusterConfig
from ..errors import CompileError, NotebookError
from ..inspection import notebook_sha256
from ..paths import resolve_notebook_path
from ..pools import PoolConfig
from ..spec import NotebookStep
from ..stepconfig import StepConfig, argo_safe_json
from . import templates as t
from .manifest import WORKFLOW_API_VERSION, ApiObject, compact, parameter
from .naming import LABEL_KIND, LABEL_NOTEBOOK, LABEL_STEP, LABEL_USER, generate_name, label_value, notebook_label
from .podspec import PodSettings
from .queueing import QUEUE_LABEL

# Argo accepts only these parameter names; Python allows non-ASCII identifiers too.
_ARGO_PARAMETER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A container image reference: [host[:port]/]path[:tag][@digest], without spaces or braces.
_IMAGE = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)


@dataclass(frozen=True)
class CompileContext:
    """What every builder needs besides the spec."""

    cluster: ClusterConfig
    pools: PoolConfig
    notebook_root: Path | None
    pod: PodSettings
    fanout: bool = False
    queue: str | None = None


def workflow_shell(name: str, labels: dict[str, str], context: CompileContext, *,
                   arguments: list[ApiObject], templates: list[ApiObject], on_exit: str | None = None,
                   active_deadline_seconds: int | None = None) -> ApiObject:
    """The shell every compiled workflow shares: metadata, volumes, podGC, service account."""
    cluster, pod = context.cluster, context.pod
    pod_labels = {k: v for k, v in labels.items() if k in (LABEL_USER, LABEL_KIND)}
    repository = cluster.artifact_repository_ref
    spec = compact({
        "arguments": {"parameters": arguments} if arguments else None,
        "entrypoint": "main",
        "onExit": on_exit,
        "activeDeadlineSeconds": active_deadline_seconds,
        "serviceAccountName": cluster.service_account,
        "imagePullSecrets": [{"name": s} for s in pod.image_pull_secrets] or None,
        "securityContext": pod.pod_security_context or None,
        "podGC": {"strategy": cluster.pod_gc_strategy},
        "podMetadata": {"labels": pod_labels},
        "artifactRepositoryRef": compact({"configMap": repository.get("configMap"), "key": repository.get("key")})
        if repository else None,
        "ttlStrategy": {"secondsAfterCompletion": cluster.ttl_seconds_after_finished}
        if cluster.ttl_seconds_after_finished is not None else None,
        "templates": templates,
        "volumes": pod.volumes or None,
    })
    metadata = compact({"generateName": generate_name(name), "namespace": cluster.namespace, "labels": labels})
    return {"apiVersion": WORKFLOW_API_VERSION, "kind": "Workflow", "metadata": metadata, "spec": spec}


def notebook_plan(step: NotebookStep, context: CompileContext, *, name: str, user: str, tags: dict[str, str],
                  experiment: str, html: bool, step_name: str | None = None, **kw: Any) -> t.NotebookTemplatePlan:
    """The plan of one notebook container template: its step config, checked parameters, image, pool and labels."""
    image = checked_image(step.image, context.cluster)
    config = StepConfig(notebook=step.notebook, experiment=experiment, user=user, tags=tags, html=html,
                        notebook_sha256=_notebook_sha256(step.notebook, context.notebook_root), step=step_name,
                        image=image, timeout_seconds=step.timeout_seconds)
    for parameter_name in step.parameters:
        check_parameter_name(parameter_name, step_name)
    labels = {LABEL_NOTEBOOK: notebook_label(step.notebook)}
    if step_name is not None:
        labels[LABEL_STEP] = label_value(step_name)
    if context.queue is not None:
        labels[QUEUE_LABEL] = context.queue
    return t.NotebookTemplatePlan(
        name=name, config=config, parameters=list(step.parameters), resources=step.resources, image=image,
        pool=context.pools.resolve(step.resources.pool, step.resources.gpus), retries=step.retries,
        timeout_seconds=step.timeout_seconds, labels=labels, **kw,
    )


def workflow_parameters(values: dict[str, tuple[str, Any]]) -> list[ApiObject]:
    """Workflow ``arguments.parameters``: each value JSON-encoded with no ``{{`` possible."""
    parameters = []
    for argo_name, (name, value) in values.items():
        try:
            encoded = argo_safe_json(value)
        except (TypeError, ValueError) as exc:
            raise CompileError(f"parameter {name!r} cannot be sent as JSON: {exc}",
                               errors=[{"loc": ["parameters", name], "msg": str(exc)}]) from None
        parameters.append(parameter(argo_name, encoded))
    return parameters


def check_parameter_name(name: str, step: str | None) -> None:
    """Refuse a parameter name Argo cannot carry (``step``: the pipeline step it belongs to, for the message)."""
    if not _ARGO_PARAMETER.fullmatch(name):
        where = f" in step {step!r}" if step else ""
        raise CompileError(
            f"parameter {name!r}{where} cannot be an Argo parameter: use ASCII letters, digits and '_'.",
            errors=[{"loc": ["parameters", name], "msg": "not an ASCII identifier"}],
        )


def checked_image(image: str | None, cluster: ClusterConfig) -> str:
    """``image`` (or the cluster's default) when it is a container image reference; CompileError otherwise."""
    chosen = image or cluster.default_image
    if not _IMAGE.fullmatch(chosen):
        raise CompileError(f"{chosen!r} is not a container image reference like registry.example.com/team/image:tag.",
                           errors=[{"loc": ["image"], "msg": "not an image reference"}])
    return chosen


def _notebook_sha256(notebook: str, root: Path | None) -> str:
    if root is None:
        return ""
    path, _ = resolve_notebook_path(notebook, root)
    try:
        return notebook_sha256(path)  # the bytes the spec's inspection read, when the file has not changed since
    except OSError as exc:
        raise NotebookError(f"{notebook}: cannot read the notebook to hash it ({exc.strerror}).", path=notebook,
                            http_status=404 if isinstance(exc, FileNotFoundError) else 400) from None
