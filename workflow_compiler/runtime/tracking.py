"""The MLflow side of a step: experiments, runs, params, tags, artifacts and final status.

Only the tracker process and the parent-run subcommands import this (``import mlflow`` costs 2 s).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from mlflow.entities import Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ..tracking_uri import artifact_location, open_client

log = logging.getLogger(__name__)

#: MLflow's limit on tag values (mlflow.utils.validation.MAX_TAG_VAL_LENGTH).
TAG_LIMIT = 8000


def make_client(uri: str) -> MlflowClient:
    """A client on ``uri``; a fresh SQLite store gets its schema here, one process at a time."""
    return open_client(uri)


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The id of experiment ``name``, created when missing; safe when parallel steps race to create it."""
    for attempt in range(5):
        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location(uri, name)))
        except MlflowException as exc:  # another step created it between our two calls
            log.info("creating experiment %r: %s; looking it up again", name, exc)
            time.sleep(0.2 * (attempt + 1))
    raise MlflowException(f"could not create or find the MLflow experiment {name!r}")


def _tags(tags: dict[str, str]) -> list[RunTag]:
    return [RunTag(k, str(v)[:TAG_LIMIT]) for k, v in tags.items() if v is not None and str(v) != ""]


def start_run(client: MlflowClient, *, uri: str, experiment: str, run_name: str, tags: dict[str, str],
              params: dict[str, str], parent_run_id: str | None) -> tuple[str, str]:
    """Create the step's run (under ``parent_run_id`` when given) with its tags and params."""
    experiment_id = ensure_experiment(client, experiment, uri)
    if parent_run_id:
        parent = client.get_run(parent_run_id)  # raises when the parent does not exist
        experiment_id = parent.info.experiment_id  # children live beside their parent
        tags = {**tags, "mlflow.parentRunId": parent_run_id}
    run = client.create_run(experiment_id, run_name=run_name)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in params.items()], tags=_tags(tags))
    return run.info.run_id, experiment_id


def finish_run(client: MlflowClient, run_id: str, *, status: str, tags: dict[str, str],
               artifacts: list[Path]) -> dict[str, float]:
    """Log artifacts and outcome tags, set the final status, and return the run's latest metrics."""
    for path in artifacts:
        if path.is_file():
            client.log_artifact(run_id, str(path))
    if tags:
        client.log_batch(run_id, tags=_tags(tags))
    client.set_terminated(run_id, status)
    return dict(client.get_run(run_id).data.metrics)


def kill_running_children(client: MlflowClient, parent_run_id: str, experiment_id: str, reason: str) -> list[str]:
    """Mark children of ``parent_run_id`` still RUNNING as KILLED (their step never got to say)."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'")
    for run in runs:
        client.log_batch(run.info.run_id, tags=_tags({"nbscale.status": "KILLED", "nbscale.error": reason}))
        client.set_terminated(run.info.run_id, "KILLED")
    return [r.info.run_id for r in runs]
