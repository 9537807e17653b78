"""A running sweep's driver-side state, which the driver fills and Tune's callbacks read.

Tune's callbacks and stopper are pickled, so they carry only the sweep id and find the session
here; both the driver and the callbacks import this module, which imports neither.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..spec import RunSpec
from ..tracking_uri import nbscale_home
from . import plots
from .progress import SweepProgress
from .results import TrialRow, best_trial, count_statuses

#: Seconds between two refreshes of a running sweep's display and progress file.
REFRESH_S = 0.25


@dataclass
class SweepSession:
    """Driver-side state of a running sweep; Tune callbacks find it by sweep id (they must pickle)."""

    sweep_id: str
    spec: RunSpec
    client: Any
    experiment_id: str
    parent_run_id: str
    progress: SweepProgress
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_marked: bool = False  # callbacks.CANCELLED written for the workers
    rows: dict[str, TrialRow] = field(default_factory=dict)
    _shown: float = float("-inf")  # the first refresh always draws, however young the machine's monotonic clock
    _plots_warm: bool = False

    def trial_ended(self) -> None:
        """Warm the plots once the first trial is over: ~1 s of CPU that the driver, mostly waiting on
        Ray, spends while trials run, but not while the trial workers start and need every core."""
        if not self._plots_warm:
            self._plots_warm = True
            threading.Thread(target=plots.warm_up, name="warm-up-plots", daemon=True).start()

    def refresh(self, *, force: bool = False) -> None:
        """Show the trial table and write ``progress.json``: at most every ``REFRESH_S`` unless forced.

        Tune calls back several times per trial; redrawing and rewriting each time cost the driver
        ~3 ms a trial, for a display that refreshes four times a second anyway."""
        now = time.monotonic()
        if not force and now - self._shown < REFRESH_S:
            return
        self._shown = now
        rows = sorted(self.rows.values(), key=lambda r: r.number)
        self.progress.update(rows)
        write_progress(self.sweep_id, rows, total=self.progress.total, metric=self.progress.metric, mode=self.progress.mode,
                       parent_run_id=self.parent_run_id, experiment_id=self.experiment_id)


def write_progress(sweep_id: str, rows: list[TrialRow], *, total: int, metric: str, mode: str, parent_run_id: str,
                   experiment_id: str) -> None:
    """``sweeps/<id>/progress.json``: trial counts and the best so far, for the run record and the UI."""
    counts = count_statuses(rows)
    best = best_trial(rows, mode)
    data = {"total": total, "counts": counts, "metric": metric, "mode": mode, "parent_run_id": parent_run_id,
            "experiment_id": experiment_id,
            "best": None if best is None else {"params": best.params, "metric": metric, "value": best.value}}
    folder = sweeps_dir() / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"progress.json.{os.getpid()}.tmp"
    partial.write_text(json.dumps(data), encoding="utf-8")
    os.replace(partial, folder / "progress.json")  # readers never see half a file


def sweeps_dir() -> Path:
    """Where sweeps keep their state: ``$NBSCALE_HOME/sweeps``."""
    return nbscale_home() / "sweeps"


#: The sweeps running in this process, by sweep id (the driver adds and removes them).
SESSIONS: dict[str, SweepSession] = {}


def session(sweep_id: str) -> SweepSession | None:
    """The running sweep's driver state (for callbacks in this process)."""
    return SESSIONS.get(sweep_id)


def cancel_sweep(sweep_id: str) -> bool:
    """Ask a sweep running in this process to stop all its trials (as Ctrl-C does)."""
    current = SESSIONS.get(sweep_id)
    if current is None:
        return False
    current.cancel.set()
    return True
