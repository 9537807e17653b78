"""``--resume`` reruns no completed trial, and a random search over listed values never repeats one,
on the session's Ray (``ray_cluster``) with a notebook written with nbformat, as a user's would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest

from workflow_compiler.spec import RunSpec, parse_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``objective.ipynb``: parameters ``x`` and ``sleep``; logs ``score`` = x twice, ``sleep`` s apart."""
    folder = tmp_path_factory.mktemp("resume")
    cells = [nbformat.v4.new_code_cell("x = 1.0\nsleep = 0.0", metadata={"tags": ["parameters"]}),
             nbformat.v4.new_code_cell("import time\nimport mlflow\nfor step in range(2):\n    time.sleep(sleep)\n"
                                       "    mlflow.log_metric('score', x, step=step)")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), folder / "objective.ipynb")
    return folder


def _spec(space: dict[str, str], **sweep: Any) -> RunSpec:
    return parse_model(RunSpec, {"notebook": "objective.ipynb", "parameters": {"sleep": 0.3},
                                 "sweep": {"space": space, "metric": "score", "mode": "max", "concurrency": 1, **sweep}}, what="test sweep")


def _children(home: Path, sweep_id: str) -> list[Any]:
    from workflow_compiler.sweep import tracking

    state = json.loads((home / "sweeps" / sweep_id / "sweep.json").read_text(encoding="utf-8"))
    mc = tracking.client(state["tracking_uri"])
    return tracking.child_runs(mc, experiment_id=state["experiment_id"], parent_run_id=state["parent_run_id"])


def _completed_runs(home: Path, sweep_id: str, status: str = "COMPLETED") -> list[Any]:
    from workflow_compiler.sweep import tracking

    if not (home / "sweeps" / sweep_id / "sweep.json").is_file():
        return []
    # FINISHED too: a run whose worker died between its status tag and its end is closed KILLED by the resume
    return [r for r in _children(home, sweep_id) if r.data.tags.get(tracking.TAG_STATUS) == status and r.info.status == "FINISHED"]


def _two_completed(home: Path, sweep_id: str) -> bool:
    return len(_completed_runs(home, sweep_id)) >= 2


