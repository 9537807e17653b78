"""MLflow for sweeps: one parent run per sweep, one nested child run per trial attempt.

Ray Tune's own MLflow callback makes flat runs with no parent; here the parent holds the search
space, the best parameters and metric, a summary table and plots, and every child carries
``mlflow.parentRunId`` so the MLflow UI nests it. A child's status tag
``nbscale.trial_status`` says COMPLETED, EARLY_STOPPED, FAILED or KILLED (MLflow's own status is
FINISHED for the first two).

Metrics the notebook logs with ``mlflow.log_metric`` are intercepted, buffered and written with
``log_batch`` from a background thread, so a trial that logs 1000 steps does not pay 1000
synchronous round trips to the store.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

MetricHook = Callable[[str, float, "int | None"], None]
#: One metric value as it is queued and travels to the agent: (name, value, timestamp in ms, step).
MetricRow = tuple[str, float, int, int]
TAG_KIND, TAG_SWEEP, TAG_TRIAL, TAG_STATUS = "nbscale.kind", "nbscale.sweep_id", "nbscale.trial_id", "nbscale.trial_status"
#: Why a trial failed, as its row's ``error`` says (the tag a step's run carries too).
TAG_ERROR = "nbscale.error"
MLFLOW_STATUS = {"COMPLETED": "FINISHED", "EARLY_STOPPED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED"}
_BATCH = 1000  # MLflow's log_batch limit on metrics per call


@functools.lru_cache(maxsize=8)
def client(uri: str) -> Any:
    """This process's MlflowClient for ``uri`` (imported lazily; mlflow takes ~2 s to import).

    One per process: a trial worker runs many trials, and building a client takes the store's lock.
    """
    from ..tracking_uri import open_client

    return open_client(uri)


def ensure_experiment(mlflow_client: Any, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts beside a SQLite store) when missing."""
    from ..tracking_uri import artifact_location

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(mlflow_client.create_experiment(name, artifact_location=artifact_location(uri, name)))
    except Exception:  # another process created it between our two calls
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


class MetricBuffer:
    """Collects metrics and hands them to ``write`` every ``interval`` seconds from a thread of its own.

    Rows are ``(name, value, timestamp_ms, step)``; ``close`` returns those not written yet.
    """

    def __init__(self, write: Callable[[list[MetricRow]], None], *, interval: float = 1.0) -> None:
        self._write, self._interval = write, interval
        self._pending: list[MetricRow] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nbscale-metrics", daemon=True)
        self._thread.start()
        self.last: dict[str, float] = {}

    def add(self, name: str, value: float, step: int | None, timestamp_ms: int | None = None) -> None:
        """Queue one metric value (never blocks on the store)."""
        with self._lock:
            self._pending.append((name, float(value), timestamp_ms or int(time.time() * 1000), int(step or 0)))
        self.last[name] = float(value)

    def _loop(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write everything queued so far."""
        with self._lock:
            pending, self._pending = self._pending, []
        if pending:
            try:
                self._write(pending)
            except Exception:
                log.exception("could not write %s metrics", len(pending))

    def close(self) -> list[MetricRow]:
        """Stop the writer thread; return what is still queued (``finish_trial_run`` writes it with the
        run's closing tags in one transaction)."""
        self._closed.set()
        self._thread.join()
        with self._lock:
            pending, self._pending = self._pending, []
        return pending


def _metrics(rows: list[Any]) -> list[Any]:
    from mlflow.entities import Metric

    return [Metric(name, float(value), int(timestamp), int(step)) for name, value, timestamp, step in rows]


def log_metric_rows(mlflow_client: Any, run_id: str, rows: list[Any]) -> None:
    """Write ``(name, value, timestamp_ms, step)`` rows with ``log_batch`` (its limit per call respected)."""
    metrics = _metrics(rows)
    for start in range(0, len(metrics), _BATCH):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + _BATCH])


