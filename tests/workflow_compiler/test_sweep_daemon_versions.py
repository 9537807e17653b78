"""Which environments share a warm Ray head (``ray_head.code_version``) and a warm sweep driver (``warm_driver.code_version``).

A CLI sweep from a terminal and a ``%%nbscale sweep`` or Lab sweep from a kernel (through the
local executor) differ in variables that describe the caller, not its trials: they must share one
head (each change of head costs ~10 s). A variable that a trial may read, or one read when the
driver's modules are imported, must still part them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

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
          "NBSCALE_WARM_DRIVER": "0", "JPY_API_TOKEN": "kernel-secret"}


def test_a_cli_and_a_kernel_environment_share_one_ray_head() -> None:
    assert ray_head.code_version(CLI) == ray_head.code_version(KERNEL)


def test_a_terminal_that_leaves_home_and_store_to_their_defaults_shares_the_head_of_a_kernels_sweep(tmp_path: Path) -> None:
    """A terminal rarely sets NBSCALE_HOME or MLFLOW_TRACKING_URI; the local executor that runs a kernel's sweep spells both out."""
    bare = {name: value for name, value in CLI.items() if name not in ("NBSCALE_HOME", "MLFLOW_TRACKING_URI")}
    executor = {**KERNEL, "MLFLOW_TRACKING_URI": "sqlite:////home/ada/.nbscale/mlflow.db"}
    assert ray_head.code_version(bare) == ray_head.code_version(executor)
    token = tmp_path / "token"
    assert ray_head.head_environ(bare, token) == ray_head.head_environ(executor, token)
    assert ray_head.code_version({**bare, "NBSCALE_HOME": "/home/ada/other"}) != ray_head.code_version(bare)


def test_a_head_gives_ray_the_same_environment_whichever_caller_started_it(tmp_path: Path) -> None:
    """A head started from a kernel once gave every later sweep's trials the kernel's token, colours and sweep id."""
    token = tmp_path / "ray-token"
    from_kernel, from_cli = ray_head.head_environ(KERNEL, token), ray_head.head_environ(CLI, token)
    assert from_kernel == from_cli
    assert not {"JPY_API_TOKEN", "FORCE_COLOR", "CLICOLOR_FORCE", "NBSCALE_SWEEP_ID", "TERM"} & set(from_kernel)
    assert from_kernel["MY_DATA"] == "/data/v1"  # what trials may read stays: it is in the version, so callers agree on it
    assert (from_kernel["RAY_AUTH_MODE"], from_kernel["RAY_AUTH_TOKEN_PATH"]) == ("token", str(token))


def test_the_head_starts_ray_with_that_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Head.start_ray`` hands ``ray start`` ``head_environ`` of its own environment, never its whole environment."""
    started: list[dict[str, str]] = []
    monkeypatch.setattr(ray_head.subprocess, "Popen", lambda *args, **kwargs: started.append(kwargs["env"]) or SimpleNamespace(pid=0))
    monkeypatch.setattr(ray_head, "_temp_dir", lambda agent_dir: tmp_path)
    for name in list(os.environ):
        monkeypatch.delenv(name)
    for name, value in KERNEL.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "agent").mkdir(mode=0o700)
    ray_head.Head(tmp_path / "agent" / ray_head.SOCKET_NAME, 60, server=None).start_ray()  # type: ignore[arg-type]
    assert started and "JPY_API_TOKEN" not in started[0] and "FORCE_COLOR" not in started[0]
    assert started[0] == ray_head.head_environ(KERNEL, tmp_path / "agent" / f"{ray_head.TOKEN_NAME}-{os.getpid()}")


def test_a_process_that_has_run_a_sweep_finds_the_same_head_again() -> None:
    """``ray.init`` sets ``PYTHONBREAKPOINT`` in its driver: a second in-process sweep once started a new head (~10 s)."""
    assert ray_head.code_version({**CLI, "PYTHONBREAKPOINT": "ray.util.rpdb._driver_set_trace"}) == ray_head.code_version(CLI)


@pytest.mark.parametrize("change", [{"MY_DATA": "/data/v2"}, {"PYTHONPATH": "/home/ada/lib2"}, {"OMP_NUM_THREADS": "1"},
                                    {"MLFLOW_TRACKING_USERNAME": "ada"}])
def test_a_variable_trials_may_read_gets_a_head_of_its_own(change: dict[str, str]) -> None:
    assert ray_head.code_version({**CLI, **change}) != ray_head.code_version(CLI)


def test_another_tracking_store_shares_the_head_since_each_trial_gets_its_sweeps_store_with_its_plan(tmp_path: Path) -> None:
    other = {**CLI, "MLFLOW_TRACKING_URI": "sqlite:////tmp/other.db"}
    assert ray_head.code_version(other) == ray_head.code_version(CLI)
    assert "MLFLOW_TRACKING_URI" not in ray_head.head_environ(other, tmp_path / "token")


def test_the_sweep_driver_serves_any_caller_whose_import_time_variables_match() -> None:
    """The driver's child takes the caller's environment on: only what its imports read parts two versions."""
    assert warm_driver.code_version(CLI) == warm_driver.code_version(KERNEL) == warm_driver.code_version({**CLI, "MY_DATA": "x"})
    for read_later in ({"RAY_AUTH_MODE": "token"}, {"PYTHONBREAKPOINT": "ray.util.rpdb._driver_set_trace"}):  # set by Ray in its drivers
        assert warm_driver.code_version(CLI) == warm_driver.code_version({**CLI, **read_later})


@pytest.mark.parametrize("change", [{"RAY_DEDUP_LOGS": "0"}, {"TUNE_RESULT_BUFFER_LENGTH": "1"}, {"PYTHONPATH": "/home/ada/lib2"},
                                    {"LANG": "C"}, {"MLFLOW_DISABLE_TELEMETRY": "false"}])
def test_a_variable_read_when_the_driver_imports_gets_a_driver_of_its_own(change: dict[str, str]) -> None:
    assert warm_driver.code_version({**CLI, **change}) != warm_driver.code_version(CLI)


@pytest.mark.parametrize("name", sorted(ray_head.SET_IN_RAY_DRIVERS))
def test_what_ray_sets_in_its_drivers_parts_neither_the_head_nor_the_driver(name: str) -> None:
    """One list for both daemons: a process that has run a sweep finds the same head and the same driver again."""
    after_a_sweep = {**CLI, name: "set-by-ray"}
    assert ray_head.code_version(after_a_sweep) == ray_head.code_version(CLI)
    assert warm_driver.code_version(after_a_sweep) == warm_driver.code_version(CLI)


def test_two_sweeps_the_local_executor_hands_their_specs_share_one_head() -> None:
    """A kernel's sweep (magics, Lab dialog) gets its spec in the environment: one spec per sweep, one head for all."""
    from workflow_compiler.compiler.rayjob import SPEC_ENV

    first, second = ({**KERNEL, SPEC_ENV: json.dumps({"notebook": f"{name}.ipynb"})} for name in ("a", "b"))
    assert ray_head.code_version(first) == ray_head.code_version(second) == ray_head.code_version(KERNEL)