def _kill_after_completed(workspace: Path, home: Path, spec: RunSpec, sweep_id: str, env: dict[str, str],
                          interrupt: bool = False, until: Callable[[Path, str], bool] = _two_completed) -> list[Any]:
    """Run the sweep's driver in a process of its own and kill it once two trials' runs completed (or ``until``
    says so); the runs that completed.

    With ``interrupt``, send it SIGINT instead (a user's Ctrl-C) and wait for it to end KILLED (exit 130)."""
    driver = subprocess.Popen([sys.executable, "-m", "workflow_compiler.sweep", "--spec-json", spec.model_dump_json(),
                               "--root", str(workspace), "--sweep-id", sweep_id, "--no-progress", "--json"],
                              env={**os.environ, "NBSCALE_HOME": str(home), **env}, cwd=workspace,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not until(home, sweep_id):
            assert driver.poll() is None and time.monotonic() < deadline, "the driver ended or took too long"
            time.sleep(0.2)
        if interrupt:
            driver.send_signal(signal.SIGINT)
            assert driver.wait(timeout=120) == 130
    finally:
        driver.kill()  # without a word: no cleanup of its own
        driver.wait()
    return _completed_runs(home, sweep_id)


def test_a_trial_that_completed_after_tunes_last_save_is_not_run_again(ray_cluster: str, home: Path, workspace: Path) -> None:
    """Tune saves its state once, at the start (a long checkpoint period): every trial that completed
    before the kill is PENDING or RUNNING in what the resume restores. Each keeps its one run."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = "nbs-00000resum"
    before = _kill_after_completed(workspace, home, _spec({"x": "grid(1.0, 2.0, 3.0, 4.0)"}, search="grid"), sweep_id,
                                   {"TUNE_GLOBAL_CHECKPOINT_S": "3600"})
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)

    assert result.status == "SUCCEEDED" and result.counts["COMPLETED"] == result.counts["total"] == 4
    assert sorted(t.params["x"] for t in result.trials) == [1.0, 2.0, 3.0, 4.0]  # one row per trial
    completed = Counter(r.data.tags[tracking.TAG_TRIAL] for r in _completed_runs(home, sweep_id))
    assert completed == Counter({t.trial_id: 1 for t in result.trials}), completed  # one COMPLETED run per trial
    rows = {t.trial_id: t for t in result.trials}
    for run in before:  # its row is the run from before the kill, and its notebook ran once
        row = rows[run.data.tags[tracking.TAG_TRIAL]]
        assert (row.run_id, row.value, row.status) == (run.info.run_id, run.data.metrics["score"], "COMPLETED")
        assert row.output_notebook is not None and Path(row.output_notebook).is_file()
        assert [p.name for p in (home / "sweeps" / sweep_id / "trials" / row.trial_id).iterdir()] == ["attempt-1"]
    summary = json.loads((Path(result.sweep_dir) / "result.json").read_text(encoding="utf-8"))
    assert summary["counts"]["COMPLETED"] == 4 and len(summary["trials"]) == 4


@pytest.mark.parametrize(("space", "sweep"), [
    ({"x": "grid(1.0, 2.0, 3.0, 4.0, 5.0, 6.0)"}, {"search": "grid"}),  # PointSearcher under Tune's SearchGenerator
    ({"x": "uniform(0.0, 1.0)"}, {"samples": 6, "seed": 4}),  # Tune's BasicVariantGenerator
    ({"x": "uniform(0.0, 1.0)"}, {"search": "optuna", "samples": 6, "seed": 4}),  # Tune's OptunaSearch under its SearchGenerator
], ids=["grid", "random", "optuna"])
def test_a_sweep_cancelled_by_ctrl_c_is_finished_by_its_resume(ray_cluster: str, home: Path, workspace: Path,
                                                              space: dict[str, str], sweep: dict[str, Any]) -> None:
    """Ctrl-C ends the sweep KILLED part-way; ``--resume`` then runs the killed trials again and the ones
    never started, and reruns none that completed: every point COMPLETED exactly once."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = f"nbs-0000ctrlc{len(sweep)}"
    before = _kill_after_completed(workspace, home, _spec(space, **sweep), sweep_id, {}, interrupt=True)
    assert 2 <= len(before) < 6
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)

    assert result.status == "SUCCEEDED", (result.status, result.counts)
    assert result.counts["COMPLETED"] == result.counts["total"] == 6, result.counts
    runs = _completed_runs(home, sweep_id)
    assert sorted(float(r.data.params["x"]) for r in runs) == sorted(t.params["x"] for t in result.trials)  # one run a point
    assert len({t.params["x"] for t in result.trials}) == 6
    assert {r.info.run_id for r in before} <= {r.info.run_id for r in runs}  # those that completed did not run again
    by_run = {t.run_id: t for t in result.trials}
    assert [by_run[r.info.run_id].steps for r in before] == [2] * len(before)  # a replayed row: the two steps its run logged
    others = [r for r in _children(home, sweep_id) if r.info.run_id not in {c.info.run_id for c in runs}]
    assert all(r.info.status == "KILLED" and r.data.tags.get(tracking.TAG_STATUS) != "COMPLETED" for r in others)  # cancelled attempts
    if sweep.get("search") == "optuna":  # the study learnt every trial's final value, the rerun ones' too
        assert sorted(_optuna_told(Path(result.sweep_dir))) == sorted(t.value for t in result.trials)


