"""Compiled sweeps on the embedded default: ``nbscale compile --sweep [--fanout]``, then the local
executor runs the manifest (fan-out items as ``nbscale-step`` processes, nested in MLflow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workflow_compiler.executors import get_executor
from workflow_compiler.executors.local import check_local_manifest
from workflow_compiler.store import RunRecord

ROOT = Path(__file__).resolve().parents[2]
NBSCALE = str(Path(sys.executable).parent / "nbscale")
SWEEP = {"parameters": {"steps": 2}, "space": {"x": "grid(1.0, 3.0)"}, "metric": "score", "mode": "max", "search": "grid", "concurrency": 2}


def nbscale(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBSCALE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("compiled-sweeps")
    shutil.copy(ROOT / "tests" / "workflow_compiler" / "sweep_notebooks" / "objective.ipynb", work / "objective.ipynb")
    shutil.copy(ROOT / "examples" / "pipeline.yaml", work / "pipeline.yaml")
    (work / "sweep.yaml").write_text(yaml.safe_dump(SWEEP))
    (work / "random.yaml").write_text(yaml.safe_dump({**SWEEP, "search": "random", "space": {"x": "uniform(0, 1)"}}))
    return work


@pytest.mark.parametrize(("flags", "kind"), [([], "RayJob"), (["--fanout"], "withItems")])
def test_compile_sweep_writes_a_validated_manifest_the_local_executor_accepts(work: Path, flags: list[str], kind: str) -> None:
    out = work / f"wf{len(flags)}.yaml"
    result = nbscale("compile", "objective.ipynb", "--sweep", "sweep.yaml", *flags, "-o", str(out), "--validate", cwd=work)
    assert result.returncode == 0, result.stderr
    assert ("KubeRay RayJob CRD" in result.stderr) is (kind == "RayJob")
    text = out.read_text()
    assert kind in text and "nbscale.io/kind: sweep" in text
    check_local_manifest(yaml.safe_load(text))


@pytest.mark.parametrize(("args", "code", "message"), [
    (["objective.ipynb", "--fanout"], 2, "--fanout applies to sweeps: add --sweep FILE."),
    (["pipeline.yaml", "--sweep", "sweep.yaml"], 2, "--sweep sweeps one notebook"),
    (["objective.ipynb", "--sweep", "random.yaml", "--fanout"], 1, "search 'random' samples, which needs Ray"),
    (["objective.ipynb", "--sweep", "missing.yaml"], 2, "missing.yaml: no such sweep file"),
])
def test_compile_sweep_errors(work: Path, args: list[str], code: int, message: str) -> None:
    result = nbscale("compile", *args, cwd=work)
    assert result.returncode == code and message in " ".join(result.stderr.split()), result.stderr


@pytest.mark.slow  # ~30 s on an idle 2-core machine: three nbscale-step processes, each importing mlflow
def test_compiled_grid_fanout_runs_locally_with_trials_nested_under_a_parent_run(work: Path, nbscale_home: Path) -> None:
    from mlflow.tracking import MlflowClient

    out = work / "fanout.yaml"
    assert nbscale("compile", "objective.ipynb", "--sweep", "sweep.yaml", "--fanout", "-o", str(out), cwd=work).returncode == 0
    manifest = yaml.safe_load(out.read_text())
    executor = get_executor("local", root=str(work))
    record = executor.submit(manifest, record=RunRecord(id="nbs-f0f0f0f0f0", kind="sweep", notebook="objective.ipynb", user="alice"))
    record = executor.wait(record.id, timeout=240)
    log = executor.logs(record.id)[0]
    assert record.status == "SUCCEEDED", f"{record.error}\n{log[-3000:]}"
    assert [s.name for s in record.steps] == ["trials(0)", "trials(1)"]
    assert all(s.status == "SUCCEEDED" for s in record.steps)
    assert (record.progress.done, record.progress.total) == (2, 2)
    client = MlflowClient(tracking_uri=f"sqlite:///{nbscale_home / 'mlflow.db'}")
    parent = client.get_run(record.mlflow_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["nbscale.sweep.metric"] == "score"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_x = {json.loads(c.data.params["x"]): c for c in children}
    assert sorted(by_x) == [1.0, 3.0]
    assert {x: c.data.metrics["score"] for x, c in by_x.items()} == {1.0: 2.0, 3.0: 6.0}  # x * steps, last value
    assert all(c.data.params["steps"] == "2" for c in children)


@pytest.mark.slow  # the real sweep driver starts a local Ray of its own (~15 s), then runs one trial
def test_compiled_rayjob_runs_the_sweep_driver_locally(work: Path, nbscale_home: Path) -> None:
    """The RayJob's entrypoint, run here, is the real driver: it reads the spec from the runtime env."""
    (work / "one.yaml").write_text(yaml.safe_dump({**SWEEP, "space": {"x": "grid(2.0)"}, "concurrency": 1}))
    out = work / "rayjob.yaml"
    assert nbscale("compile", "objective.ipynb", "--sweep", "one.yaml", "-o", str(out), cwd=work).returncode == 0
    executor = get_executor("local", root=str(work))
    record = executor.submit(yaml.safe_load(out.read_text()), record=RunRecord(id="nbs-0a0a0a0a0a", kind="sweep",
                                                                               notebook="objective.ipynb", user="alice"))
    record = executor.wait(record.id, timeout=400)
    log = executor.logs(record.id)[0]
    assert record.status == "SUCCEEDED", f"{record.error}\n{log[-3000:]}"
    summary = json.loads(next(line for line in log.splitlines() if line.startswith('{"sweep_id"')))  # the driver's --json
    assert summary["status"] == "SUCCEEDED" and summary["best"]["params"] == {"x": 2.0} and summary["best"]["value"] == 4.0
    assert Path(summary["sweep_dir"]).parent == nbscale_home / "sweeps"  # this machine's state folder, not the pod's
    # The run record speaks in trials, with the best trial and the parent MLflow run of the sweep.
    assert (record.progress.unit, record.progress.done, record.progress.total) == ("trials", 1, 1)
    assert record.best == {"params": {"x": 2.0}, "metric": "score", "value": 4.0}
    assert record.metrics == {"score": 4.0} and record.mlflow_run_id == summary["parent_run_id"]
    assert summary["sweep_id"] == record.id, "the driver keeps its state under the run's own id"


@pytest.mark.slow
def test_submit_runs_a_sweep_spec_as_a_sweep_record(work: Path) -> None:
    """The path the REST API and the magics take: a RunSpec with ``sweep`` through submit()."""
    from workflow_compiler.spec import RunSpec, parse_model
    from workflow_compiler.submit import submit

    spec = parse_model(RunSpec, {"notebook": "objective.ipynb", "parameters": {"steps": 2},
                                 "sweep": {"space": {"x": "grid(1.0, 3.0)"}, "search": "grid", "metric": "score", "mode": "max", "concurrency": 2}},
                       what="sweep")
    executor = get_executor("local", root=str(work))
    record = submit(spec, executor=executor, root=str(work))
    assert record.kind == "sweep" and record.progress.unit == "trials" and record.progress.total == 2
    record = executor.wait(record.id, timeout=400)
    assert record.status == "SUCCEEDED", f"{record.error}\n{executor.logs(record.id)[0][-3000:]}"
    assert record.progress.done == 2 and record.best is not None and record.best["params"] == {"x": 3.0}
