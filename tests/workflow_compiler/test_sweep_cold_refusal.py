"""A refused sweep answers at once even when the warm sweep driver is cold (``sweep/cold_check.py``, issue 19).

Real ``nbscale sweep`` and ``python -m workflow_compiler.sweep`` processes, each case in a home of
its own where no driver runs: the command starts the driver and, while the driver imports Ray Tune
and MLflow, refuses the sweep itself. Order, not time: the command has exited before the driver's
log says it is serving. Then, with that driver up, the same command (refused by the driver's
child, as before) prints exactly the same and exits with the same code.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.sweep import warm_driver

pytestmark = pytest.mark.slow  # a driver started (~4 s of imports) per case

NOTEBOOKS = Path(__file__).parent / "sweep_notebooks"
NBSCALE = [str(Path(sys.executable).parent / "nbscale"), "sweep"]
MODULE = [sys.executable, "-m", "workflow_compiler.sweep"]
SPACE = ["--param", "x=choice(1.0, 3.0)", "--metric", "score"]
SERVING = "serving"  # the driver's log line once its imports are done (warm_driver_daemon.main)


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder with the sweep notebook and a home of its own (under /tmp: socket paths must fit); its driver stopped afterwards."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-cold-"))
    shutil.copy(NOTEBOOKS / "objective.ipynb", parent / "objective.ipynb")
    try:
        yield parent
    finally:
        warm_driver.stop(parent / "home")
        shutil.rmtree(parent, ignore_errors=True)


def _run(work: Path, command: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NBSCALE_HOME": str(work / "home"), "COLUMNS": "200", "RAY_AUTH_MODE": "disabled",
           "NBSCALE_TRACKING_AGENT_IDLE": "600"}
    for name in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", warm_driver.ENV_WARM_DRIVER):
        env.pop(name, None)
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=300)


def _driver_log(work: Path) -> str:
    path = work / "home" / "agent" / warm_driver.LOG_NAME
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize(("command", "code", "shown"), [
    ([*NBSCALE, "objective.ipynb", *SPACE], 2, "is a higher or a lower metric better"),  # no --mode
    ([*NBSCALE, "objective.ipynb", "--param", "x=choice(1.0,", "--metric", "score", "--mode", "max"], 2, "error:"),
    ([*NBSCALE, "missing.ipynb", *SPACE, "--mode", "max"], 2, "missing.ipynb"),
    ([*NBSCALE, "--help"], 0, "usage: nbscale sweep"),  # argparse's own exits end the command there too
    ([*MODULE, "objective.ipynb", *SPACE, "--mode", "max", "--samples", "5"], 2, "only 2 different combinations"),
    ([*MODULE, "objective.ipynb", *SPACE, "--samples", "five"], 2, "invalid int value: 'five'"),
])
def test_a_refused_sweep_answers_before_a_cold_driver_is_up_with_the_warm_drivers_message(
        work: Path, command: list[str], code: int, shown: str) -> None:
    cold = _run(work, command)
    assert cold.returncode == code and shown in cold.stdout + cold.stderr, cold.stderr
    assert SERVING not in _driver_log(work), "the command waited for the driver's start instead of refusing the sweep itself"
    deadline = time.monotonic() + 180
    while SERVING not in _driver_log(work):  # the driver went on starting
        assert time.monotonic() < deadline, _driver_log(work)
        time.sleep(0.2)
    warm = _run(work, command)  # refused by the driver's child, as before
    assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr)
