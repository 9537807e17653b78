"""A trial's metric hooks inside its sandbox, wherever the notebook runs (a Ray worker, a trial host's
child, a fresh process): which of its metrics reach Tune, and where its MLflow calls go.

``trial.py`` (the Ray worker's side), ``trial_host.py`` and ``fresh.py`` all use these; this module
imports none of them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from . import tracking

#: A trial's status when the sweep was cancelled (MLflow's status of its run as well).
KILLED = "KILLED"


class ReportThrottle:
    """Which of the notebook's metrics go to Tune: the objective, at most every ``interval`` seconds, until stopped."""

    def __init__(self, metric: str, interval: float) -> None:
        # The clock starts with the trial: a throttled trial that ends within ``interval`` reports only
        # its final result, one round trip to the driver instead of two (B2 of issue 3).
        self.metric, self.interval, self._last = metric, interval, time.monotonic()
        self.stopped = False

    def due(self, name: str) -> bool:
        if name != self.metric or self.stopped:
            return False
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        return True


def cancelled(marker: str | None) -> bool:
    """Whether the sweep was cancelled: its driver wrote ``marker`` (``callbacks.CANCELLED``) before Tune stopped the trials."""
    return marker is not None and os.path.exists(marker)


@contextmanager
def active_run(run_id: str, hook: tracking.MetricHook, cancel_marker: str | None = None) -> Iterator[None]:
    """Inside the trial's sandbox: metrics go to ``hook``, any other fluent MLflow call to the child run.

    The run is not started here: ``MLFLOW_RUN_ID`` is in the sandbox's environment, so the first
    fluent call that needs a run (``log_param``, ``set_tag``, ``log_artifact``...) resumes it, as it
    does in a step's kernel. A notebook that only logs metrics costs no store round trip for it.
    Ending a resumed run here writes its status; the worker writes the final one afterwards. When
    the sweep was cancelled (``cancel_marker`` exists) that status is KILLED, as the driver's: the
    worker, stopped with the sweep, may never get to write its own.
    """
    import mlflow

    while mlflow.active_run() is not None:  # a run left open by anything before us is not ours to log into
        mlflow.end_run()
    try:
        with tracking.intercept_metrics(hook):
            yield
    finally:
        status = KILLED if cancelled(cancel_marker) else "FINISHED"
        while mlflow.active_run() is not None:  # ours, and any the notebook started and left open
            mlflow.end_run(status)
