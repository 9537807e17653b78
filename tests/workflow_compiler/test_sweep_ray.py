"""Sweeps against a real Ray (``ray_cluster``, started once per session in conftest.py) and a real
MLflow SQLite store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow_compiler.spec import RunSpec, parse_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
NB = "tests/workflow_compiler/sweep_notebooks"
PY = sys.executable


def _spec(notebook: str, space: dict, **sweep: object) -> RunSpec:
    fixed = sweep.pop("fixed", {})
    return parse_model(RunSpec, {"notebook": f"{NB}/{notebook}", "parameters": fixed,
                                 "sweep": {"space": space, "search": "grid", **sweep}}, what="test sweep")


def _children(result: object) -> list:
    from workflow_compiler.sweep import tracking

    mc = tracking.client(result.tracking_uri)  # type: ignore[attr-defined]
    return tracking.child_runs(mc, experiment_id=result.experiment_id, parent_run_id=result.parent_run_id)  # type: ignore[attr-defined]


def test_asha_stops_poor_trials_part_way_and_mlflow_nests_them(ray_cluster: str, home: Path) -> None:
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    spec = _spec("objective.ipynb", {"x": "grid(4.0, 3.0, 2.0, 1.0)"}, metric="score", mode="max", scheduler="asha",
                 concurrency=1, fixed={"sleep": 0.1, "steps": 4})
    result = run_sweep(spec, root=REPO, progress=False)
    by_x = {t.params["x"]: t for t in result.trials}
    assert result.status == "SUCCEEDED" and result.best is not None and result.best["params"] == {"x": 4.0}
    assert by_x[4.0].status == "COMPLETED" and by_x[4.0].value == 16.0
    # Sequential and worse at the first rung: ASHA stops each one after its first report of 4.
    assert [by_x[x].status for x in (3.0, 2.0, 1.0)] == ["EARLY_STOPPED"] * 3
    assert all(by_x[x].steps < 4 for x in (3.0, 2.0, 1.0))
    children = _children(result)
    assert len(children) == 4
    statuses = sorted(r.data.tags[tracking.TAG_STATUS] for r in children)
    assert statuses == ["COMPLETED", "EARLY_STOPPED", "EARLY_STOPPED", "EARLY_STOPPED"]
    assert all(r.info.status == "FINISHED" for r in children)
    # mlflow.set_tag in the notebook resumed the child run (MLFLOW_RUN_ID), with Tune's Lightning guard set
    assert [r.data.tags.get("seen.pl_disable_fork") for r in children] == ["1"] * 4
    mc = tracking.client(result.tracking_uri)
    parent = mc.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_score"] == 16.0
    assert parent.data.params["space.x"] == "grid(4.0, 3.0, 2.0, 1.0)" and parent.data.params["best.x"] == "4.0"
    artifacts = {a.path for a in mc.list_artifacts(result.parent_run_id)} | {a.path for a in mc.list_artifacts(result.parent_run_id, "plots")}
    assert {"trials.csv", "summary.json", "search_space.json", "plots/objective_by_trial.png", "plots/params_vs_objective.png"} <= artifacts
    completed = next(r for r in children if r.data.tags[tracking.TAG_STATUS] == "COMPLETED")
    assert [a.path for a in mc.list_artifacts(completed.info.run_id)] == ["output.ipynb"]
    assert [m.step for m in mc.get_metric_history(completed.info.run_id, "score")] == [0, 1, 2, 3]
    # The workers handed their runs to the warm tracking agent (trial_tracker.py), not to stores of their own
    assert "serving a sweep's trial worker" in (home / "agent" / "agent.log").read_text()


def test_tune_registers_trainables_without_its_default_runtime_env_and_restores_it() -> None:
    from ray.tune.execution import class_cache

    from workflow_compiler.sweep.runtime_env import default_runtime_env

    before = dict(class_cache.DEFAULT_ENV_VARS)
    assert before, "Tune no longer sets default env vars: runtime_env.py can go"
    with default_runtime_env():
        assert class_cache.DEFAULT_ENV_VARS == {}
    assert class_cache.DEFAULT_ENV_VARS == before


def test_a_trial_ends_at_its_final_report_not_one_round_trip_later() -> None:
    from workflow_compiler.sweep.callbacks import CancelStopper
    from workflow_compiler.sweep.trial import STATUS_KEY
    from workflow_compiler.sweep.worker import COMPLETED

    stopper = CancelStopper("no-such-sweep")
    assert stopper("t1", {STATUS_KEY: COMPLETED, "score": 1.0}) is True
    assert stopper("t1", {"score": 1.0, "step": 3}) is False  # part-way: the scheduler decides
    assert stopper.stop_all() is False


def test_optuna_search_reuses_one_warm_worker_and_nothing_leaks_between_trials(ray_cluster: str, home: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow_compiler.sweep import plots, session, tracking
    from workflow_compiler.sweep.driver import run_sweep
    from workflow_compiler.sweep.trial import TAG_WORKER_PID

    warmed_after: list[list[str]] = []  # the trial statuses when the driver warmed its plots
    warm_up = plots.warm_up
    monkeypatch.setattr(plots, "warm_up", lambda: (warmed_after.append([r.status for s in session.SESSIONS.values() for r in s.rows.values()]),
                                                   warm_up()))
    spec = _spec("leak.ipynb", {"trial": "choice(1, 2, 3)"}, metric="ok", mode="max", search="optuna", samples=3, concurrency=1, seed=7)
    result = run_sweep(spec, root=REPO, progress=False)
    # once, and only after a trial ended: not while the trial workers start and need every core
    assert warmed_after == [["COMPLETED"]], warmed_after
    assert [t.status for t in result.trials] == ["COMPLETED"] * 3, [t.error for t in result.trials]
    # Under FIFO a trial shorter than the report interval goes to the driver once: its final report.
    assert [t.steps for t in result.trials] == [1, 1, 1]
    children = _children(result)
    assert len({r.data.metrics["pid"] for r in children}) == 1  # one warm actor: trials 2 and 3 followed a polluting predecessor
    # ... and its notebooks ran in that worker's child of the warm trial host (this Ray is on this machine)
    assert {int(r.data.metrics["pid"]) for r in children} != {int(r.data.tags[TAG_WORKER_PID]) for r in children}
    parent = tracking.client(result.tracking_uri).get_run(result.parent_run_id)
    assert parent.data.params["sweep.search"] == "optuna" and parent.info.status == "FINISHED"


def test_fresh_kernel_runs_each_trial_in_its_own_process(ray_cluster: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workflow_compiler.sweep.driver import run_sweep
    from workflow_compiler.sweep.trial import TAG_WORKER_PID

    spec = _spec("leak.ipynb", {"trial": "grid(1)"}, metric="ok", mode="max", concurrency=1, fresh_kernel=True)
    tune_settings = ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "TUNE_DISABLE_SIGINT_HANDLER", "TUNE_GLOBAL_CHECKPOINT_S", "RAY_AIR_NEW_OUTPUT")
    for name in tune_settings:
        monkeypatch.delenv(name, raising=False)
    result = run_sweep(spec, root=REPO, progress=False)
    # Tune's settings for the sweep (no CSV logger, no SIGINT handler...) do not outlive it: a
    # notebook or benchmark that runs Tune itself afterwards gets Tune's defaults.
    assert [name for name in tune_settings if name in os.environ] == []
    assert [t.status for t in result.trials] == ["COMPLETED"], [t.error for t in result.trials]
    (child,) = _children(result)
    assert int(child.data.metrics["pid"]) != int(child.data.tags[TAG_WORKER_PID])  # the notebook ran outside the actor
    # MLflow holds the results: Tune wrote no per-trial result files, and said nothing about reading none back
    assert [p.name for p in (Path(result.sweep_dir) / "tune").rglob("*") if p.name.startswith(("result.", "progress.", "params."))] == []
    assert "Failed to fetch metrics" not in (Path(result.sweep_dir) / "driver.log").read_text()


def test_leak_notebook_does_detect_a_shared_namespace(tmp_path: Path) -> None:
    """Control: run the leak notebook's cells twice in one plain namespace; the second run must complain."""
    import nbformat

    nb = nbformat.read(REPO / NB / "leak.ipynb", as_version=4)
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code").replace("import mlflow", "mlflow = None").replace(
        "mlflow.log_metric", "(lambda *a: None)")
    script = f"import os\nos.chdir({str(REPO / NB)!r})\nsource = {code!r}\nns = {{}}\nexec(source, ns)\nos.chdir({str(REPO / NB)!r})\nexec(source, ns)\n"
    proc = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    for leak in ("global variable", "environment", "sys.path", "user module state", "random state", "numpy random state", "pandas options"):
        assert leak in proc.stderr


