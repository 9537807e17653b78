"""The one submit path the CLI, the magics and the REST API share: compile, validate, admit, submit."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import quota
from .cluster import load_cluster_config
from .compiler.output import checked_manifest
from .compiler.queueing import queue_from_quota
from .errors import QuotaUnavailable
from .executors import Executor, get_executor, new_run_id
from .podenv import capture_pod_environment
from .spec import PipelineSpec, RunSpec
from .store import Progress, RunRecord

log = logging.getLogger(__name__)


def record_for(spec: RunSpec | PipelineSpec, *, run_id: str | None = None) -> RunRecord:
    """A new PENDING record describing ``spec``."""
    if isinstance(spec, PipelineSpec):
        return RunRecord(id=run_id or new_run_id(), kind="pipeline", notebook=spec.steps[-1].notebook, user=spec.user,
                         parameters={s.name: s.parameters for s in spec.steps})
    if spec.sweep is not None:
        return RunRecord(id=run_id or new_run_id(), kind="sweep", notebook=spec.notebook, user=spec.user, parameters=spec.parameters,
                         progress=Progress(unit="trials", total=spec.sweep.total_trials()))
    return RunRecord(id=run_id or new_run_id(), kind="run", notebook=spec.notebook, user=spec.user, parameters=spec.parameters)


def build_manifest(spec: RunSpec | PipelineSpec, *, root: str | os.PathLike[str] = ".", **compile_options: Any) -> dict[str, Any]:
    """Compile ``spec`` and check the manifest against the Argo CRD before anything runs."""
    return checked_manifest(spec, notebook_root=Path(root), **compile_options)


def submit(spec: RunSpec | PipelineSpec, *, executor: Executor | None = None, root: str | os.PathLike[str] = ".",
           run_id: str | None = None, **compile_options: Any) -> RunRecord:
    """Compile, validate and start ``spec``; returns the new record at once (the run goes on)."""
    executor = executor or get_executor("local", root=root)
    record = record_for(spec, run_id=run_id)
    executor.prepare(record)  # e.g. the local tracking agent imports MLflow while we compile
    if executor.name == "argo":
        compile_options = {**cluster_inputs(spec), **compile_options}
    manifest = build_manifest(spec, root=root, **compile_options)
    lease_id = quota.admit(spec, request_id=record.id)  # refused or unreachable: nothing starts
    if lease_id:
        request = quota.lease_request(spec) or {}
        record = record.model_copy(update={"lease_id": lease_id, "lease_gpus": request.get("gpus", 0) * request.get("concurrency", 1)})
    try:
        return executor.submit(manifest, record=record)
    except BaseException:
        if lease_id:
            quota.release(lease_id, 0.0)
        raise


def cluster_inputs(spec: RunSpec | PipelineSpec, *, api_client: Any = None) -> dict[str, Any]:
    """What compiling for a cluster takes from where we run: this pod's environment, and the hub quota group as the queue.

    The pod is read only inside one (``podenv.py``; ``api_client`` defaults to the in-cluster one). The
    quota group is looked up only when neither the spec nor the cluster config names a queue; an
    unreachable quota service leaves the run unqueued (GPU runs are refused by the quota gate itself).
    """
    cluster = load_cluster_config()
    inputs: dict[str, Any] = {"pod_env": capture_pod_environment(cluster, api_client=api_client)}
    if spec.queue is not None or cluster.kueue_queue is not None:
        return inputs
    from hub_extension.client import quota_status  # the quota service's client; imported only on submit

    try:
        inputs["hub_queue"] = queue_from_quota(quota_status())
    except QuotaUnavailable as exc:
        log.warning("no Kueue queue from the hub quota group: %s", exc)
    return inputs
