"""The sweep driver: a Ray Tune experiment over a notebook, tracked in MLflow, resumable, cancellable.

``run_sweep(spec, root=...)`` checks the spec, opens the parent MLflow run, runs Tune (random or
grid through ``BasicVariantGenerator``, TPE through ``OptunaSearch``; FIFO or ASHA), and closes
the parent with the best trial, a summary table and plots. State lives in
``$NBSCALE_HOME/sweeps/<sweep_id>/``: ``sweep.json`` (spec and MLflow ids), ``tune/`` (Tune's
experiment state, for ``resume_id``), ``trials/<trial_id>/attempt-N/output.ipynb``.
Ctrl-C (SIGINT) or SIGTERM stops every trial; their runs and the parent end KILLED.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import SpecError
from ..spec import RunSpec, check_run_spec, saved_run_spec
from ..tracking_uri import tracking_uri
from . import tracking, trial_host
from .callbacks import CANCELLED
from .logs import DRIVER_LOG, tune_logs_to
from .progress import SweepProgress
from .ray_connect import ensure_ray, joined_warm_head, release_warm_ray, scoped_environ
from .results import SweepResult
from .resume import completed_trials, reopen_cancelled, tune_state_to_restore
from .session import SESSIONS, SweepSession, cancel_sweep, sweeps_dir
from .summary import finish_sweep, row_from_trial
from .trial import TrialPlan, patient_trainable, run_trial

log = logging.getLogger(__name__)

def new_sweep_id() -> str:
    """``nbs-`` + 10 lowercase hex characters, like every nbscale run id."""
    return "nbs-" + secrets.token_hex(5)


def run_sweep(spec: RunSpec | None, *, root: str | os.PathLike[str], progress: bool = True,
              resume_id: str | None = None, sweep_id: str | None = None) -> SweepResult:
    """Run (or, with ``resume_id``, finish) a sweep and return its result."""
    state: dict[str, Any] | None = None
    if resume_id is not None:
        spec, state = _load_state(resume_id)
        sweep_id, uri = resume_id, state["tracking_uri"]
    else:
        if spec is None or spec.sweep is None:
            raise SpecError("run_sweep needs a RunSpec with a 'sweep' section (search space and metric).")
        spec = check_run_spec(spec, root=root)
        sweep_id, uri = sweep_id or new_sweep_id(), tracking_uri()
    assert spec.sweep is not None  # noqa: S101 - checked above or when the state was saved
    sweep_dir = sweeps_dir() / sweep_id
    with _helpers_starting(uri, fresh_kernel=spec.sweep.fresh_kernel) as helpers:
        state = state or _create_state(spec, sweep_id, Path(root), uri)
        mc = tracking.client(uri)
        completed: dict[str, dict[str, Any]] = {}
        restore = False  # whether Tune restores its saved state
        if resume_id is not None:
            # a run still open is RUNNING, not one of these: closing it KILLED below changes nothing here
            completed = completed_trials(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"],
                                         trials_dir=str(sweep_dir / "trials"), metric=spec.sweep.metric,
                                         distinct=list(spec.sweep.space) if spec.sweep.draws_points else None)
            # before the sweep's runs change: a resume that cannot keep its ended trials leaves them as they were
            restore = tune_state_to_restore(sweep_dir / "tune" / sweep_id, sweep_id=sweep_id, completed=completed)
            tracking.close_open_children(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"],
                                         status="KILLED")
            mc.update_run(state["parent_run_id"], status="RUNNING")
        agent_socket, host_socket = helpers()
    plan = TrialPlan(sweep_id=sweep_id, notebook=state["notebook_path"], workdir=state["workdir"],
                     trials_dir=str(sweep_dir / "trials"), fixed=spec.parameters, metric=spec.sweep.metric,
                     tracking_uri=uri, experiment_id=state["experiment_id"],
                     parent_run_id=state["parent_run_id"], tags=dict(spec.tracking.tags),
                     fresh_kernel=spec.sweep.fresh_kernel, report_interval=_report_interval(spec),
                     agent_socket=agent_socket, trial_host=host_socket, cancel_marker=str(sweep_dir / CANCELLED),
                     completed=completed)
    was_cancelled = resume_id is not None and (sweep_dir / CANCELLED).exists()
    (sweep_dir / CANCELLED).unlink(missing_ok=True)  # a resumed sweep was cancelled before
    display = SweepProgress(sweep_id=sweep_id, metric=spec.sweep.metric, mode=spec.sweep.mode,
                            total=spec.sweep.total_trials(), enabled=progress)
    session = SweepSession(sweep_id, spec, mc, state["experiment_id"], state["parent_run_id"], display)
    SESSIONS[sweep_id] = session
    started = time.monotonic()
    connected_before = joined_warm_head()  # a caller that joined the warm head itself (ensure_ray) stays joined
    try:
        with display, _cancel_on_signals(session.cancel):
            _fit(spec, plan, sweep_dir, restore=restore, cancelled=was_cancelled)
        return finish_sweep(session_client=mc, spec=spec, state=state, sweep_dir=sweep_dir, rows=session.rows,
                            cancelled=session.cancel.is_set(), seconds=time.monotonic() - started)
    finally:
        SESSIONS.pop(sweep_id, None)
        if not connected_before:
            release_warm_ray()


@contextmanager
def _helpers_starting(uri: str, *, fresh_kernel: bool) -> Iterator[Callable[[], tuple[str | None, str | None]]]:
    """Start the warm tracking agent and trial host side by side while the block talks to MLflow;
    the callable gives their sockets (None for one that is not used), waiting until both are bound.

    Each takes ~0.5 s to bind its socket when it has to start (the first sweep of a session), and
    the driver's MLflow work needs neither: one after the other and before that work, they held
    back the first trial (B2 of issue 19). Threads: both starts mostly wait for another process.
    """
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="nbscale-helpers") as pool:
        agent = pool.submit(_agent_socket, uri)
        host = None if fresh_kernel else pool.submit(trial_host.start_for_local_ray)
        yield lambda: (agent.result(), None if host is None else host.result())


def _agent_socket(uri: str) -> str | None:
    """The warm tracking agent's socket, for trial workers on this machine (tracking/trial_tracker.py)."""
    from ..tracking import agent

    path = agent.start_for(uri)
    return None if path is None else str(path)


