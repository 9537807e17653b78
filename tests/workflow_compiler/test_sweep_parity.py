"""A sweep's trial accepts every notebook `nbscale run` accepts (issue 17, item 1).

The notebook is written with nbformat, as a user's own would be: no kernelspec metadata, and an
annotated parameter. Each row of ``CELLS`` is one notebook cell that works in a papermill kernel;
the notebook runs once in a kernel with every cell, then each cell is one grid point of three
sweeps on the session's Ray: warm trials in the Ray worker itself (``NBSCALE_TRIAL_HOST=0``, as on
a cluster), warm trials in the trial host's child (this machine's default) and ``--fresh-kernel``.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from workflow_compiler.spec import RunSpec, parse_model

pytestmark = pytest.mark.slow

#: name -> a cell that works under `nbscale run` (a papermill kernel)
CELLS = {
    "faulthandler": "import faulthandler\nfaulthandler.enable()\nassert faulthandler.is_enabled()",
    "subprocess_to_stdout": "import subprocess, sys\n"
                            "subprocess.run([sys.executable, '-c', 'print(1)'], stdout=sys.stdout, stderr=sys.stderr, check=True)",
    "fileno": "import os, sys\nos.fstat(sys.stdout.fileno())\nos.fstat(sys.stderr.fileno())",
    "isatty": "import sys\nassert sys.stdout.isatty() is False and sys.stderr.isatty() is False",
    "encoding_errors": "import sys\n'é'.encode(sys.stdout.encoding)\nassert sys.stdout.errors in (None, 'strict')",
    "text_io": "import io, sys\nassert isinstance(sys.stdout, io.TextIOBase) and not sys.stdout.closed\nsys.stdout.writelines(['a\\n', 'b\\n'])",
    "name_is_main": "assert __name__ == '__main__'",
    "pickle_a_notebook_function": "import pickle\ndef double(v):\n    return 2 * v\nassert pickle.loads(pickle.dumps(double))(2) == 4",
    "main_module": "import sys\nassert sys.modules['__main__'].__dict__ is globals()",
    "argv": "import argparse, sys\nassert sys.argv and sys.argv[0]\nargparse.ArgumentParser().parse_known_args()",
    "signal_handler": "import signal\nprevious = signal.signal(signal.SIGUSR1, lambda *a: None)\nsignal.signal(signal.SIGUSR1, previous)",
}
#: Trials in the Ray worker itself run in Tune's function thread, where Python refuses signal handlers:
#: the trial fails, and its error says what to do instead.
IN_WORKER_THREAD = {"signal_handler"}
PATHS = ("in-worker", "trial-host", "fresh-kernel")


def write_notebook(path: Path) -> None:
    """Parameters ``case`` (annotated) and ``limit``; one cell per row of CELLS, run when ``case`` names it (or is 'all')."""
    cells = [nbformat.v4.new_code_cell("case: str = 'all'\nlimit: int | None = None", metadata={"tags": ["parameters"]})]
    for name, source in CELLS.items():
        cells.append(nbformat.v4.new_code_cell(f"if case in ('all', {name!r}):\n{textwrap.indent(source, '    ')}"))
    cells.append(nbformat.v4.new_code_cell("if case == 'boom':\n    raise RuntimeError('boom on purpose')\n"
                                           "import mlflow\nmlflow.log_metric('ok', 1.0)"))
    nbformat.write(nbformat.v4.new_notebook(cells=cells), path)  # no kernelspec, no language_info


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parity")
    write_notebook(folder / "user.ipynb")
    return folder


def test_every_cell_works_in_a_papermill_kernel(workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: each cell of the table is something `nbscale run` accepts."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST")  # else ipykernel leaves its streams without a file descriptor
    from workflow_compiler.runtime.execute import execute_notebook
    from workflow_compiler.runtime.files import ProgressFile

    outcome = execute_notebook(workspace / "user.ipynb", tmp_path / "out.ipynb", {"case": "all"}, kernel_name="python3",
                               launch_env={}, run_env=dict, progress=ProgressFile(tmp_path / "progress.json"), guard=None)
    assert outcome.status == "SUCCEEDED", outcome.reason


@pytest.fixture(scope="module")
def sweeps(ray_cluster: str, workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same grid over every cell (and one that raises) on each trial path: path -> SweepResult."""
    from workflow_compiler.sweep import trial_host
    from workflow_compiler.sweep.driver import run_sweep
    from workflow_compiler.tracking import agent

    home = tmp_path_factory.mktemp("parity-home")
    saved = {name: os.environ.get(name) for name in ("NBSCALE_HOME", "MLFLOW_TRACKING_URI", trial_host.ENV_HOST)}
    os.environ["NBSCALE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    grid = ", ".join(repr(name) for name in [*CELLS, "boom"])
    results = {}
    try:
        for path in PATHS:
            os.environ[trial_host.ENV_HOST] = "0" if path == "in-worker" else "1"
            spec = parse_model(RunSpec, {"notebook": "user.ipynb", "sweep": {
                "space": {"case": f"grid({grid})"}, "search": "grid", "metric": "ok", "mode": "max", "concurrency": 2,
                "fresh_kernel": path == "fresh-kernel"}}, what="parity sweep")
            results[path] = run_sweep(spec, root=workspace, progress=False)
        yield results
    finally:
        trial_host.stop(home)
        agent.stop(home)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("case", list(CELLS))
def test_a_cell_that_works_under_run_works_in_a_sweep_trial(sweeps: dict[str, Any], path: str, case: str) -> None:
    (trial,) = [t for t in sweeps[path].trials if t.params["case"] == case]
    if path == "in-worker" and case in IN_WORKER_THREAD:  # the day this gap closes, the test says so
        from workflow_compiler.sweep.worker import SIGNAL_IN_THREAD

        assert (trial.status, trial.error) == ("FAILED", f"ValueError: {SIGNAL_IN_THREAD}")
        assert "--fresh-kernel" in SIGNAL_IN_THREAD
        return
    assert (trial.status, trial.error) == ("COMPLETED", None)


@pytest.mark.parametrize("path", PATHS)
def test_a_failed_trial_says_why_in_the_table_the_summary_and_its_mlflow_run(sweeps: dict[str, Any], path: str) -> None:
    from rich.console import Console

    from workflow_compiler.sweep import tracking
    from workflow_compiler.sweep.logs import DRIVER_LOG
    from workflow_compiler.sweep.progress import print_result

    result = sweeps[path]
    (boom,) = [t for t in result.trials if t.params["case"] == "boom"]
    assert (boom.status, boom.error) == ("FAILED", "RuntimeError: boom on purpose")
    summary = json.loads((Path(result.sweep_dir) / "result.json").read_text(encoding="utf-8"))
    assert [t["error"] for t in summary["trials"] if t["params"]["case"] == "boom"] == ["RuntimeError: boom on purpose"]
    mc = tracking.client(result.tracking_uri)
    runs = tracking.child_runs(mc, experiment_id=result.experiment_id, parent_run_id=result.parent_run_id)
    (run,) = [r for r in runs if r.data.tags[tracking.TAG_TRIAL] == boom.trial_id]
    assert boom.run_id == run.info.run_id  # it failed before any report to Tune, and still names its run
    assert run.data.tags[tracking.TAG_ERROR] == "RuntimeError: boom on purpose"
    console = Console(record=True, width=250)
    print_result(result, console)
    table = console.export_text()
    assert "error" in table and "RuntimeError: boom on purpose" in table and DRIVER_LOG in table
    from workflow_compiler.sweep.results import SweepResult, failure_line

    assert failure_line(result) is None  # the other trials completed
    failed = SweepResult.model_validate({**result.model_dump(), "status": "FAILED", "trials": [boom]})
    assert failure_line(failed) == f"sweep {result.sweep_id} FAILED: no trial completed (1 of 1 failed; trial {boom.trial_id}: RuntimeError: boom on purpose)"
    # Tune's traceback of the failure is in the sweep's log file, not on the driver's console
    assert "Trial task failed" in (Path(result.sweep_dir) / DRIVER_LOG).read_text(encoding="utf-8")


def test_a_fresh_process_that_papermill_refuses_or_that_dies_says_why(tmp_path: Path) -> None:
    from workflow_compiler.sweep.fresh import run_in_fresh_process

    (tmp_path / "broken.ipynb").write_text("{not json", encoding="utf-8")
    refused = run_in_fresh_process(str(tmp_path / "broken.ipynb"), tmp_path / "a" / "output.ipynb", {}, cwd=tmp_path,
                                   env={"MLFLOW_RUN_ID": "unused"}, kernel_name="python3", on_metric=lambda *a: None,
                                   stopped=lambda: False)
    assert refused.status == "FAILED" and (refused.error or "").startswith("NotJSONError: "), refused.error
    dying = "import os, sys\nprint('out of memory, say', file=sys.__stderr__, flush=True)\nos._exit(3)"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(dying)])
    nbformat.write(nb, tmp_path / "dies.ipynb")
    died = run_in_fresh_process(str(tmp_path / "dies.ipynb"), tmp_path / "b" / "output.ipynb", {}, cwd=tmp_path,
                                env={"MLFLOW_RUN_ID": "unused"}, kernel_name="python3", on_metric=lambda *a: None,
                                stopped=lambda: False)
    assert (died.status, died.error) == ("FAILED", "the trial's process died (exit code 3): out of memory, say")