@contextmanager
def intercept_metrics(hook: MetricHook) -> Iterator[None]:
    """While active, ``mlflow.log_metric``/``log_metrics`` calls go to ``hook`` instead of the store."""
    import mlflow

    originals = mlflow.log_metric, mlflow.log_metrics

    def log_metric(key: str, value: float, step: int | None = None, *args: Any, **kwargs: Any) -> None:
        hook(key, float(value), kwargs.get("step", step))

    def log_metrics(metrics: dict[str, float], step: int | None = None, *args: Any, **kwargs: Any) -> None:
        for key, value in metrics.items():
            hook(key, float(value), kwargs.get("step", step))

    mlflow.log_metric, mlflow.log_metrics = log_metric, log_metrics  # type: ignore[assignment]
    try:
        yield
    finally:
        mlflow.log_metric, mlflow.log_metrics = originals  # type: ignore[assignment]


def open_trial_run(mlflow_client: Any, *, experiment_id: str, parent_run_id: str, sweep_id: str, trial_id: str,
                   name: str, params: dict[str, Any], tags: dict[str, str]) -> Any:
    """Create the nested child run of one trial attempt; returns its ``RunInfo`` (run id, artifact URI)."""
    run = mlflow_client.create_run(experiment_id, run_name=name, tags={
        **tags, "mlflow.parentRunId": parent_run_id, TAG_KIND: "trial", TAG_SWEEP: sweep_id, TAG_TRIAL: trial_id})
    log_params(mlflow_client, run.info.run_id, params)
    return run.info


def reopen_trial_run(mlflow_client: Any, **fields: Any) -> Any:
    """``open_trial_run``, unless the attempt's run exists already: then its ``RunInfo``, params checked.

    For a worker whose tracking agent went away while it opened the run: the agent may have created
    the run (and logged its params) without answering. Taking that run up leaves no orphan RUNNING
    until the sweep's end, and no second run for one attempt. The run name holds the attempt.
    """
    query = _running_children(fields["parent_run_id"], fields["trial_id"]) + f" and attributes.run_name = '{fields['name']}'"
    found = mlflow_client.search_runs([fields["experiment_id"]], filter_string=query, max_results=2)
    if len(found) != 1:
        return open_trial_run(mlflow_client, **fields)
    log_params(mlflow_client, found[0].info.run_id, fields["params"])  # the same values again: MLflow takes them
    return found[0].info


def log_params(mlflow_client: Any, run_id: str, params: dict[str, Any]) -> None:
    """A trial's parameters, JSON-encoded unless they are strings (MLflow takes 100 per call)."""
    from mlflow.entities import Param

    items = [Param(k, param_text(v)) for k, v in sorted(params.items())]
    for start in range(0, len(items), 100):
        mlflow_client.log_batch(run_id, params=items[start:start + 100])


def finish_trial_run(mlflow_client: Any, run_id: str, status: str, *, error: str | None = None, artifacts: tuple[str, ...] = (),
                     metrics: list[MetricRow] | None = None, artifact_uri: str | None = None) -> None:
    """Attach the output notebook, write the last metrics with the trial-status tags, end the child run.

    Two store transactions (a trial is worth little more than its own compute: B2 of issue 3). With
    the run's ``artifact_uri`` (from ``open_trial_run``) the notebook goes straight to the artifact
    store; ``log_artifact`` would first read the run back to find it.
    """
    from mlflow.entities import RunTag
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    for path in artifacts:
        try:
            if artifact_uri:
                get_artifact_repository(artifact_uri).log_artifact(path)
            else:
                mlflow_client.log_artifact(run_id, path)
        except Exception:
            log.exception("could not store artifact %s of run %s", path, run_id)
    tags = [RunTag(TAG_STATUS, status)] + ([RunTag(TAG_ERROR, error[:4000])] if error else [])
    metrics = _metrics(list(metrics or []))
    for start in range(0, max(len(metrics), 1), _BATCH):
        mlflow_client.log_batch(run_id, metrics=metrics[start:start + _BATCH], tags=tags if start == 0 else [])
    mlflow_client.set_terminated(run_id, MLFLOW_STATUS[status])