def _report_interval(spec: RunSpec) -> float:
    """Seconds between the objective's intermediate reports to Tune (each one is a round trip to the
    driver, ~5 ms here). ASHA counts reports, so it gets every one; under FIFO they only feed the
    live display, so at most two a second (B3: 1000 logged steps cost 5.5 s unthrottled)."""
    configured = os.environ.get("NBSCALE_SWEEP_REPORT_INTERVAL")
    if configured:
        return float(configured)
    return 0.0 if spec.sweep is not None and spec.sweep.scheduler == "asha" else 0.5


def _create_state(spec: RunSpec, sweep_id: str, root: Path, uri: str) -> dict[str, Any]:
    from ..paths import resolve_notebook_path

    assert spec.sweep is not None  # noqa: S101 - run_sweep checked it
    absolute, _ = resolve_notebook_path(spec.notebook, root)
    mc = tracking.client(uri)
    experiment_id = tracking.ensure_experiment(mc, spec.experiment, uri)
    settings = spec.sweep.model_dump(mode="json", exclude={"space"})
    parent = tracking.open_parent_run(mc, experiment_id=experiment_id, sweep_id=sweep_id, name=f"sweep-{sweep_id}",
                                      space={k: d.to_text() for k, d in spec.sweep.space.items()}, settings=settings,
                                      fixed=spec.parameters, tags={**spec.tracking.tags, "nbscale.notebook": spec.notebook,
                                                                   "nbscale.user": spec.user})
    state = {"sweep_id": sweep_id, "spec": spec.model_dump(mode="json"), "notebook_path": str(absolute),
             "workdir": str(absolute.parent), "tracking_uri": uri, "experiment_id": experiment_id, "parent_run_id": parent}
    folder = sweeps_dir() / sweep_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sweep.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    return state