def _optuna_told(sweep_dir: Path) -> list[float]:
    """The values Tune's OptunaSearch told its study, as the newest searcher state Tune saved holds them."""
    import pickle

    (state,) = sorted((sweep_dir / "tune").glob("*/searcher-state-*.pkl"))[-1:]
    with state.open("rb") as file:
        study = pickle.load(file)["_ot_study"]  # noqa: S301 - the test's own sweep folder
    return [t.value for t in study.trials if t.state.name == "COMPLETE"]


def test_a_drawn_trial_tune_had_not_created_at_its_last_save_finds_its_run_by_its_parameters(ray_cluster: str, home: Path,
                                                                                             workspace: Path) -> None:
    """A random search over listed values: Tune creates a trial only as a slot frees, so its one save
    at the start holds the first trial alone; the others come back with new ids, and no point runs twice."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = "nbs-00000drawn"
    values = ", ".join(str(float(x)) for x in range(1, 7))
    before = _kill_after_completed(workspace, home, _spec({"x": f"choice({values})"}, samples=4, seed=5), sweep_id,
                                   {"TUNE_GLOBAL_CHECKPOINT_S": "3600"})
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)
    xs = sorted(t.params["x"] for t in result.trials)
    assert result.counts["COMPLETED"] == 4 and len(set(xs)) == 4, xs
    runs = _completed_runs(home, sweep_id)
    assert sorted(float(r.data.params["x"]) for r in runs) == xs  # one COMPLETED run per point
    by_run = {t.run_id: t for t in result.trials}
    assert all(by_run[r.info.run_id].value == r.data.metrics["score"] for r in before)  # their rows are those runs
    assert {r.data.tags[tracking.TAG_TRIAL] for r in before} - {t.trial_id for t in result.trials}  # some came back with new ids


def test_a_random_search_over_listed_values_runs_each_combination_once(ray_cluster: str, home: Path, workspace: Path) -> None:
    from workflow_compiler.sweep.driver import run_sweep

    combinations = [{"x": x, "sleep": s} for x in (1.0, 2.0) for s in (0.0, 0.01)]
    spec = _spec({"x": "choice(1.0, 2.0)", "sleep": "choice(0.0, 0.01)"}, seed=7, concurrency=2)
    spec = spec.model_copy(update={"parameters": {}})
    result = run_sweep(spec, root=workspace, progress=False)  # samples left out: the default 10 is capped at 4
    assert sorted(json.dumps(t.params, sort_keys=True) for t in result.trials) == sorted(json.dumps(c, sort_keys=True) for c in combinations)
    assert result.counts["COMPLETED"] == 4 and len(_children(home, result.sweep_id)) == 4


def test_a_resumed_random_search_over_listed_values_goes_on_where_it_was(ray_cluster: str, home: Path, workspace: Path) -> None:
    """The searcher that hands out the drawn trials is saved with Tune's state and taken up again."""
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = "nbs-00000rands"
    values = ", ".join(str(float(x)) for x in range(1, 7))
    _kill_after_completed(workspace, home, _spec({"x": f"choice({values})"}, samples=5, seed=3), sweep_id, {})
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)
    xs = [t.params["x"] for t in result.trials]
    assert result.counts["COMPLETED"] == 5 and len(xs) == len(set(xs)) == 5, xs  # five different values, none twice