def test_half_gpu_trials_pack_two_per_gpu(ray_cluster: str, home: Path) -> None:
    from workflow_compiler.sweep.driver import run_sweep

    spec = _spec("objective.ipynb", {"x": "grid(1.0, 2.0, 3.0)"}, metric="score", mode="max", concurrency=3,
                 cpus_per_trial=0.25, gpus_per_trial=0.5, fixed={"sleep": 0.6, "steps": 3})
    result = run_sweep(spec, root=REPO, progress=False)
    assert result.counts["COMPLETED"] == 3
    spans = [(r.data.metrics["started"], r.data.metrics["ended"]) for r in _children(result)]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2  # 3 trials allowed by CPU and concurrency, but 1 GPU / 0.5 = 2 at once
    assert {r.data.metrics["cuda"] for r in _children(result)} == {0.0}  # each trial sees its device


def test_failures_are_retried_and_marked_and_the_sweep_goes_on(ray_cluster: str, home: Path, tmp_path: Path) -> None:
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    once, die_once = str(tmp_path / "raise-marker"), str(tmp_path / "die-marker")
    space = {"fail": f"grid('raise', 'once:{once}', 'die-once:{die_once}')"}
    result = run_sweep(_spec("objective.ipynb", space, metric="score", mode="max", concurrency=2, max_failures=1), root=REPO, progress=False)
    by_fail = {t.params["fail"]: t for t in result.trials}
    assert by_fail["raise"].status == "FAILED" and "fails on purpose" in (by_fail["raise"].error or "")
    assert by_fail["raise"].attempts == 2  # retried once, then failed for good
    # A notebook that raised, and a worker whose process died, are each retried and then complete.
    assert by_fail[f"once:{once}"].status == "COMPLETED" and by_fail[f"once:{once}"].attempts == 2
    assert by_fail[f"die-once:{die_once}"].status == "COMPLETED" and by_fail[f"die-once:{die_once}"].attempts == 2
    runs = _children(result)
    tags = sorted(r.data.tags.get(tracking.TAG_STATUS) for r in runs)
    assert tags.count("FAILED") == 4 and tags.count("COMPLETED") == 2  # raise x2, once x1, die-once x1 (closed by the driver)
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)
    assert result.status == "SUCCEEDED"


