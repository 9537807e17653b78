"""One trial, as Ray Tune runs it: the function trainable that executes the notebook.

Tune reuses the actor between trials (``reuse_actors=True``), so the process-wide warm runner of
``worker.py`` survives from one trial to the next. Every ``mlflow.log_metric`` in the notebook is
buffered for MLflow and, for the objective metric, reported to Tune, which lets ASHA stop the trial
at that very call (Tune's ``report`` then raises ``SystemExit``, turned into ``TrialStopped``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tracking.trial_tracker import trial_tracker
from . import tracking
from .fresh import run_in_fresh_process
from .runtime_env import TRIAL_ENV
from .trial_host import HostChild
from .trial_metrics import KILLED, ReportThrottle, active_run, cancelled
from .worker import COMPLETED, EARLY_STOPPED, FAILED, TrialOutcome, TrialStopped, quiet_papermill, warm_runner

log = logging.getLogger(__name__)

#: Tag of a trial's child run: the pid of the Ray worker that ran it. The notebook's own pid differs when
#: it ran in the worker's child of the trial host, or in a fresh process (``fresh_kernel``).
TAG_WORKER_PID = "nbscale.worker_pid"
#: Result keys the driver reads back (everything else in a result is the notebook's metrics).
STATUS_KEY, RUN_KEY, SECONDS_KEY, PID_KEY, OUTPUT_KEY = "nbscale_status", "nbscale_run_id", "nbscale_seconds", "nbscale_pid", "nbscale_output"


class TrialFailed(RuntimeError):
    """The notebook raised, its process died, or it never logged the objective metric."""


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """What every trial of one sweep shares; small and picklable (it travels to each worker)."""

    sweep_id: str
    notebook: str
    workdir: str
    trials_dir: str
    fixed: dict[str, Any]
    metric: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: dict[str, str] = field(default_factory=dict)
    fresh_kernel: bool = False
    kernel_name: str = "python3"
    report_interval: float = 0.0
    #: The warm tracking agent's socket when it may take the trials' MLflow writes (tracking/trial_tracker.py).
    agent_socket: str | None = None
    #: The warm trial host's socket when the trial workers run on this machine (trial_host.py).
    trial_host: str | None = None
    #: The file a cancelled sweep writes (``callbacks.CANCELLED``): a stopped trial's run then ends KILLED.
    cancel_marker: str | None = None
    #: Trial workers expected at once, and a folder where each announces its first trial (``_meet_peers``).
    peers: int = 1
    peers_dir: str | None = None
    #: A resumed sweep's trials whose runs completed or were stopped early before it was interrupted: their last reports (resume.py).
    completed: dict[str, dict[str, Any]] = field(default_factory=dict)


class _TuneReporter(ReportThrottle):
    """Reports the objective metric to Tune; a stop decision surfaces as TrialStopped.

    Every report names the trial's MLflow run and output notebook (``identity``): a trial the
    scheduler stops never makes a final report, and its row must still point at its run.
    """

    def __init__(self, metric: str, interval: float, identity: dict[str, str]) -> None:
        super().__init__(metric, interval)
        self.identity = identity

    def __call__(self, name: str, value: float, step: int | None) -> None:
        if self.due(name):
            self.report(value, step)

    def report(self, value: float, step: int | None) -> None:
        from ray import tune

        try:
            tune.report({self.metric: value, "step": step if step is not None else -1, **self.identity})
        except SystemExit:  # Tune's way of ending a function trainable it has stopped
            self.stopped = True
            raise TrialStopped() from None


def missing_metric_error(metric: str, logged: Iterable[str]) -> str:
    """Why a trial that ran to its end failed: the objective was never logged; names what was, to catch a typo."""
    names = sorted(logged)
    if not names:
        return f"the notebook never logged the metric {metric!r}: call mlflow.log_metric({metric!r}, value) in it"
    return (f"the notebook never logged the metric {metric!r} (mlflow.log_metric); it logged {', '.join(map(repr, names))}: "
            "pass one of those as the sweep's metric")


def run_trial(config: dict[str, Any], plan: TrialPlan) -> None:
    """The Tune function trainable: run the notebook once with ``config`` as its swept parameters."""
    from ray import tune

    os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = str(STOPPED_THREAD_WAIT_S)  # time to close the run after an early stop
    trial_id = tune.get_context().get_trial_id()
    if plan.completed:  # a resumed sweep: a trial that completed or was stopped early reports its record again
        recorded = plan.completed.get(trial_id) or plan.completed.get(
            tracking.point_key({name: tracking.param_text(value) for name, value in config.items()}))
        if recorded is not None:
            tune.report(recorded)
            return
    out_dir = _attempt_dir(Path(plan.trials_dir) / trial_id)
    params = {**plan.fixed, **config}
    tracker = trial_tracker(plan.tracking_uri, plan.agent_socket)
    run_id, artifact_uri = tracker.open(experiment_id=plan.experiment_id, parent_run_id=plan.parent_run_id,
                                        sweep_id=plan.sweep_id, trial_id=trial_id, name=f"{trial_id}-{out_dir.name}",
                                        params=params, tags={**plan.tags, TAG_WORKER_PID: str(os.getpid())})
    buffer = tracking.MetricBuffer(lambda rows: tracker.log_metrics(run_id, rows))
    host = None if plan.fresh_kernel else _host_child(plan.trial_host)
    if host is not None:
        _meet_peers(plan)
    else:
        import mlflow  # noqa: F401 - the metric hooks patch it; imported before the report interval's clock starts
    reporter = _TuneReporter(plan.metric, plan.report_interval, {RUN_KEY: run_id, OUTPUT_KEY: str(out_dir / "output.ipynb")})
    env = {**TRIAL_ENV, "MLFLOW_TRACKING_URI": plan.tracking_uri, "MLFLOW_RUN_ID": run_id, "NBSCALE_TRIAL_ID": trial_id,
           "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in _gpu_ids())}
    try:
        outcome = _execute(plan, params, out_dir, env, run_id, buffer, reporter, host)
    finally:
        pending = buffer.close()
    if outcome.status == COMPLETED and plan.metric not in buffer.last:
        outcome.status, outcome.error = FAILED, missing_metric_error(plan.metric, buffer.last)
    if outcome.status == EARLY_STOPPED and cancelled(plan.cancel_marker):
        outcome.status = KILLED  # Tune stopped it because the sweep was cancelled, not on the scheduler's word
    artifacts = (str(outcome.output_path),) if outcome.output_path.exists() else ()
    # A completed trial does not wait for its run's end (the agent's, when there is one): Tune's
    # callbacks close the runs of the others too, so those are ended before Tune hears of them.
    tracker.finish(run_id, outcome.status, error=outcome.error, artifacts=artifacts, metrics=pending,
                   artifact_uri=artifact_uri, wait=outcome.status != COMPLETED)
    if outcome.status == FAILED:
        raise TrialFailed(outcome.error or "the notebook failed")
    if outcome.status in (EARLY_STOPPED, KILLED):
        raise SystemExit(0)  # what Tune raised in report(): end the thread without Tune's closing report
    if outcome.status == COMPLETED:
        tune.report({**buffer.last, STATUS_KEY: COMPLETED, RUN_KEY: run_id, SECONDS_KEY: outcome.seconds,
                     PID_KEY: outcome.pid, OUTPUT_KEY: str(outcome.output_path), "step": -1})


#: Seconds a trial worker's actor waits, before it goes, for the thread of a trial the scheduler stopped.
STOPPED_THREAD_WAIT_S = 30


def patient_trainable(trainable: Callable[[dict[str, Any]], None], cancel_marker: str | None) -> Any:
    """Tune's trainable class for the function ``trainable``, whose actor lets a stopped trial end its run.

    Tune waits for the thread of a trial the scheduler stopped only when it reuses the actor for
    another trial. When it removes the actor instead (the sweep's last trials), it gives that thread
    no time: the worker's process ended while the trial's run still waited for its last metrics
    and partial notebook. Here the actor waits for the thread first, unless the sweep was cancelled.
    """
    from ray.train._internal.session import get_session
    from ray.tune.trainable import wrap_function

    base: Any = wrap_function(trainable)

    class PatientTrainable(base):  # type: ignore[misc,valid-type]
        def cleanup(self) -> None:
            session = get_session()
            if (session is not None and session.training_started and session.training_thread.is_alive()
                    and not cancelled(cancel_marker)):
                session.finish(timeout=STOPPED_THREAD_WAIT_S)  # the trial's report raises, and its run ends
            super().cleanup()

    PatientTrainable.__name__ = PatientTrainable.__qualname__ = base.__name__
    return PatientTrainable


def _execute(plan: TrialPlan, params: dict[str, Any], out_dir: Path, env: dict[str, str], run_id: str,
             buffer: tracking.MetricBuffer, reporter: _TuneReporter, host: HostChild | None) -> TrialOutcome:
    output = out_dir / "output.ipynb"
    if host is not None:
        request = {"notebook": plan.notebook, "output": str(output), "params": params, "cwd": plan.workdir, "env": env,
                   "run_id": run_id, "metric": plan.metric, "interval": plan.report_interval, "kernel_name": plan.kernel_name,
                   "cancel_marker": plan.cancel_marker}
        return host.run(request, on_metric=buffer.add, report=reporter.report)

    def on_metric(name: str, value: float, step: int | None) -> None:
        buffer.add(name, value, step)
        reporter(name, value, step)

    if plan.fresh_kernel:
        return run_in_fresh_process(plan.notebook, output, params, cwd=Path(plan.workdir), env=env, kernel_name=plan.kernel_name,
                                    on_metric=on_metric, stopped=lambda: reporter.stopped)
    with quiet_papermill():
        return warm_runner().run(Path(plan.notebook), output, params, cwd=Path(plan.workdir), env=env,
                                 kernel_name=plan.kernel_name, context=lambda: active_run(run_id, on_metric, plan.cancel_marker))


_HOSTS: dict[str, HostChild | None] = {}
_MET: set[str] = set()
PEER_WAIT_S = 2.0


def _meet_peers(plan: TrialPlan) -> None:
    """Before this worker's first trial, wait (at most ``PEER_WAIT_S``) until the sweep's other
    workers have started too.

    Tune gives a pending trial an idle, cached actor rather than wait for the actor it is starting
    for that trial, and removes that one. A trial in a warm host's child takes far less time than a
    new actor takes to start, so without this the first worker to start ran nearly every trial
    while Tune started and discarded one new worker after another (a 100-trial sweep on 2 cores:
    ~60% longer, 4 workers started in vain). Once every worker has a trial, each gets the next one
    as it ends. Workers on other machines never get here: they have no trial host.
    """
    if plan.peers < 2 or plan.peers_dir is None or plan.peers_dir in _MET:
        return
    _MET.add(plan.peers_dir)
    folder = Path(plan.peers_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + PEER_WAIT_S
    while len(os.listdir(folder)) < plan.peers and time.monotonic() < deadline:
        time.sleep(0.01)


def _host_child(path: str | None) -> HostChild | None:
    """This worker's child of the warm trial host (trial_host.py): kept across trials, replaced when
    it died; None when there is no host to use, and then for the rest of this worker's life."""
    if not path:
        return None
    child = _HOSTS.get(path)
    if path in _HOSTS and (child is None or not child.closed):
        return child
    _HOSTS[path] = HostChild.connect(path)
    return _HOSTS[path]


def _attempt_dir(trial_dir: Path) -> Path:
    """``trials/<trial_id>/attempt-N``: a retried trial keeps every attempt's output notebook."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    n = 1 + sum(1 for p in trial_dir.iterdir() if p.name.startswith("attempt-"))
    path = trial_dir / f"attempt-{n}"
    path.mkdir()
    return path


def _gpu_ids() -> list[Any]:
    import ray

    return list(ray.get_gpu_ids())


def outcome_status(last_result: dict[str, Any] | None) -> str:
    """COMPLETED when the trial reported its end; a trial Tune ended without that was stopped early."""
    return COMPLETED if (last_result or {}).get(STATUS_KEY) == COMPLETED else EARLY_STOPPED
