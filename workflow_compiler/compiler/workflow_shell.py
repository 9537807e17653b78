"""The workflow shell every compiled Workflow shares, and the pieces of it each builder uses.

``workflow_shell`` gives the metadata, volumes, pod GC and service account; ``notebook_plan`` the
plan of one notebook container; ``workflow_parameters`` the JSON-encoded workflow arguments. The
builders (``workflow.py`` for runs and pipelines, ``sweep.py`` for sweeps) import this module; it
imports neither of them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hera.workflows import Parameter, Workflow
from hera.workflows import models as m

from ..cluster import ClusterConfig
from ..errors import CompileError, NotebookError
from ..paths import resolve_notebook_path
from ..pools import PoolConfig
from ..spec import NotebookStep
from ..stepconfig import StepConfig, argo_safe_json
from . import templates as t
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
                   arguments: list[Parameter], templates: list[Any], on_exit: str | None = None,
                   active_deadline_seconds: int | None = None) -> Workflow:
    """The shell every compiled workflow shares: metadata, volumes, podGC, service account."""
    cluster = context.cluster
    pod_labels = {k: v for k, v in labels.items() if k in (LABEL_USER, LABEL_KIND)}
    repository = cluster.artifact_repository_ref
    return Workflow(
        generate_name=generate_name(name),
        namespace=cluster.namespace,
        labels=labels,
        entrypoint="main",
        arguments=arguments or None,
        templates=templates,
        on_exit=on_exit,
        active_deadline_seconds=active_deadline_seconds,
        service_account_name=cluster.service_account,
        volumes=[m.Volume.model_validate(v) for v in context.pod.volumes],
        image_pull_secrets=[m.LocalObjectReference(name=s) for s in context.pod.image_pull_secrets] or None,
        security_context=m.PodSecurityContext.model_validate(context.pod.pod_security_context)
        if context.pod.pod_security_context else None,
        pod_gc=m.PodGC(strategy=cluster.pod_gc_strategy),
        pod_metadata=m.Metadata(labels=pod_labels),
        artifact_repository_ref=m.ArtifactRepositoryRef(config_map=repository.get("configMap"), key=repository.get("key"))
        if repository else None,
        ttl_strategy=m.TTLStrategy(seconds_after_completion=cluster.ttl_seconds_after_finished)
        if cluster.ttl_seconds_after_finished is not None else None,
    )


def notebook_plan(step: NotebookStep, context: CompileContext, *, name: str, user: str, tags: dict[str, str],
                  experiment: str, html: bool, step_name: str | None = None, **kw: Any) -> t.NotebookTemplatePlan:
    """The plan of one notebook container template: its step config, checked parameters, image, pool and labels."""
    image = checked_image(step.image, context.cluster)
    config = StepConfig(notebook=step.notebook, experiment=experiment, user=user, tags=tags, html=html,
                        notebook_sha256=_notebook_sha256(step.notebook, context.notebook_root), step=step_name,
                        image=image, timeout_seconds=step.timeout_seconds)
    for parameter in step.parameters:
        check_parameter_name(parameter, step_name)
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


def workflow_parameters(values: dict[str, tuple[str, Any]]) -> list[Parameter]:
    """Workflow ``arguments.parameters``: each value JSON-encoded with no ``{{`` possible."""
    parameters = []
    for argo_name, (name, value) in values.items():
        try:
            encoded = argo_safe_json(value)
        except (TypeError, ValueError) as exc:
            raise CompileError(f"parameter {name!r} cannot be sent as JSON: {exc}",
                               errors=[{"loc": ["parameters", name], "msg": str(exc)}]) from None
        parameters.append(Parameter(name=argo_name, value=encoded))
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
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise NotebookError(f"{notebook}: cannot read the notebook to hash it ({exc.strerror}).", path=notebook,
                            http_status=404 if isinstance(exc, FileNotFoundError) else 400) from None