def _load_state(sweep_id: str) -> tuple[RunSpec, dict[str, Any]]:
    file = sweeps_dir() / sweep_id / "sweep.json"
    if not sweep_id.replace("-", "").isalnum() or not file.is_file():
        from ..errors import RunNotFound

        raise RunNotFound(f"no sweep {sweep_id!r} under {sweeps_dir()}; `nbscale runs` lists sweeps.")
    state = json.loads(file.read_text(encoding="utf-8"))
    return saved_run_spec(state["spec"]), state


def _tune_environ() -> dict[str, str]:
    """Tune's settings for a sweep, read by Tune while it runs; a caller's own Tune runs keep theirs."""
    defaults = {
        "TUNE_GLOBAL_CHECKPOINT_S": "1",  # a killed driver loses at most ~1 s of state
        "RAY_AIR_NEW_OUTPUT": "0",
        # MLflow holds every result: none of Tune's per-trial loggers (CSV, JSON, TensorBoard) runs. They cost
        # the driver ~6 ms a trial (B2 of issue 3), and the JSON one's files ~3 ms more when Tune read them
        # all back after the last trial for a result grid that no one reads (B2 of issue 19).
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    return {"TUNE_DISABLE_SIGINT_HANDLER": "1",  # ours stops the trials and marks them KILLED
            **{name: os.environ.get(name, value) for name, value in defaults.items()}}


def _fit(spec: RunSpec, plan: TrialPlan, sweep_dir: Path, *, restore: bool, cancelled: bool = False) -> None:
    """Run Tune over the sweep; with ``restore``, from its saved state (``tune_state_to_restore``)."""
    from ray import tune

    from .runtime_env import default_runtime_env

    assert spec.sweep is not None  # noqa: S101
    ensure_ray()
    if plan.trial_host:
        plan = _with_peers(spec, plan, sweep_dir)
    # default_runtime_env: trial actors may then start on Ray's idle workers
    with scoped_environ(_tune_environ()), default_runtime_env(), tune_logs_to(sweep_dir / DRIVER_LOG), _no_result_files_read():
        trainable = tune.with_resources(_trainable(plan), {"cpu": spec.sweep.cpus_per_trial, "gpu": spec.sweep.gpus_per_trial})
        experiment = sweep_dir / "tune" / plan.sweep_id
        if restore:  # else a new sweep, or one killed before Tune's first save, when no trial had started: begin afresh
            # a cancelled sweep's state says "all done": reopen_cancelled puts its search and its stopped trials back
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_unfinished=True,
                                       resume_errored=False, restart_errored=False,
                                       _resume_config=reopen_cancelled(experiment) if cancelled else None)
        else:
            listed = spec.sweep.draws_points  # a PointSearcher gives whole trials: no space for Tune to sample
            tuner = tune.Tuner(trainable, param_space={} if listed else spec.sweep.tune_space(),
                               tune_config=_tune_config(spec), run_config=_run_config(spec, plan, sweep_dir))
        tuner.fit()  # its result grid is left unread: the session's rows and MLflow hold every result


_UNREAD = threading.Lock()
_LOADER = "_fetch_trial_dataframes"  # Tune's private loader of every trial's result files
_unread: list[Any] = []  # Tune's own loader, while sweeps run; one entry per running sweep after the first


@contextmanager
def _no_result_files_read() -> Iterator[None]:
    """While Tune runs, the result grid it builds at the end reads no trial's result files.

    A sweep writes none (MLflow holds the results: ``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``), yet
    ``tune.run`` always ends by building an ``ExperimentAnalysis``, which looks for two files per
    trial and logs a warning for each trial that has none. Tune has no switch for it, so its
    loader is replaced while sweeps run in this process (counted: a warm driver runs several). The
    loader is private to Tune: on a Ray without it the sweep runs as ever, with Tune's warnings.
    """
    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    if getattr(ExperimentAnalysis, _LOADER, None) is None:
        log.debug("this Ray's ExperimentAnalysis has no %s: its result grid may warn of missing result files", _LOADER)
        yield
        return
    with _UNREAD:
        _unread.append(getattr(ExperimentAnalysis, _LOADER))
        setattr(ExperimentAnalysis, _LOADER, _no_dataframes)
    try:
        yield
    finally:
        with _UNREAD:
            setattr(ExperimentAnalysis, _LOADER, _unread.pop())