def test_a_cancelled_asha_sweep_resumes_with_its_early_stopped_trials_still_stopped(ray_cluster: str, home: Path,
                                                                                   workspace: Path) -> None:
    """Falling values under ASHA (max): the first trial completes, the next ones stop at their first step. Ctrl-C,
    then ``--resume``: a trial stopped early keeps its one run and its row, with the step it logged; only the
    trials the cancel killed, and those never started, run."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = "nbs-00000ashac"
    values = [float(x) for x in range(12, 0, -1)]
    spec = _spec({"x": f"grid({', '.join(map(str, values))})"}, search="grid", scheduler="asha")

    def stopped_some(home: Path, sweep_id: str) -> bool:
        return len(_completed_runs(home, sweep_id, "EARLY_STOPPED")) >= 2

    _kill_after_completed(workspace, home, spec, sweep_id, {}, interrupt=True, until=stopped_some)
    stopped = _completed_runs(home, sweep_id, "EARLY_STOPPED")
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)

    assert result.status == "SUCCEEDED" and result.counts["total"] == 12, result.counts
    assert sorted(t.params["x"] for t in result.trials) == sorted(values)  # one row a point
    rows = {t.trial_id: t for t in result.trials}
    for run in stopped:  # still stopped early: its row is its run, and its notebook did not run again
        row = rows[run.data.tags[tracking.TAG_TRIAL]]
        assert (row.status, row.run_id, row.value, row.steps) == ("EARLY_STOPPED", run.info.run_id, run.data.metrics["score"], 1)
        assert [p.name for p in (home / "sweeps" / sweep_id / "trials" / row.trial_id).iterdir()] == ["attempt-1"]
    ended = Counter(float(r.data.params["x"]) for r in _children(home, sweep_id)
                    if r.data.tags.get(tracking.TAG_STATUS) in ("COMPLETED", "EARLY_STOPPED"))
    assert ended == Counter(dict.fromkeys(values, 1)), ended  # every point ended once, none twice
    assert all(t.status in ("COMPLETED", "EARLY_STOPPED") for t in result.trials), result.counts


def _a_trial_started(home: Path, sweep_id: str) -> bool:
    return (home / "sweeps" / sweep_id / "sweep.json").is_file() and bool(_children(home, sweep_id))


@pytest.mark.parametrize(("space", "sweep", "kept"), [
    ({"x": "grid(1.0, 2.0, 3.0, 4.0, 5.0)"}, {"search": "grid"}, ["tuner.pkl"]),  # killed after Tune began, before its first save
    ({"x": "choice(1.0, 2.0, 3.0, 4.0, 5.0, 6.0)"}, {"samples": 5, "seed": 4}, ["tuner.pkl"]),  # drawn points
    ({"x": "grid(1.0, 2.0, 3.0, 4.0, 5.0)"}, {"search": "grid"}, []),  # killed before Tune began
], ids=["grid", "drawn", "grid-before-tune"])
def test_a_sweep_killed_before_tunes_first_save_runs_every_trial_on_resume(ray_cluster: str, home: Path, workspace: Path,
                                                                         space: dict[str, str], sweep: dict[str, Any],
                                                                         kept: list[str]) -> None:
    """SIGKILL, and the sweep's Tune folder as a kill before Tune's first save leaves it (Tune saves in its first step, so
    the test takes the save away): ``--resume`` begins Tune afresh and runs every point once; Tune's own restore ran one
    trial without parameters."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = f"nbs-0000kill{len(sweep)}{len(kept)}"
    spec = _spec(space, **sweep).model_copy(update={"parameters": {"sleep": 1.0}})  # none ends before the kill, as before a save
    _kill_after_completed(workspace, home, spec, sweep_id, {}, until=_a_trial_started)
    for path in (home / "sweeps" / sweep_id / "tune").rglob("*"):
        if path.is_file() and path.name not in kept:
            path.unlink()
    killed = {r.info.run_id for r in _children(home, sweep_id)} - {r.info.run_id for r in _completed_runs(home, sweep_id)}
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)

    assert result.status == "SUCCEEDED" and result.counts["COMPLETED"] == result.counts["total"] == 5, result.counts
    xs = sorted(t.params["x"] for t in result.trials)
    assert len(set(xs)) == 5, xs  # five different points
    assert sorted(float(r.data.params["x"]) for r in _completed_runs(home, sweep_id)) == xs  # each COMPLETED once
    runs = {r.info.run_id: r for r in _children(home, sweep_id)}
    assert all(runs[run_id].data.tags.get(tracking.TAG_STATUS) != "COMPLETED" for run_id in killed)  # the killed attempt stays so