def point_key(params: dict[str, str | None]) -> str:
    """A trial's swept parameters as its run holds them (``param_text``), as one key: never a trial id's shape."""
    import json

    return "point:" + json.dumps(params, sort_keys=True)


def param_text(value: Any) -> str:
    """A parameter's value as MLflow holds it: JSON, unless it is a string."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def open_parent_run(mlflow_client: Any, *, experiment_id: str, sweep_id: str, name: str, space: dict[str, str],
                    settings: dict[str, Any], fixed: dict[str, Any], tags: dict[str, str]) -> str:
    """The sweep's parent run: search space and settings as params, the space also as a JSON artifact."""
    from mlflow.entities import Param

    run = mlflow_client.create_run(experiment_id, run_name=name, tags={**tags, TAG_KIND: "sweep", TAG_SWEEP: sweep_id})
    params = [Param(f"space.{k}", v[:6000]) for k, v in space.items()]
    params += [Param(f"sweep.{k}", param_text(v)) for k, v in settings.items() if v is not None]
    params += [Param(f"fixed.{k}", param_text(v)[:6000]) for k, v in fixed.items()]
    for start in range(0, len(params), 100):
        mlflow_client.log_batch(run.info.run_id, params=params[start:start + 100])
    mlflow_client.log_dict(run.info.run_id, {"space": space, "settings": settings, "fixed": fixed}, "search_space.json")
    return str(run.info.run_id)


def _running_children(parent_run_id: str, trial_id: str | None = None) -> str:
    """The search filter for a sweep's child runs still RUNNING (of one trial, with ``trial_id``)."""
    query = f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"
    return query if trial_id is None else query + f" and tags.`{TAG_TRIAL}` = '{trial_id}'"


def close_open_children(mlflow_client: Any, *, experiment_id: str, parent_run_id: str, status: str,
                        trial_id: str | None = None, statuses: dict[str, str] | None = None) -> list[str]:
    """End child runs still RUNNING (their worker died or the sweep was cancelled) with ``status``,
    or with ``statuses[trial id]`` for the trials it names."""
    query = _running_children(parent_run_id, trial_id)
    closed = []
    for run in mlflow_client.search_runs([experiment_id], filter_string=query, max_results=1000):
        finish_trial_run(mlflow_client, run.info.run_id, (statuses or {}).get(run.data.tags.get(TAG_TRIAL, ""), status))
        closed.append(str(run.info.run_id))
    return closed


def settle_children(mlflow_client: Any, *, experiment_id: str, parent_run_id: str, trial_ids: set[str],
                    timeout: float = 10.0) -> None:
    """Wait (up to ``timeout`` s) until no run of ``trial_ids`` is RUNNING: their workers sent each
    run's end to the tracking agent before reporting the trial complete, so it is on its way."""
    if not trial_ids:
        return
    query = _running_children(parent_run_id)
    deadline = time.monotonic() + timeout
    while True:
        running = mlflow_client.search_runs([experiment_id], filter_string=query, max_results=1000)
        waiting = [run for run in running if run.data.tags.get(TAG_TRIAL) in trial_ids]
        if not waiting or time.monotonic() > deadline:
            if waiting:
                log.warning("%s completed trial run(s) still RUNNING after %.0f s", len(waiting), timeout)
            return
        time.sleep(0.05)


def child_runs(mlflow_client: Any, *, experiment_id: str, parent_run_id: str) -> list[Any]:
    """Every child run of a sweep (all attempts), oldest first."""
    runs = mlflow_client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                     max_results=10000, order_by=["attributes.start_time ASC"])
    return list(runs)