def _no_dataframes(analysis: Any) -> dict[str, Any]:
    """``ExperimentAnalysis._fetch_trial_dataframes`` for a sweep: no trial has result files to read."""
    return {}


def _with_peers(spec: RunSpec, plan: TrialPlan, sweep_dir: Path) -> TrialPlan:
    """The plan with the number of trial workers that can run at once on this Ray (``trial._meet_peers``)."""
    import ray

    sweep = spec.sweep
    assert sweep is not None  # noqa: S101
    resources = ray.cluster_resources()
    peers = min(sweep.concurrency, sweep.total_trials(), int(resources.get("CPU", 0) // sweep.cpus_per_trial))
    if sweep.gpus_per_trial:
        peers = min(peers, int(resources.get("GPU", 0) // sweep.gpus_per_trial))
    # one folder per driver session: a resumed sweep's workers meet afresh
    return replace(plan, peers=max(peers, 1), peers_dir=str(sweep_dir / "workers" / f"{os.getpid()}-{time.time_ns()}"))


def _trainable(plan: TrialPlan) -> Any:
    """Tune's function trainable for this sweep: ``run_trial`` with the plan in its closure.

    ``tune.with_parameters`` would keep the plan in Ray's object store and fetch it at the start of
    every trial, ~6 ms of each trial's turn on 2 cores (B2 of issue 3). The plan is a few hundred
    bytes, so it travels with the function, which Tune ships to its actors once.
    """

    def trainable(config: dict[str, Any]) -> None:
        run_trial(config, plan)

    trainable.__name__ = trainable.__qualname__ = run_trial.__name__  # Tune names trials and their folders after it
    return patient_trainable(trainable, plan.cancel_marker)


def _tune_config(spec: RunSpec) -> Any:
    from ray import tune

    sweep = spec.sweep
    assert sweep is not None  # noqa: S101
    search_alg: Any = None
    num_samples = sweep.effective_samples
    points = sweep.distinct_points(random.Random(sweep.seed))
    if points is not None:
        from .points import PointSearcher

        search_alg, num_samples = PointSearcher(points, metric=sweep.metric, mode=sweep.mode), len(points)
    elif sweep.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=sweep.seed)
    elif sweep.seed is not None:
        from ray.tune.search import BasicVariantGenerator

        # Tune ignores max_concurrent_trials for a search generator: it takes the limit itself
        search_alg = BasicVariantGenerator(random_state=sweep.seed, max_concurrent=sweep.concurrency)
    scheduler: Any = None
    if sweep.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=sweep.max_steps,
                                  grace_period=sweep.grace_period, reduction_factor=sweep.reduction_factor)
    return tune.TuneConfig(metric=sweep.metric, mode=sweep.mode, num_samples=num_samples,
                           max_concurrent_trials=sweep.concurrency, search_alg=search_alg, scheduler=scheduler,
                           time_budget_s=sweep.time_budget_s, reuse_actors=True)


def _run_config(spec: RunSpec, plan: TrialPlan, sweep_dir: Path) -> Any:
    from ray import tune

    from .callbacks import CancelStopper, SweepCallback

    assert spec.sweep is not None  # noqa: S101
    return tune.RunConfig(name=plan.sweep_id, storage_path=str(sweep_dir / "tune"), verbose=0,
                          failure_config=tune.FailureConfig(max_failures=spec.sweep.max_failures),
                          callbacks=[SweepCallback(plan.sweep_id)], stop=CancelStopper(plan.sweep_id),
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=1))


class _cancel_on_signals:  # noqa: N801 - used as a context manager, named like one
    """SIGINT/SIGTERM set ``event`` (the stopper ends every trial); a second SIGINT raises as usual."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("signal %s: stopping every trial of the sweep", signum)
        self.event.set()

    def __enter__(self) -> _cancel_on_signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


__all__ = ["cancel_sweep", "ensure_ray", "new_sweep_id", "release_warm_ray", "row_from_trial", "run_sweep", "sweeps_dir"]
