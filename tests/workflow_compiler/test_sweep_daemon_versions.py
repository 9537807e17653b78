"""Which environments share a warm Ray head (``ray_head.code_version``) and a warm sweep driver (``warm_driver.code_version``).

A CLI sweep from a terminal and a ``%%nbscale sweep`` or Lab sweep from a kernel (through the
local executor) differ in variables that describe the caller, not its trials: they must share one
head (each change of head costs ~10 s). A variable that a trial may read, or one read when the
driver's modules are imported, must still part them.
"""

from __future__ import annotations

import pytest

from workflow_compiler.sweep import ray_head, warm_driver

BASE = {"PATH": "/usr/bin:/bin", "HOME": "/home/ada", "NBSCALE_HOME": "/home/ada/.nbscale", "MY_DATA": "/data/v1",
        "MLFLOW_TRACKING_URI": "sqlite:////home/ada/mlflow.db", "PYTHONPATH": "/home/ada/lib"}
#: What a terminal adds (a shell in JupyterLab's terminal, or an ssh session's).
CLI = {**BASE, "PWD": "/home/ada/work", "OLDPWD": "/home/ada", "SHLVL": "2", "_": "/usr/bin/nbscale", "TERM": "xterm-256color",
       "COLORTERM": "truecolor", "COLUMNS": "180", "LINES": "50"}
#: What ipykernel and jupyter-server add in a kernel, and the local executor for the sweep it drives.
KERNEL = {**BASE, "JPY_PARENT_PID": "4242", "JPY_SESSION_NAME": "/home/ada/work/train.ipynb", "PYDEVD_USE_FRAME_EVAL": "NO",
          "MPLBACKEND": "module://matplotlib_inline.backend_inline", "TERM": "xterm-color", "CLICOLOR": "1", "FORCE_COLOR": "1",
          "CLICOLOR_FORCE": "1", "PAGER": "cat", "GIT_PAGER": "cat", "NBSCALE_SWEEP_ID": "nbs-0123456789",
          "NBSCALE_WARM_DRIVER": "0"}


def test_a_cli_and_a_kernel_environment_share_one_ray_head() -> None:
    assert ray_head.code_version(CLI) == ray_head.code_version(KERNEL)


def test_a_process_that_has_run_a_sweep_finds_the_same_head_again() -> None:
    """``ray.init`` sets ``PYTHONBREAKPOINT`` in its driver: a second in-process sweep once started a new head (~10 s)."""
    assert ray_head.code_version({**CLI, "PYTHONBREAKPOINT": "ray.util.rpdb._driver_set_trace"}) == ray_head.code_version(CLI)


@pytest.mark.parametrize("change", [{"MY_DATA": "/data/v2"}, {"PYTHONPATH": "/home/ada/lib2"},
                                    {"MLFLOW_TRACKING_URI": "sqlite:////tmp/other.db"}, {"OMP_NUM_THREADS": "1"}])
def test_a_variable_trials_may_read_gets_a_head_of_its_own(change: dict[str, str]) -> None:
    assert ray_head.code_version({**CLI, **change}) != ray_head.code_version(CLI)


def test_the_sweep_driver_serves_any_caller_whose_import_time_variables_match() -> None:
    """The driver's child takes the caller's environment on: only what its imports read parts two versions."""
    assert warm_driver.code_version(CLI) == warm_driver.code_version(KERNEL) == warm_driver.code_version({**CLI, "MY_DATA": "x"})
    for read_later in ({"RAY_AUTH_MODE": "token"}, {"PYTHONBREAKPOINT": "ray.util.rpdb._driver_set_trace"}):  # set by Ray in its drivers
        assert warm_driver.code_version(CLI) == warm_driver.code_version({**CLI, **read_later})


@pytest.mark.parametrize("change", [{"RAY_DEDUP_LOGS": "0"}, {"TUNE_RESULT_BUFFER_LENGTH": "1"}, {"PYTHONPATH": "/home/ada/lib2"},
                                    {"LANG": "C"}, {"MLFLOW_DISABLE_TELEMETRY": "false"}])
def test_a_variable_read_when_the_driver_imports_gets_a_driver_of_its_own(change: dict[str, str]) -> None:
    assert warm_driver.code_version({**CLI, **change}) != warm_driver.code_version(CLI)
