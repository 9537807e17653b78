"""Sweep → Argo Workflow, in one of two forms.

- **RayJob** (default): one DAG task ``sweep``, a ``resource`` template that creates a KubeRay
  ``RayJob`` (``rayjob.py``) running the same sweep driver as ``nbscale sweep``, with Tune's
  search, early stopping, warm workers and fractional GPUs. Argo waits on ``status.jobStatus``.
- **Fan-out** (``fanout=True``, or ``sweep_fanout: true`` in the cluster config; grid search only):
  no Ray at all. A parent MLflow run as pipelines have, then one task ``trials`` with ``withItems``
  over the grid's points, each item a notebook container like a single run, at most
  ``concurrency`` at once (the DAG's ``parallelism``), and the exit handler closing the parent.

Swept values reach the items JSON-encoded by ``argo_safe_json`` (one string per parameter, so
``{{item.NAME}}`` is the same JSON text ``--parameter NAME=JSON`` takes, and no ``{{`` can form).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from ..errors import CompileError
from ..spec import RunSpec
from ..stepconfig import StepConfig, argo_safe_json
from ..sweep.spec import SweepSpec
from ..yaml_dump import NO_WRAP, dump_yaml
from . import templates as t
from .manifest import ApiObject, dag_task, dag_template
from .naming import LABEL_KIND, LABEL_NOTEBOOK, LABEL_RUN_ID, LABEL_USER, label_value, notebook_label
from .queueing import QUEUE_LABEL
from .rayjob import RayJobPlan, rayjob_manifest
from .workflow_shell import (
    CompileContext,
    check_parameter_name,
    checked_image,
    notebook_plan,
    workflow_parameters,
    workflow_shell,
)

SWEEP_TASK = "sweep"
TRIALS_TASK = "trials"
TRIAL_TEMPLATE = "trial"
#: MLflow tags on the fan-out's parent and trial runs: which metric decides, and which way.
METRIC_TAG, MODE_TAG = "nbscale.sweep.metric", "nbscale.sweep.mode"
#: More items than this make a manifest too large for etcd to hold comfortably; use the RayJob form.
MAX_FANOUT_ITEMS = 5000


def compile_sweep_rayjob(spec: RunSpec, context: CompileContext) -> ApiObject:
    """A sweep as one KubeRay RayJob (see ``rayjob.py``), created and watched by an Argo resource template."""
    sweep = _sweep(spec)
    cluster = context.cluster
    for name in spec.parameters:
        check_parameter_name(name, None)
    env = {"NBSCALE_HOME": f"{cluster.workspace_mount}/.nbscale", "NBSCALE_WORKFLOW_NAME": "{{workflow.name}}"}
    if cluster.mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = cluster.mlflow_tracking_uri
    labels = _labels(spec)
    plan = RayJobPlan(spec=spec, image=checked_image(spec.image, cluster), pod=context.pod,
                      labels={k: labels[k] for k in (LABEL_USER, LABEL_KIND)}, cluster=cluster, env=env,
                      pool=context.pools.resolve(spec.resources.pool, 1 if sweep.gpus_per_trial else 0))
    manifest = rayjob_manifest(plan)
    manifest["metadata"]["labels"] = rayjob_labels(labels, context.queue)
    text = dump_yaml(manifest, sort_keys=False, default_flow_style=False, allow_unicode=True, width=NO_WRAP)
    return workflow_shell(PurePosixPath(spec.notebook).stem, labels, context, arguments=[],
                          templates=[dag_template("main", [dag_task(SWEEP_TASK, t.SWEEP_TEMPLATE)]), t.rayjob_template(text)])


def rayjob_labels(labels: dict[str, str], queue: str | None) -> dict[str, str]:
    """The RayJob's own labels: the workflow's, its run id (set by the executor on the Workflow), its Kueue queue.

    The run id is an Argo expression over the Workflow's label, not user data: the executor labels
    the Workflow at submission, and Argo fills the RayJob's copy in when it creates the RayJob.
    """
    own = {**labels, LABEL_RUN_ID: f"{{{{workflow.labels.{LABEL_RUN_ID}}}}}"}
    if queue is not None:
        own[QUEUE_LABEL] = queue  # Kueue admits the RayJob as one workload; its pods carry no queue label
    return own


def compile_sweep_fanout(spec: RunSpec, context: CompileContext) -> ApiObject:
    """A grid sweep as Argo-native fan-out: parent run, ``withItems`` trials, exit handler."""
    sweep = _sweep(spec)
    check_fanout(sweep)
    fixed = {k: v for k, v in spec.parameters.items() if k not in sweep.space}
    names = [*fixed, *sweep.space]
    resources = spec.resources.model_copy(update={"cpu": sweep.cpus_per_trial, "gpus": int(sweep.gpus_per_trial)})
    trial = spec.model_copy(update={"parameters": dict.fromkeys(names), "resources": resources, "retries": sweep.max_failures})
    tags = {**spec.tracking.tags, METRIC_TAG: sweep.metric, MODE_TAG: sweep.mode}
    plan = notebook_plan(trial, context, name=TRIAL_TEMPLATE, user=spec.user, tags=tags, experiment=spec.experiment,
                          html=spec.outputs.html, parent_run=True)
    parent = StepConfig(notebook="", experiment=spec.experiment, user=spec.user, tags=tags, html=spec.outputs.html,
                        image=plan.image, step=None)
    feeds = {p: f"{{{{item.{p}}}}}" if p in sweep.space else f"{{{{workflow.parameters.{p}}}}}" for p in names}
    feeds[t.PARENT_RUN_INPUT] = f"{{{{tasks.{t.PARENT_TASK}.outputs.parameters.{t.PARENT_RUN_ID}}}}}"
    tasks = [dag_task(t.PARENT_TASK, t.OPEN_PARENT_TEMPLATE),
             dag_task(TRIALS_TASK, TRIAL_TEMPLATE, arguments=t.task_arguments(feeds), dependencies=[t.PARENT_TASK],
                      with_items=grid_items(sweep))]
    templates = [dag_template("main", tasks, parallelism=sweep.concurrency),
                 t.open_parent_template(parent, plan.image, context.cluster, context.pod),
                 t.notebook_template(plan, context.cluster, context.pod), t.close_parent_template(plan.image, context.cluster, context.pod)]
    return workflow_shell(PurePosixPath(spec.notebook).stem, _labels(spec), context,
                          arguments=workflow_parameters({p: (p, v) for p, v in fixed.items()}), templates=templates,
                          on_exit=t.CLOSE_PARENT_TEMPLATE, active_deadline_seconds=sweep.time_budget_s)


def check_fanout(sweep: SweepSpec) -> None:
    """Refuse what Argo fan-out cannot do (it has no Tune: no sampling, no early stopping, whole-GPU pods)."""
    problems = []
    if sweep.search != "grid":
        problems.append(("search", f"fan-out enumerates a grid; search {sweep.search!r} samples, which needs Ray "
                                   "(compile without --fanout, or use search 'grid' with grid(...) values)"))
    sampled = [name for name, domain in sweep.space.items() if not sweep.enumerates(domain)]
    if sampled:
        problems.append(("space", f"{', '.join(sampled)} {'is' if len(sampled) == 1 else 'are'} sampled for each trial, which needs Ray; "
                                  "write grid(...) (or choice(...) with search 'grid') to try every value, or compile without --fanout"))
    if sweep.scheduler != "fifo":
        problems.append(("scheduler", f"early stopping ({sweep.scheduler}) needs Ray Tune; compile without --fanout or drop it"))
    if sweep.gpus_per_trial and not float(sweep.gpus_per_trial).is_integer():
        problems.append(("gpus_per_trial", f"{sweep.gpus_per_trial} GPUs: each fan-out trial is a pod, which takes whole GPUs; "
                                           "use 1 or compile without --fanout to share GPUs through Ray"))
    if problems:
        raise CompileError("cannot compile this sweep to Argo fan-out: " + "; ".join(f"{field}: {msg}" for field, msg in problems),
                           errors=[{"loc": ["sweep", field], "msg": msg} for field, msg in problems])


def grid_items(sweep: SweepSpec) -> list[dict[str, str]]:
    """``withItems``: every grid point (``samples`` times), each value as the JSON text of the step's ``--parameter``."""
    points = sweep.grid_points() * sweep.effective_samples
    if len(points) > MAX_FANOUT_ITEMS:
        raise CompileError(f"the grid has {len(points)} trials; fan-out takes at most {MAX_FANOUT_ITEMS}. "
                           "Compile without --fanout (a RayJob runs any number) or make the grid smaller.",
                           errors=[{"loc": ["sweep", "space"], "msg": f"{len(points)} grid points"}])
    return [{name: _encoded(name, value) for name, value in point.items()} for point in points]


def _encoded(name: str, value: Any) -> str:
    try:
        return argo_safe_json(value)
    except (TypeError, ValueError) as exc:
        raise CompileError(f"a value of {name!r} cannot be sent as JSON: {exc}",
                           errors=[{"loc": ["sweep", "space", name], "msg": str(exc)}]) from None


def _sweep(spec: RunSpec) -> SweepSpec:
    if spec.sweep is None:
        raise CompileError("not a sweep: the spec has no 'sweep' section.")
    return spec.sweep


def _labels(spec: RunSpec) -> dict[str, str]:
    return {LABEL_USER: label_value(spec.user), LABEL_NOTEBOOK: notebook_label(spec.notebook), LABEL_KIND: "sweep"}
