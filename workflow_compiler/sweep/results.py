"""What a sweep reports back: one row per trial and the summary the CLI, magics and REST API show."""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Literal

from pydantic import BaseModel, Field

TrialStatus = Literal["PENDING", "RUNNING", "COMPLETED", "EARLY_STOPPED", "FAILED", "KILLED"]
SweepStatus = Literal["SUCCEEDED", "FAILED", "KILLED"]


class TrialRow(BaseModel):
    """One trial: its parameters, how it ended, and its objective (the metric's last value)."""

    trial_id: str
    number: int
    params: dict[str, Any]
    status: TrialStatus = "PENDING"
    value: float | None = None
    steps: int = 0
    seconds: float | None = None
    attempts: int = 0
    run_id: str | None = None
    output_notebook: str | None = None
    error: str | None = None


class SweepResult(BaseModel):
    """The outcome of ``run_sweep``; ``to_summary()`` is the ``--json`` object."""

    sweep_id: str
    status: SweepStatus
    notebook: str
    metric: str
    mode: Literal["max", "min"]
    best: dict[str, Any] | None = Field(None, description="{'trial_id', 'params', 'metric', 'value'} of the best trial")
    trials: list[TrialRow]
    counts: dict[str, int]
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    sweep_dir: str
    seconds: float

    def sorted_trials(self) -> list[TrialRow]:
        """Trials with a value first, best first; the rest in trial order."""
        scored = [(t.value, t) for t in self.trials if t.value is not None]
        scored.sort(key=lambda pair: pair[0] if self.mode == "min" else -pair[0])
        return [t for _, t in scored] + [t for t in self.trials if t.value is None]

    def to_summary(self) -> dict[str, Any]:
        """The JSON summary: everything above, trials sorted by the metric."""
        data = self.model_dump(mode="json")
        data["trials"] = [t.model_dump(mode="json") for t in self.sorted_trials()]
        return data


def failure_line(result: SweepResult) -> str | None:
    """One line on why a sweep failed, with the first failed trial's reason; None unless it FAILED."""
    if result.status != "FAILED":
        return None
    return f"sweep {result.sweep_id} FAILED: {failure_reason(result.trials)}"


def failure_reason(trials: list[TrialRow]) -> str:
    """Why no trial completed: how many failed, and the first failed trial's reason."""
    failed = [t for t in trials if t.status == "FAILED"]
    first = next((t for t in failed if t.error), None)
    return f"no trial completed ({len(failed)} of {len(trials)} failed" + (
        f"; trial {first.trial_id}: {first.error})" if first else ")")


def count_statuses(trials: list[TrialRow]) -> dict[str, int]:
    """How many trials are in each status (every status present, zeros included)."""
    counts = dict.fromkeys(("PENDING", "RUNNING", "COMPLETED", "EARLY_STOPPED", "FAILED", "KILLED"), 0)
    for trial in trials:
        counts[trial.status] += 1
    counts["total"] = len(trials)
    return counts


def best_trial(trials: list[TrialRow], mode: str) -> TrialRow | None:
    """The completed trial with the best objective (early-stopped trials never win)."""
    done = [t for t in trials if t.status == "COMPLETED" and t.value is not None and math.isfinite(t.value)]
    if not done:
        return None
    return (min if mode == "min" else max)(done, key=lambda t: t.value or 0.0)


def trials_csv(result: SweepResult) -> str:
    """The summary table as CSV, sorted by the metric (the parent run's ``trials.csv``)."""
    names = sorted({k for t in result.trials for k in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["rank", "trial_id", "status", result.metric, *names, "steps", "seconds", "attempts", "run_id", "error"])
    for rank, t in enumerate(result.sorted_trials(), start=1):
        writer.writerow([rank, t.trial_id, t.status, "" if t.value is None else t.value, *[t.params.get(n, "") for n in names],
                         t.steps, "" if t.seconds is None else round(t.seconds, 3), t.attempts, t.run_id or "", t.error or ""])
    return buffer.getvalue()
