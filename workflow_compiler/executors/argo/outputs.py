"""Outputs of cluster runs: the MLflow run a Workflow logged to, and its notebook and HTML artifacts.

A step logs ``output.ipynb`` and ``output.html`` as artifacts of its MLflow run, tagged
``nbscale.workflow=<workflow name>`` (``runtime/provenance.py``); a pipeline's parent run carries the
same tag. They are downloaded on first request into ``<run folder>/outputs/`` and served from there.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ...errors import ExecutionError
from ..base import OUTPUT_LINKS

log = logging.getLogger(__name__)

#: Output files by record link key, as the step logs them (artifact paths at the run's root).
OUTPUT_FILES = {key: name for name, key in OUTPUT_LINKS.items()}
_WORKFLOW_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")


def cluster_tracking_uri() -> str | None:
    """The MLflow the cluster's steps log to: the cluster config's, else ``MLFLOW_TRACKING_URI``."""
    from ...cluster import load_cluster_config

    return load_cluster_config().mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def find_workflow_run(uri: str, workflow: str) -> dict[str, Any] | None:
    """The MLflow run of a Workflow (a pipeline's parent run when there is one): id, experiment, artifact names."""
    if not _WORKFLOW_NAME.match(workflow):  # it goes into an MLflow filter string
        raise ExecutionError(f"{workflow!r} is not a Workflow name.")
    check_reachable(uri)
    from ...tracking_uri import open_client

    client = open_client(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(experiments, filter_string=f"tags.`nbscale.workflow` = '{workflow}'", max_results=50)
    if not runs:
        return None
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags] or runs
    run = top[0]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    return {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id, "artifacts": sorted(names)}


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast when an MLflow server does not answer: its client would retry for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise ExecutionError(f"the MLflow server at {uri} does not answer ({exc}); outputs are fetched when it does.") from None


def record_links(uri: str, found: dict[str, Any], run_dir: Path) -> dict[str, str]:
    """Links for a record: the MLflow UI page, and where each output artifact will be cached."""
    links = {key: str(run_dir / "outputs" / name) for key, name in OUTPUT_FILES.items() if name in found["artifacts"]}
    if uri.startswith(("http://", "https://")):
        links["mlflow"] = f"{uri.rstrip('/')}/#/experiments/{found['experiment_id']}/runs/{found['run_id']}"
    return links


def download_output(uri: str, run_id: str, name: str, folder: Path) -> Path:
    """The artifact ``name`` of MLflow run ``run_id``, downloaded once into ``folder`` (a private folder that exists)."""
    target = folder / name
    if target.is_file():
        return target
    from ...tracking_uri import open_client

    check_reachable(uri)
    try:
        path = Path(open_client(uri).download_artifacts(run_id, name, str(target.parent)))
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the caller gets one clear error
        raise ExecutionError(f"could not download {name} of MLflow run {run_id} from {uri}: {exc}") from None
    log.info("downloaded %s of MLflow run %s to %s", name, run_id, path)
    return path