def test_a_resume_that_finds_no_tune_state_but_ended_trials_stops_and_reruns_nothing(ray_cluster: str, home: Path,
                                                                                  workspace: Path) -> None:
    """Tune's state moved away (as a Ray that renamed its state file would miss it) after trials completed: the
    resume stops with what to do and changes no run; with the files back, it finishes and reruns none."""
    from workflow_compiler.errors import ExecutionError
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    sweep_id = "nbs-0000moved1"
    before = _kill_after_completed(workspace, home, _spec({"x": "grid(1.0, 2.0, 3.0, 4.0)"}, search="grid"), sweep_id, {})
    experiment = home / "sweeps" / sweep_id / "tune" / sweep_id
    moved = experiment.rename(experiment.with_name("moved"))
    runs = {r.info.run_id: (r.info.status, r.data.tags.get(tracking.TAG_STATUS)) for r in _children(home, sweep_id)}
    with pytest.raises(ExecutionError, match=rf"sweep {sweep_id}: MLflow holds {len(before)} ended trial\(s\).*without --resume"):
        run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)
    assert {r.info.run_id: (r.info.status, r.data.tags.get(tracking.TAG_STATUS)) for r in _children(home, sweep_id)} == runs

    moved.rename(experiment)
    result = run_sweep(None, root=workspace, progress=False, resume_id=sweep_id)
    assert result.status == "SUCCEEDED" and result.counts["COMPLETED"] == 4, result.counts
    assert Counter(r.data.tags[tracking.TAG_TRIAL] for r in _completed_runs(home, sweep_id)) == Counter({t.trial_id: 1 for t in result.trials})


@pytest.mark.parametrize("missing", ["attribute", "module"])
def test_a_ray_without_tunes_state_file_name_is_an_error_naming_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          missing: str) -> None:
    """Where Tune keeps its state is Ray's own (``TuneController.CKPT_FILE_TMPL``): a Ray without it is not "nothing saved"."""
    import ray
    from ray.tune.execution.tune_controller import TuneController

    from workflow_compiler.errors import ExecutionError
    from workflow_compiler.sweep.resume import tune_saved

    if missing == "attribute":
        monkeypatch.delattr(TuneController, "CKPT_FILE_TMPL")
    else:
        monkeypatch.setitem(sys.modules, "ray.tune.execution.tune_controller", None)  # the import raises ImportError
    with pytest.raises(ExecutionError, match=rf"with Ray {ray.__version__}: .*Start the sweep again \(without --resume\)"):
        tune_saved(tmp_path)


def test_a_sweep_completes_on_a_ray_whose_result_loader_has_another_name(ray_cluster: str, home: Path, workspace: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``_no_result_files_read`` swaps a private Tune method only to hide a warning: on a Ray that renamed it (here
    the class no longer has it, while Tune's own calls still find it), the sweep runs as ever."""
    import types

    from ray.tune.analysis.experiment_analysis import ExperimentAnalysis

    from workflow_compiler.sweep.driver import run_sweep

    renamed = ExperimentAnalysis._fetch_trial_dataframes

    def instance_only(self: Any, name: str) -> Any:
        if name == "_fetch_trial_dataframes":
            return types.MethodType(renamed, self)
        raise AttributeError(name)

    monkeypatch.delattr(ExperimentAnalysis, "_fetch_trial_dataframes")
    monkeypatch.setattr(ExperimentAnalysis, "__getattr__", instance_only, raising=False)
    result = run_sweep(_spec({"x": "grid(1.0, 2.0)"}, search="grid").model_copy(update={"parameters": {}}), root=workspace, progress=False)
    assert result.status == "SUCCEEDED" and result.counts["COMPLETED"] == 2, result.counts
    assert not hasattr(ExperimentAnalysis, "_fetch_trial_dataframes")  # nothing was put back in its place
