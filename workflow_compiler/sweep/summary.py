"""Closing a sweep: every trial's final row, the parent MLflow run's summary, table and plots."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from ..spec import RunSpec
from . import tracking
from .plots import write_plots
from .results import SweepResult, TrialRow, best_trial, count_statuses, trials_csv
from .trial import OUTPUT_KEY, RUN_KEY, SECONDS_KEY, TrialFailed, outcome_status

log = logging.getLogger(__name__)
#: How Ray's error file names a notebook's failure: the reason that follows is the row's error.
_TRIAL_FAILED = f"{TrialFailed.__module__}.{TrialFailed.__qualname__}: "


def row_from_trial(trial: Any, number: int, *, metric: str, cancelled: bool, ended: str | None = None,
                   last: dict[str, Any] | None = None) -> TrialRow:
    """A Tune ``Trial`` as a row of our table; ``ended`` ("TERMINATED"/"ERROR") when a callback knows before Tune's state
    does, ``last`` when it knows the trial's last result (``{}``: none yet)."""
    last = (trial.last_result or {}) if last is None else last
    state = ended or str(trial.status)
    if state == "ERROR":
        status = "FAILED"
    elif state == "TERMINATED":
        status = outcome_status(last)
        if cancelled and status != "COMPLETED":
            status = "KILLED"
    elif state == "RUNNING":
        status = "KILLED" if cancelled else "RUNNING"
    else:
        status = "KILLED" if cancelled else "PENDING"
    value = last.get(metric)
    return TrialRow(trial_id=trial.trial_id, number=number, params=dict(trial.config), status=status,
                    value=float(value) if isinstance(value, (int, float)) else None,
                    steps=int(last.get("training_iteration") or 0), seconds=last.get(SECONDS_KEY),
                    attempts=int(getattr(trial, "num_failures", 0)) + (1 if state in ("TERMINATED", "RUNNING") else 0),
                    run_id=last.get(RUN_KEY), output_notebook=last.get(OUTPUT_KEY), error=_error_text(trial) if status == "FAILED" else None)


def _error_text(trial: Any) -> str | None:
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text(encoding="utf-8") if path else ""
    except OSError:
        return None
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix(_TRIAL_FAILED)[:2000] if lines else None


def finish_sweep(*, session_client: Any, spec: RunSpec, state: dict[str, Any], sweep_dir: Path,
                 rows: dict[str, TrialRow], cancelled: bool, seconds: float) -> SweepResult:
    """Close dangling child runs, summarise, and end the parent run with table, plots and best trial."""
    sweep = spec.sweep
    if sweep is None:
        raise ValueError("finish_sweep needs a sweep spec")
    mc, parent = session_client, state["parent_run_id"]
    # the workers end these runs themselves, with their last metrics and notebooks; a lost one's run ends below
    tracking.settle_children(mc, experiment_id=state["experiment_id"], parent_run_id=parent,
                             trial_ids={row.trial_id for row in rows.values() if row.status in ("COMPLETED", "EARLY_STOPPED")})
    tracking.close_open_children(mc, experiment_id=state["experiment_id"], parent_run_id=parent,
                                 status="KILLED" if cancelled else "FAILED",
                                 statuses={row.trial_id: row.status for row in rows.values() if row.status == "EARLY_STOPPED"})
    trials = _with_run_ids(mc, state, sorted(rows.values(), key=lambda r: r.number))
    best = best_trial(trials, sweep.mode)
    status = "KILLED" if cancelled else "SUCCEEDED" if best is not None else "FAILED"
    result = SweepResult(
        sweep_id=state["sweep_id"], status=status, notebook=spec.notebook, metric=sweep.metric, mode=sweep.mode,
        best=None if best is None else {"trial_id": best.trial_id, "params": best.params, "metric": sweep.metric, "value": best.value},
        trials=trials, counts=count_statuses(trials), parent_run_id=parent, experiment_id=state["experiment_id"],
        tracking_uri=state["tracking_uri"], sweep_dir=str(sweep_dir), seconds=seconds)
    summary = json.dumps(result.to_summary(), indent=2)
    (sweep_dir / "result.json").write_text(summary, encoding="utf-8")
    _close_parent(mc, result, best, summary)
    return result


def _with_run_ids(mc: Any, state: dict[str, Any], trials: list[TrialRow]) -> list[TrialRow]:
    """Every row names its MLflow run: one that failed before its first report told Tune none, so
    its last attempt's run is found by the trial's tag (one search for the whole sweep)."""
    if all(t.run_id for t in trials):
        return trials
    latest = {run.data.tags.get(tracking.TAG_TRIAL): run.info.run_id  # oldest first: the last attempt wins
              for run in tracking.child_runs(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"])}
    return [t if t.run_id else t.model_copy(update={"run_id": latest.get(t.trial_id)}) for t in trials]


def _close_parent(mc: Any, result: SweepResult, best: TrialRow | None, summary: str) -> None:
    from mlflow.entities import Metric, Param, RunTag

    parent = result.parent_run_id
    done = {k: v for k, v in result.counts.items() if k != "PENDING"}
    metrics = [Metric(f"trials_{k.lower()}", float(v), 0, 0) for k, v in done.items()]
    params: list[Any] = []
    tags = [RunTag("nbscale.status", result.status)]
    if best is not None and best.value is not None:
        metrics.append(Metric(f"best_{result.metric}", best.value, 0, 0))
        existing = mc.get_run(parent).data.params  # a resumed sweep logged its best params already
        params = [Param(f"best.{k}", json.dumps(v) if not isinstance(v, str) else v) for k, v in best.params.items()
                  if f"best.{k}" not in existing]
        tags.append(RunTag("nbscale.best_trial", best.trial_id))
        if best.run_id:
            tags.append(RunTag("nbscale.best_run_id", best.run_id))
    with tempfile.TemporaryDirectory() as folder:  # one artifact upload (each call looks the run up again)
        (Path(folder) / "trials.csv").write_text(trials_csv(result), encoding="utf-8")
        (Path(folder) / "summary.json").write_text(summary, encoding="utf-8")
        write_plots(result, Path(folder) / "plots")
        mc.log_artifacts(parent, folder)
    mc.log_batch(parent, metrics=metrics, params=params[:100], tags=tags)  # one transaction; params beyond 100 below
    for start in range(100, len(params), 100):
        mc.log_batch(parent, params=params[start:start + 100])
    mc.set_terminated(parent, {"SUCCEEDED": "FINISHED", "FAILED": "FAILED", "KILLED": "KILLED"}[result.status])
