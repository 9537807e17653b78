"""Spec → Argo Workflow: one function per kind of spec, sharing the workflow shell (``workflow_shell.py``).

The shape is the contract in docs/DESIGN.md ("The compiled Workflow and the step command line"):
a ``dag`` template ``main`` whose tasks feed workflow parameters into container templates that run
``nbscale-step``. Built as plain dicts (``manifest.py`` says why), checked against Argo's CRD schema.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ..cluster import ClusterConfig, load_cluster_config
from ..errors import CompileError
from ..paths import resolve_notebook_path
from ..pools import PoolConfig, load_pools
from ..spec import PipelineSpec, RunSpec
from ..stepconfig import StepConfig
from . import templates as t
from .manifest import ApiObject, dag_task, dag_template, detached
from .naming import LABEL_KIND, LABEL_NOTEBOOK, LABEL_PIPELINE, LABEL_USER, label_value, notebook_label
from .podspec import effective_cluster, pod_settings
from .queueing import resolve_queue
from .sweep import compile_sweep_fanout, compile_sweep_rayjob
from .workflow_shell import CompileContext, checked_image, notebook_plan, workflow_parameters, workflow_shell

if TYPE_CHECKING:  # the captured pod's model is built only where a pod is captured
    from ..podenv import PodEnvironment

Spec = RunSpec | PipelineSpec
#: MLflow tag naming the pipeline, on the parent run and on every step's run.
PIPELINE_TAG = "nbscale.pipeline"
SINGLE_TASK = "notebook"

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
            return detached(builder(spec, context))
    raise CompileError(f"cannot compile a {type(spec).__name__}; expected a RunSpec or PipelineSpec.")


def compile_run(spec: RunSpec, context: CompileContext) -> ApiObject:
    """A single notebook run: one DAG task ``notebook``; workflow parameters named as in the notebook."""
    spec = with_notebook_defaults(spec, context.notebook_root)
    plan = notebook_plan(spec, context, name=SINGLE_TASK, user=spec.user, tags=spec.tracking.tags,
                          experiment=spec.experiment, html=spec.outputs.html)
    task = dag_task(SINGLE_TASK, SINGLE_TASK,
                    arguments=t.task_arguments({p: f"{{{{workflow.parameters.{p}}}}}" for p in spec.parameters}))
    labels = {LABEL_USER: label_value(spec.user), LABEL_NOTEBOOK: notebook_label(spec.notebook), LABEL_KIND: "run"}
    return workflow_shell(
        PurePosixPath(spec.notebook).stem, labels, context,
        arguments=workflow_parameters({p: (p, v) for p, v in spec.parameters.items()}),
        templates=[dag_template("main", [task]), t.notebook_template(plan, context.cluster, context.pod)],
    )


def compile_pipeline(spec: PipelineSpec, context: CompileContext) -> ApiObject:
    """A pipeline: a parent MLflow run, then one task per step in dependency order, then the exit handler."""
    tags = {**spec.tracking.tags, PIPELINE_TAG: spec.name}
    image = checked_image(None, context.cluster)
    parent = StepConfig(notebook="", experiment=spec.experiment, user=spec.user, tags=tags,
                        html=spec.outputs.html, image=image, step=None)
    tasks = [dag_task(t.PARENT_TASK, t.OPEN_PARENT_TEMPLATE)]
    templates = [t.open_parent_template(parent, image, context.cluster, context.pod)]
    values: dict[str, tuple[str, Any]] = {}
    for step in spec.order():
        _check_task_name(step.name)
        step = with_notebook_defaults(step, context.notebook_root)
        template_name = f"notebook-{step.name}"
        plan = notebook_plan(step, context, name=template_name, user=spec.user, tags=tags, experiment=spec.experiment,
                              html=spec.outputs.html, step_name=step.name, parent_run=True)
        feeds = {p: f"{{{{workflow.parameters.{step.name}-{p}}}}}" for p in step.parameters}
        feeds[t.PARENT_RUN_INPUT] = f"{{{{tasks.{t.PARENT_TASK}.outputs.parameters.{t.PARENT_RUN_ID}}}}}"
        tasks.append(dag_task(step.name, template_name, arguments=t.task_arguments(feeds),
                              dependencies=[t.PARENT_TASK, *dict.fromkeys(step.after)]))
        templates.append(t.notebook_template(plan, context.cluster, context.pod))
        values.update({f"{step.name}-{p}": (p, v) for p, v in step.parameters.items()})
    templates.append(t.close_parent_template(image, context.cluster, context.pod))
    labels = {LABEL_USER: label_value(spec.user), LABEL_PIPELINE: label_value(spec.name), LABEL_KIND: "pipeline"}
    return workflow_shell(spec.name, labels, context, arguments=workflow_parameters(values),
                     templates=[dag_template("main", tasks), *templates], on_exit=t.CLOSE_PARENT_TEMPLATE)


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


def _check_task_name(name: str) -> None:
    if name == t.PARENT_TASK:
        raise CompileError(f"the step name {name!r} is reserved for the pipeline's parent run; rename the step.")
    if name[0].isdigit():
        raise CompileError(f"step {name!r}: Argo DAG task names cannot start with a digit; rename it, e.g. 'step-{name}'.",
                           errors=[{"loc": ["steps", name, "name"], "msg": "starts with a digit"}])


def _is_sweep(spec: Spec) -> bool:
    return isinstance(spec, RunSpec) and spec.sweep is not None


#: (does it apply, builder), first match wins.
_BUILDERS: list[tuple[Callable[[Spec, CompileContext], bool], Callable[[Any, CompileContext], ApiObject]]] = [
    (lambda spec, context: _is_sweep(spec) and context.fanout, compile_sweep_fanout),
    (lambda spec, context: _is_sweep(spec), compile_sweep_rayjob),
    (lambda spec, context: isinstance(spec, RunSpec), compile_run),
    (lambda spec, context: isinstance(spec, PipelineSpec), compile_pipeline),
]