def _driver(home: Path, spec: RunSpec, sweep_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "NBSCALE_HOME": str(home)}
    return subprocess.Popen([PY, "-m", "workflow_compiler.sweep", "--spec-json", spec.model_dump_json(), "--root", str(REPO),
                             "--sweep-id", sweep_id, "--no-progress", "--json"], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_for(predicate: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _completed_outputs(home: Path, sweep_id: str) -> list[Path]:
    return [p for p in (home / "sweeps" / sweep_id / "trials").glob("*/attempt-*/output.ipynb")
            if "nbscale: trial stopped" not in p.read_text(encoding="utf-8")]


def _saved_as_finished(home: Path, sweep_id: str) -> set[str]:
    """Trials that Tune's last saved experiment state records as TERMINATED (what a resume trusts)."""
    states = sorted((home / "sweeps" / sweep_id / "tune" / sweep_id).glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    try:
        data = json.loads(states[-1].read_text(encoding="utf-8")) if states else {"trial_data": []}
    except (OSError, ValueError):  # caught mid-write
        return set()
    trials = [json.loads(entry[0]) for entry in data["trial_data"]]
    return {t["trial_id"] for t in trials if t.get("status") == "TERMINATED"}


def test_resume_after_the_driver_is_killed_does_not_rerun_completed_trials(ray_cluster: str, home: Path) -> None:
    from workflow_compiler.sweep.driver import run_sweep

    spec = _spec("objective.ipynb", {"x": "grid(1.0, 2.0, 3.0, 4.0)"}, metric="score", mode="max", concurrency=1,
                 fixed={"sleep": 0.3, "steps": 2})
    driver = _driver(home, spec, "nbs-0000000aaa")
    _wait_for(lambda: len(_saved_as_finished(home, "nbs-0000000aaa")) >= 2)
    driver.kill()
    driver.wait()
    finished = _saved_as_finished(home, "nbs-0000000aaa")
    result = run_sweep(None, root=REPO, progress=False, resume_id="nbs-0000000aaa")
    assert result.counts["COMPLETED"] == 4 and result.status == "SUCCEEDED"
    attempts = {t.trial_id: len(list((home / "sweeps" / "nbs-0000000aaa" / "trials" / t.trial_id).glob("attempt-*"))) for t in result.trials}
    assert len(finished) >= 2 and all(attempts[tid] == 1 for tid in finished)  # finished trials were not run again
    assert all(attempts[tid] >= 1 for tid in attempts) and sum(attempts.values()) < 2 * len(attempts)


def test_ctrl_c_stops_every_trial_and_marks_runs_killed(ray_cluster: str, home: Path) -> None:
    from workflow_compiler.sweep import tracking

    spec = _spec("objective.ipynb", {"x": "grid(1.0, 2.0, 3.0, 4.0)"}, metric="score", mode="max", concurrency=2,
                 fixed={"sleep": 1.0, "steps": 30})
    driver = _driver(home, spec, "nbs-0000000bbb")
    _wait_for(lambda: any((home / "sweeps" / "nbs-0000000bbb" / "trials").glob("*/attempt-1")) if (home / "sweeps" / "nbs-0000000bbb").exists() else False)
    time.sleep(3)
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=120)
    assert driver.returncode == 130, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["status"] == "KILLED" and summary["counts"]["COMPLETED"] == 0
    mc = tracking.client(summary["tracking_uri"])
    assert mc.get_run(summary["parent_run_id"]).info.status == "KILLED"
    runs = tracking.child_runs(mc, experiment_id=summary["experiment_id"], parent_run_id=summary["parent_run_id"])
    assert runs and all(r.info.status == "KILLED" for r in runs), [(r.info.status, r.data.tags.get(tracking.TAG_STATUS)) for r in runs]


def test_every_trial_of_many_asha_sweeps_names_its_run_and_the_run_keeps_its_data(ray_cluster: str, home: Path) -> None:
    """Stress: 4 ASHA sweeps of 8 trials in a row on one Ray. Tune calls back a stopped trial's end as
    it decides, before the worker hears of it; the row must still name the run, and the run must
    hold every metric that reached Tune and the partial notebook (issue 17, item 4)."""
    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.driver import run_sweep

    xs = ", ".join(str(float(x)) for x in range(8, 0, -1))  # worse and worse: ASHA stops most at their first rung
    spec = _spec("objective.ipynb", {"x": f"grid({xs})"}, metric="score", mode="max", scheduler="asha", concurrency=2,
                 fixed={"sleep": 0.05, "steps": 4})
    stopped = 0
    for _ in range(4):
        result = run_sweep(spec, root=REPO, progress=False)
        mc = tracking.client(result.tracking_uri)
        runs = {r.info.run_id: r for r in _children(result)}
        assert len(result.trials) == 8 and len(runs) == 8
        for trial in result.trials:
            assert trial.status in ("COMPLETED", "EARLY_STOPPED"), trial
            run = runs[trial.run_id or "no run id"]
            assert run.data.tags[tracking.TAG_TRIAL] == trial.trial_id
            assert (run.info.status, run.data.tags[tracking.TAG_STATUS]) == ("FINISHED", trial.status)
            history = [m.value for m in mc.get_metric_history(trial.run_id, "score")]
            reported = trial.steps - (trial.status == "COMPLETED")  # a completed trial's closing report repeats its last value
            assert reported >= 1 and len(history) >= reported and history[-1] >= (trial.value or 0), (trial, history)
            assert "output.ipynb" in {a.path for a in mc.list_artifacts(trial.run_id)}, trial
        stopped += result.counts["EARLY_STOPPED"]
    assert stopped >= 8  # ASHA did stop trials part-way


def test_one_sweep_file_is_one_trial_set_locally_in_the_rayjob_and_in_fanout(ray_cluster: str, home: Path) -> None:
    """grid(...) axes are crossed, and choice(...) too in a grid search, on every target (issue 17, item 3)."""
    import yaml

    from workflow_compiler.compiler import compile_workflow
    from workflow_compiler.compiler.rayjob import SPEC_ENV
    from workflow_compiler.errors import CompileError
    from workflow_compiler.sweep.driver import run_sweep

    def trial_set(params: list[dict]) -> list[str]:
        return sorted(json.dumps(p, sort_keys=True) for p in params)

    spec = _spec("objective.ipynb", {"x": "grid(1.0, 2.0)", "steps": "grid(1, 2)"}, metric="score", mode="max", samples=2, seed=7, concurrency=2)
    local = run_sweep(spec, root=REPO, progress=False)
    fanout = compile_workflow(spec, fanout=True)
    (trials,) = [t for t in next(t for t in fanout["spec"]["templates"] if t["name"] == "main")["dag"]["tasks"] if "withItems" in t]
    items = [{k: json.loads(v) for k, v in item.items()} for item in trials["withItems"]]
    rayjob = yaml.safe_load(next(t for t in compile_workflow(spec)["spec"]["templates"] if t["name"] == "sweep")["resource"]["manifest"])
    shipped = RunSpec.model_validate_json(yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"][SPEC_ENV])
    in_rayjob = run_sweep(shipped, root=REPO, progress=False)  # what the RayJob's entrypoint runs with that spec
    expected = trial_set([{"x": x, "steps": s} for x in (1.0, 2.0) for s in (1, 2)] * 2)
    assert trial_set([t.params for t in local.trials]) == trial_set(items) == trial_set([t.params for t in in_rayjob.trials]) == expected

    crossed = _spec("objective.ipynb", {"x": "grid(1.0, 2.0)", "sleep": "choice(0.0, 0.01)"}, metric="score", mode="max", seed=7)
    result = run_sweep(crossed, root=REPO, progress=False)
    assert len(result.trials) == crossed.sweep.total_trials() == 4  # a grid search crosses choice(...) too
    assert trial_set([t.params for t in result.trials]) == trial_set([{"x": x, "sleep": s} for x in (1.0, 2.0) for s in (0.0, 0.01)])
    sampled = crossed.model_copy(update={"sweep": crossed.sweep.model_copy(update={"search": "random", "samples": 1})})
    assert sampled.sweep.total_trials() == 2  # a random search samples choice(...) once per grid point
    with pytest.raises(CompileError, match=r"sleep is sampled for each trial, which needs Ray"):
        compile_workflow(sampled, fanout=True)


def test_a_seeded_sweep_keeps_its_concurrency() -> None:
    """Tune ignores max_concurrent_trials when the search is a generator (BasicVariantGenerator with a seed)."""
    from workflow_compiler.sweep.driver import _tune_config

    config = _tune_config(_spec("objective.ipynb", {"x": "grid(1.0, 2.0, 3.0)"}, metric="score", mode="max", seed=7, concurrency=1))
    assert config.search_alg.max_concurrent == 1


def _sweep_runs(home: Path, sweep_id: str) -> tuple[list, list]:
    """(parent runs, child runs) of one sweep in the home's MLflow store, found by the sweep's tag."""
    from mlflow.tracking import MlflowClient

    from workflow_compiler.sweep import tracking

    mc = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiments = [e.experiment_id for e in mc.search_experiments()]
    runs = mc.search_runs(experiments, f"tags.`{tracking.TAG_SWEEP}` = '{sweep_id}'", max_results=1000)
    return ([r for r in runs if "mlflow.parentRunId" not in r.data.tags],
            [r for r in runs if "mlflow.parentRunId" in r.data.tags])


def test_nbscale_sweep_resume_keeps_its_parent_run_and_reruns_no_completed_trial(ray_cluster: str, home: Path,
                                                                                tmp_path: Path) -> None:
    """The README's ``nbscale sweep --resume SWEEP_ID`` through the command: its driver is killed part-way
    (the session's Ray outlives it, as a cluster's would), then the resume finishes the same sweep."""
    from collections import Counter

    from workflow_compiler.sweep import tracking

    (tmp_path / "work").mkdir()
    work = tmp_path / "work"
    (work / "objective.ipynb").write_bytes((REPO / NB / "objective.ipynb").read_bytes())
    nbscale = str(Path(PY).parent / "nbscale")
    env = {**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "200"}
    first = subprocess.Popen([nbscale, "sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0, 3.0, 4.0)", "--search", "grid",
                              "--metric", "score", "--mode", "max", "--concurrency", "1", "-p", "sleep=0.3", "-p", "steps=2", "--json", "--no-progress"],
                             cwd=work, env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: (home / "sweeps").is_dir() and any((home / "sweeps").iterdir()), timeout=180)
        sweep_id = next((home / "sweeps").iterdir()).name
        _wait_for(lambda: len(_saved_as_finished(home, sweep_id)) >= 2, timeout=240)
    finally:
        first.kill()  # the driver dies without a word: no cleanup of its own runs
        first.communicate()
    finished = _saved_as_finished(home, sweep_id)
    parents, _ = _sweep_runs(home, sweep_id)
    assert len(parents) == 1
    resumed = subprocess.run([nbscale, "sweep", "--resume", sweep_id, "--json", "--no-progress"], cwd=work, env=env,
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "SUCCEEDED" and summary["counts"]["COMPLETED"] == 4
    after, children = _sweep_runs(home, sweep_id)
    assert [p.info.run_id for p in after] == [parents[0].info.run_id] == [summary["parent_run_id"]]  # the same parent run
    assert after[0].info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == summary["parent_run_id"] for c in children)
    completed = Counter(c.data.tags[tracking.TAG_TRIAL] for c in children if c.data.tags.get(tracking.TAG_STATUS) == "COMPLETED")
    assert set(completed) == {t["trial_id"] for t in summary["trials"]}, completed  # every trial completed
    # every trial completed once: those Tune's checkpoint had recorded finished, and those that completed
    # after it, just before the kill (their runs' results are reported again: sweep/resume.py)
    assert len(finished) >= 2 and all(n == 1 for n in completed.values()), (finished, completed)
    attempts = {t: len(list((home / "sweeps" / sweep_id / "trials" / t).glob("attempt-*"))) for t in completed}
    assert all(attempts[t] == 1 for t in finished), attempts
    runs_per_trial = Counter(c.data.tags[tracking.TAG_TRIAL] for c in children)
    # at most one child run per attempt (an attempt the kill cut short may have none): no run was made twice
    assert all(1 <= runs_per_trial[t] <= attempts[t] for t in attempts), (runs_per_trial, attempts)
