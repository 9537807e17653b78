"""Spec → Argo Workflow: one function per kind of spec, sharing the workflow shell.

The shape is the contract in docs/DESIGN.md ("The compiled Workflow and the step command line"):
a ``dag`` template ``main`` whose tasks feed workflow parameters into container templates that run
``nbscale-step``. Built with hera's ``Workflow``, whose ``to_dict()`` gives the manifest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hera.workflows import DAG, Parameter, Task, Workflow
from hera.workflows import models as m

from ..cluster import ClusterConfig, load_cluster_config
from ..errors import CompileError, NotebookError
from ..paths import resolve_notebook_path
from ..podenv import PodEnvironment
from ..pools import PoolConfig, load_pools
from ..spec import NotebookStep, PipelineSpec, RunSpec
from ..stepconfig import StepConfig, argo_safe_json
from . import templates as t
from .naming import generate_name, label_value, notebook_label
from .podspec import PodSettings, effective_cluster, pod_settings
from .queueing import QUEUE_LABEL, resolve_queue

Spec = RunSpec | PipelineSpec
LABEL_USER = "nbscale.io/user"
LABEL_NOTEBOOK = "nbscale.io/notebook"
LABEL_KIND = "nbscale.io/kind"
LABEL_PIPELINE = "nbscale.io/pipeline"
LABEL_STEP = "nbscale.io/step"
#: Set by the executor on the Workflow it creates (the compiler does not know the run id).
LABEL_RUN_ID = "nbscale.io/run-id"
#: MLflow tag naming the pipeline, on the parent run and on every step's run.
PIPELINE_TAG = "nbscale.pipeline"
SINGLE_TASK = "notebook"

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


def compile_workflow(
    spec: Spec,
    *,
    cluster: ClusterConfig | None = None,
    pools: PoolConfig | None = None,
    notebook_root: Path | None = None,
    fanout: bool | None = None,
    hub_queue: str | None = None,
    pod_env: PodEnvironment | None = None,
) -> dict[str, Any]:
    """Compile a run, sweep or pipeline spec into an Argo ``Workflow`` manifest (a plain dict).

    Deterministic: the same inputs give the same manifest (``generateName`` leaves naming to the
    server). ``cluster`` and ``pools`` default to ``load_cluster_config()`` and ``load_pools()``.
    With ``notebook_root`` the notebooks are read to record their sha256; nothing else is read.
    A RunSpec with ``sweep`` becomes a KubeRay RayJob, or with ``fanout`` (default: the cluster
    config's ``sweep_fanout``) Argo ``withItems`` fan-out of a grid; see ``compiler/sweep.py``.
    ``hub_queue`` (the user's hub quota group, looked up by the caller) is the Kueue LocalQueue
    when neither the spec nor the cluster config names one; see ``compiler/queueing.py``.
    ``pod_env`` (captured from the user's pod by the caller, ``podenv.py``) gives every pod the
    user's image, volumes, env and uid; without it the cluster config's image and claim apply.
    Raises ``CompileError`` (unknown pool, bad image, unusable names) or ``NotebookError``.
    """
    cluster = cluster or load_cluster_config()
    if not isinstance(spec, RunSpec | PipelineSpec):
        raise CompileError(f"cannot compile a {type(spec).__name__}; expected a RunSpec or PipelineSpec.")
    pod = pod_settings(cluster, pod_env, spec.user)
    cluster = effective_cluster(cluster, pod_env)
    context = CompileContext(cluster, pools or load_pools(), notebook_root, pod,
                             fanout=cluster.sweep_fanout if fanout is None else fanout,
                             queue=resolve_queue(spec.queue, cluster, hub_queue))
    for applies, builder in _BUILDERS:
        if applies(spec, context):
            return builder(spec, context).to_dict()
    raise CompileError(f"cannot compile a {type(spec).__name__}; expected a RunSpec or PipelineSpec.")


def compile_run(spec: RunSpec, context: CompileContext) -> Workflow:
    """A single notebook run: one DAG task ``notebook``; workflow parameters named as in the notebook."""
    spec = with_notebook_defaults(spec, context.notebook_root)
    plan = _notebook_plan(spec, context, name=SINGLE_TASK, user=spec.user, tags=spec.tracking.tags,
                          experiment=spec.experiment, html=spec.outputs.html)
    task = Task(name=SINGLE_TASK, template=SINGLE_TASK,
                arguments=t.task_arguments({p: f"{{{{workflow.parameters.{p}}}}}" for p in spec.parameters}) or None)
    labels = {LABEL_USER: label_value(spec.user), LABEL_NOTEBOOK: notebook_label(spec.notebook), LABEL_KIND: "run"}
    return _workflow(
        PurePosixPath(spec.notebook).stem, labels, context,
        arguments=_workflow_parameters({p: (p, v) for p, v in spec.parameters.items()}),
        templates=[DAG(name="main", tasks=[task]), t.notebook_template(plan, context.cluster, context.pod)],
    )


def compile_pipeline(spec: PipelineSpec, context: CompileContext) -> Workflow:
    """A pipeline: a parent MLflow run, then one task per step in dependency order, then the exit handler."""
    tags = {**spec.tracking.tags, PIPELINE_TAG: spec.name}
    image = _image(None, context.cluster)
    parent = StepConfig(notebook="", experiment=spec.experiment, user=spec.user, tags=tags,
                        html=spec.outputs.html, image=image, step=None)
    tasks: list[Task | m.DAGTask] = [Task(name=t.PARENT_TASK, template=t.OPEN_PARENT_TEMPLATE)]
    templates: list[Any] = [t.open_parent_template(parent, image, context.cluster, context.pod)]
    values: dict[str, tuple[str, Any]] = {}
    for step in spec.order():
        _check_task_name(step.name)
        step = with_notebook_defaults(step, context.notebook_root)
        template_name = f"notebook-{step.name}"
        plan = _notebook_plan(step, context, name=template_name, user=spec.user, tags=tags, experiment=spec.experiment,
                              html=spec.outputs.html, step_name=step.name, parent_run=True)
        feeds = {p: f"{{{{workflow.parameters.{step.name}-{p}}}}}" for p in step.parameters}
        feeds[t.PARENT_RUN_INPUT] = f"{{{{tasks.{t.PARENT_TASK}.outputs.parameters.{t.PARENT_RUN_ID}}}}}"
        tasks.append(Task(name=step.name, template=template_name, arguments=t.task_arguments(feeds),
                          dependencies=[t.PARENT_TASK, *dict.fromkeys(step.after)]))
        templates.append(t.notebook_template(plan, context.cluster, context.pod))
        values.update({f"{step.name}-{p}": (p, v) for p, v in step.parameters.items()})
    templates.append(t.close_parent_template(image, context.cluster, context.pod))
    labels = {LABEL_USER: label_value(spec.user), LABEL_PIPELINE: label_value(spec.name), LABEL_KIND: "pipeline"}
    return _workflow(spec.name, labels, context, arguments=_workflow_parameters(values),
                     templates=[DAG(name="main", tasks=tasks), *templates], on_exit=t.CLOSE_PARENT_TEMPLATE)


def with_notebook_defaults(step: Any, notebook_root: Path | None) -> Any:
    """``step`` (a RunSpec or pipeline step) with every notebook parameter: the given values, and the
    notebook's defaults for the rest, so that ``argo submit -p NAME=VALUE`` can set any of them.

    Read only with ``notebook_root``. A default that is not a literal (``os.environ["X"]``) has no
    value to emit, so it stays the notebook's own unless given.
    """
    if notebook_root is None:
        return step
    from ..inspection import inspect_notebook

    path, _ = resolve_notebook_path(step.notebook, notebook_root)
    values: dict[str, Any] = {}
    for info in inspect_notebook(path).parameters:  # in the notebook's order
        if info.name in step.parameters:
            values[info.name] = step.parameters[info.name]
        elif info.default is not None or info.default_source.strip() == "None":
            values[info.name] = info.default
    return step.model_copy(update={"parameters": {**values, **step.parameters}})


def _workflow(name: str, labels: dict[str, str], context: CompileContext, *,
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


def _notebook_plan(step: NotebookStep, context: CompileContext, *, name: str, user: str, tags: dict[str, str],
                   experiment: str, html: bool, step_name: str | None = None, **kw: Any) -> t.NotebookTemplatePlan:
    image = _image(step.image, context.cluster)
    config = StepConfig(notebook=step.notebook, experiment=experiment, user=user, tags=tags, html=html,
                        notebook_sha256=_notebook_sha256(step.notebook, context.notebook_root), step=step_name,
                        image=image, timeout_seconds=step.timeout_seconds)
    for parameter in step.parameters:
        _check_parameter_name(parameter, step_name)
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


def _workflow_parameters(values: dict[str, tuple[str, Any]]) -> list[Parameter]:
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


def _check_parameter_name(name: str, step: str | None) -> None:
    if not _ARGO_PARAMETER.fullmatch(name):
        where = f" in step {step!r}" if step else ""
        raise CompileError(
            f"parameter {name!r}{where} cannot be an Argo parameter: use ASCII letters, digits and '_'.",
            errors=[{"loc": ["parameters", name], "msg": "not an ASCII identifier"}],
        )


def _check_task_name(name: str) -> None:
    if name == t.PARENT_TASK:
        raise CompileError(f"the step name {name!r} is reserved for the pipeline's parent run; rename the step.")
    if name[0].isdigit():
        raise CompileError(f"step {name!r}: Argo DAG task names cannot start with a digit; rename it, e.g. 'step-{name}'.",
                           errors=[{"loc": ["steps", name, "name"], "msg": "starts with a digit"}])


def _image(image: str | None, cluster: ClusterConfig) -> str:
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


def _is_sweep(spec: Spec) -> bool:
    return isinstance(spec, RunSpec) and spec.sweep is not None


# The sweep builders use the helpers above, hence this import at the end (compiler/__init__ imports this module first).
from .sweep import compile_sweep_fanout, compile_sweep_rayjob  # noqa: E402

#: (does it apply, builder), first match wins.
_BUILDERS: list[tuple[Callable[[Spec, CompileContext], bool], Callable[[Any, CompileContext], Workflow]]] = [
    (lambda spec, context: _is_sweep(spec) and context.fanout, compile_sweep_fanout),
    (lambda spec, context: _is_sweep(spec), compile_sweep_rayjob),
    (lambda spec, context: isinstance(spec, RunSpec), compile_run),
    (lambda spec, context: isinstance(spec, PipelineSpec), compile_pipeline),
]
