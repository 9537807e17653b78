"""A resumed sweep reruns no trial that completed or was stopped early: what it takes from MLflow before Tune restores.

Tune saves its experiment state at most every ``TUNE_GLOBAL_CHECKPOINT_S`` (1 s here). A trial that
completed after the last save (its worker ended the child run COMPLETED, then reported to Tune) is
RUNNING or PENDING in the state a resume restores, and Tune starts it again: its notebook would run
twice and its trial would have two COMPLETED runs. MLflow is the record that was written first, so
the driver lists those runs before Tune restores (``completed_trials``), and a trial given one hands
Tune the recorded result instead of running the notebook (``trial.run_trial``). A trial the
scheduler (ASHA) had stopped early is the same: its record is replayed, so it stays stopped.

A trial Tune had not created yet at its last save comes back with a new id. When the sweep's trials
are drawn points (``points.PointSearcher``: no two alike), its parameters still find its run
(``tracking.point_key``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ExecutionError
from . import tracking
from .trial import OUTPUT_KEY, RUN_KEY, SECONDS_KEY, STATUS_KEY
from .worker import COMPLETED, EARLY_STOPPED

#: Tune's count of a trial's reports, which the table shows as its steps.
_STEPS_KEY = "training_iteration"


def completed_trials(mlflow_client: Any, *, experiment_id: str, parent_run_id: str, trials_dir: str, metric: str,
                     distinct: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Trial id -> the last report of its first child run that COMPLETED or was EARLY_STOPPED (by the
    scheduler, before the interruption), as the trial made it to Tune, its steps the objective's
    values the run logged; with ``distinct`` (the swept names of a sweep whose trials never
    repeat), also ``point_key`` -> it."""
    results: dict[str, dict[str, Any]] = {}
    for run in tracking.child_runs(mlflow_client, experiment_id=experiment_id, parent_run_id=parent_run_id):
        trial_id, status = run.data.tags.get(tracking.TAG_TRIAL), run.data.tags.get(tracking.TAG_STATUS)
        if not trial_id or trial_id in results or run.info.status != "FINISHED" or status not in (COMPLETED, EARLY_STOPPED):
            continue
        attempt = (run.info.run_name or "").removeprefix(f"{trial_id}-")  # trial.run_trial names it <trial id>-attempt-N
        results[trial_id] = {**run.data.metrics, STATUS_KEY: status, RUN_KEY: run.info.run_id,
                             OUTPUT_KEY: str(Path(trials_dir) / trial_id / attempt / "output.ipynb"), "step": -1,
                             _STEPS_KEY: len(mlflow_client.get_metric_history(run.info.run_id, metric))}
        if status == COMPLETED:  # a trial stopped early reported no time of its own
            end, start = run.info.end_time, run.info.start_time
            results[trial_id][SECONDS_KEY] = (end - start) / 1000 if end and start else None
        if distinct is not None:
            results.setdefault(tracking.point_key({name: run.data.params.get(name) for name in distinct}), results[trial_id])
    return results


def tune_saved(experiment: Path) -> bool:
    """Whether Tune saved its experiment state (its trials and search) in ``experiment``.

    Tune first saves it in its first step, before any trial's notebook starts. A sweep killed before
    that has no trial to take up, and Tune's restore of it would start an experiment of its own
    without the sweep's search space (one trial, no parameters): its resume begins the sweep afresh.
    The state file's name is Tune's own (no public API names it): a Ray without it is an
    ``ExecutionError``, not a silent "nothing saved".
    """
    import ray

    try:
        from ray.tune.execution.tune_controller import TuneController

        pattern = TuneController.CKPT_FILE_TMPL.format("*")
    except (ImportError, AttributeError) as error:
        raise ExecutionError(
            f"cannot resume this sweep with Ray {ray.__version__}: nbscale cannot find where this Ray's Tune "
            f"saves its experiment state ({error}). Start the sweep again (without --resume), or resume it "
            "with the Ray version that started it.") from error
    return any(experiment.glob(pattern))


def tune_state_to_restore(experiment: Path, *, sweep_id: str, completed: dict[str, dict[str, Any]]) -> bool:
    """Whether a resume restores Tune's saved state (else it begins Tune afresh); an ``ExecutionError``
    when no state is found yet ``completed`` (``completed_trials``) holds trials that ended.

    A sweep killed before Tune's first save has no ended trial (that save comes before any notebook
    starts), so both at once mean the state is where this Ray does not look: beginning afresh would
    run every ended trial's notebook again, with a second MLflow run each.
    """
    if tune_saved(experiment):
        return True
    if completed:
        ended = len({result[RUN_KEY] for result in completed.values()})
        raise ExecutionError(
            f"cannot resume sweep {sweep_id}: MLflow holds {ended} ended trial(s) of it, but Tune's saved state "
            f"is not in {experiment} (moved or deleted, or a Ray upgrade renamed it). Resuming would run those "
            "trials again. Put the folder's files back, or start the sweep again (without --resume).")
    return False


#: Where Tune keeps its search state in the experiment folder, and the key that says "finished".
_SEARCH_STATES = (("search_gen_state-{}.json", "finished"), ("basic-variant-state-{}.json", "_finished"))


def reopen_cancelled(experiment: Path) -> Any:
    """Make a cancelled sweep's saved Tune state resumable; the ``ResumeConfig`` to restore it with.

    A cancel ends the experiment through the stopper's ``stop_all``: Tune then marks its search
    finished and the stopped trials TERMINATED, like completed ones, and saves that, so a plain
    restore finds nothing left to run. Here the search is marked unfinished again (Tune has no
    public way to do it: its own state files are rewritten with its own helpers), and finished
    trials are resumed under their ids: a completed one, or one the scheduler had stopped early,
    hands Tune its recorded result from ``completed_trials`` without running its notebook; a
    cancelled one runs again.
    """
    import ray.cloudpickle as cloudpickle
    from ray.tune import ResumeConfig
    from ray.tune.utils.util import _atomic_save

    for pattern, key in _SEARCH_STATES:
        paths = sorted(experiment.glob(pattern.format("*")))
        if not paths:
            continue
        newest = paths[-1]  # the file Tune restores (``_load_newest_checkpoint`` takes the greatest name)
        with newest.open("rb") as file:
            state = cloudpickle.load(file)
        if isinstance(state, dict) and state.get(key):
            state[key] = False
            _atomic_save(state, str(experiment), newest.name, f"tmp-{newest.name}")
    resume, skip = ResumeConfig.ResumeType.RESUME, ResumeConfig.ResumeType.SKIP
    # Tune annotates these fields str but compares them with its enum, as Tuner.restore passes them
    return ResumeConfig(finished=resume, unfinished=resume, errored=skip)  # type: ignore[arg-type]
