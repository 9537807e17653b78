"""A pipeline's parent MLflow run: opened by the first task, closed by the workflow's exit handler."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..stepconfig import StepConfig
from ..tracking_uri import tracking_uri
from .files import write_atomic
from .provenance import current_user

log = logging.getLogger(__name__)

#: Argo's ``{{workflow.status}}`` -> MLflow run status.
WORKFLOW_STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Error": "FAILED"}
_RUN_STATUS = {"Succeeded": "SUCCEEDED", "Failed": "FAILED", "Error": "FAILED"}


def open_parent(config: StepConfig, output_dir: Path) -> str:
    """Create the parent run, write its id to ``output_dir/run-id`` and return it."""
    from . import tracking

    uri = tracking_uri()
    client = tracking.make_client(uri)
    workflow = os.environ.get("NBSCALE_WORKFLOW_NAME", "")
    user = current_user(config)
    tags = {**config.tags, "mlflow.user": user, "nbscale.user": user, "nbscale.kind": "pipeline",
            "nbscale.workflow": workflow, "nbscale.image": config.image}
    if config.notebook:
        tags["nbscale.pipeline"] = config.notebook
    run_id, experiment_id = tracking.start_run(client, uri=uri, experiment=config.experiment,
                                               run_name=workflow or config.experiment, tags=tags, params={},
                                               parent_run_id=None)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(output_dir / "run-id", run_id.encode("ascii"))
    log.info("parent MLflow run %s (experiment %s) in %s", run_id, experiment_id, uri)
    return run_id


def close_parent(run_id: str, workflow_status: str) -> str:
    """End the parent run with the workflow's status; children left RUNNING become KILLED. Idempotent."""
    from . import tracking

    status = WORKFLOW_STATUS[workflow_status]
    client = tracking.make_client(tracking_uri())
    run = client.get_run(run_id)
    if status != "FINISHED":
        killed = tracking.kill_running_children(client, run_id, run.info.experiment_id,
                                                f"the workflow ended {workflow_status} while this step was running")
        if killed:
            log.warning("marked %s unfinished child run(s) KILLED: %s", len(killed), ", ".join(killed))
    tracking.finish_run(client, run_id, status=status, tags={"nbscale.status": _RUN_STATUS[workflow_status]}, artifacts=[])
    log.info("parent MLflow run %s ended %s", run_id, status)
    return status
