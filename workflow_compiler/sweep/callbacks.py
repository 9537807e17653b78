"""Tune callbacks of the driver: live progress, trial statuses in MLflow, and cancellation.

They are pickled into Tune's experiment state (for resume), so they hold only the sweep id and
find the driver's live state through ``session.session(sweep_id)``.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback, Stopper

from . import tracking
from .session import session, sweeps_dir
from .summary import row_from_trial
from .trial import STATUS_KEY
from .worker import COMPLETED


class SweepCallback(Callback):
    """Keeps the driver's trial table and the children's MLflow statuses current."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def _update(self, trials: list[Any], trial: Any, *, close: str | None = None, ended: str | None = None,
                last: dict[str, Any] | None = None) -> None:
        current = session(self.sweep_id)
        if current is None or current.spec.sweep is None:
            return
        row = row_from_trial(trial, trials.index(trial) + 1, metric=current.spec.sweep.metric, cancelled=current.cancel.is_set(),
                             ended=ended, last=last)
        current.rows[trial.trial_id] = row
        if ended is not None:
            current.trial_ended()
        if close is not None:
            tracking.close_open_children(current.client, experiment_id=current.experiment_id, parent_run_id=current.parent_run_id,
                                         status=row.status if close == "row" else close, trial_id=trial.trial_id)
        current.refresh(force=ended in ("ERROR", "PENDING"))  # failures show at once; the rest at the display's pace

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """A trial (or its retry) started: it has reported nothing yet (Tune's ``last_result`` would ask its actor, a
        round trip that held up Tune's loop at every trial)."""
        self._update(trials, trial, last={})

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
        """An intermediate result: the objective as logged so far."""
        self._update(trials, trial)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Finished, or stopped by the scheduler, or by a cancel (then its run ends KILLED here).

        A trial whose final report says COMPLETED closed its run before reporting. One the scheduler
        stopped is left to its worker: Tune calls this as it decides, before the worker learns of it
        at its next report, and a run ended here would refuse the worker's last metrics and its
        partial notebook. ``summary.finish_sweep`` waits for those runs, and ends any a lost worker left.
        """
        completed = (trial.last_result or {}).get(STATUS_KEY) == COMPLETED
        cancelled = self._cancelled()
        self._update(trials, trial, close="row" if cancelled and not completed else None, ended="TERMINATED")

    def _cancelled(self) -> bool:
        current = session(self.sweep_id)
        return current is not None and current.cancel.is_set()

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Failed and will be retried: that attempt's run is FAILED."""
        self._update(trials, trial, close="FAILED", ended="PENDING")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Failed for good (retries used up), or its worker process died."""
        self._update(trials, trial, close="row", ended="ERROR")

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """Every trial of the experiment, including those finished before a resume."""
        current = session(self.sweep_id)
        if current is not None and current.spec.sweep is not None:
            for number, trial in enumerate(trials, start=1):
                current.rows[trial.trial_id] = row_from_trial(trial, number, metric=current.spec.sweep.metric,
                                                              cancelled=current.cancel.is_set())
            current.refresh(force=True)


#: Written in a sweep's folder when it is cancelled: a worker whose trial Tune stopped then ends its
#: run KILLED, not EARLY_STOPPED (``trial.run_trial``). Removed when the sweep (re)starts.
CANCELLED = "cancelled"


class CancelStopper(Stopper):
    """Ends a trial at its final report, and the whole experiment once the driver's cancel event is
    set (Ctrl-C, SIGTERM, cancel_sweep)."""

    def __init__(self, sweep_id: str) -> None:
        self.sweep_id = sweep_id

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        """True for a trial's final report (its run is closed): Tune stops the trial there instead of
        asking the worker for the end of the function, a second round trip per trial. Stopping a
        trial part-way is the scheduler's job."""
        return result.get(STATUS_KEY) == COMPLETED

    def stop_all(self) -> bool:
        """True once the sweep was cancelled; then its workers find ``CANCELLED`` in the sweep's folder."""
        current = session(self.sweep_id)
        if current is None or not current.cancel.is_set():
            return False
        if not current.cancel_marked:  # Tune asks every turn of its loop; the file is written once
            (sweeps_dir() / self.sweep_id / CANCELLED).touch()
            current.cancel_marked = True
        return True
