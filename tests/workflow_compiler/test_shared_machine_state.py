"""Run state is private whatever the umask: another local user reads nothing under NBSCALE_HOME (issue 18, item 2).

A run, a pipeline and a sweep go through the real ``nbscale`` command with a umask of 000, the
worst a user may have: every file and folder they leave under the home (run records, logs,
manifests, output notebooks, MLflow's store and artifacts, the agent's files, the sweep's folder)
must still be 0600 / 0700, and ``nbscale-attacker`` must fail to open or list every one of them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.sweep import ray_head, trial_host, warm_driver
from workflow_compiler.tracking import agent

pytestmark = pytest.mark.slow  # a run, a pipeline and a sweep: about 100 s here

ROOT = Path(__file__).resolve().parents[2]
NBSCALE = str(Path(sys.executable).parent / "nbscale")


@pytest.fixture(scope="module")
def used_home() -> Iterator[Path]:
    """A home (under a folder every user may enter) that a run, a pipeline and a sweep have used with umask 000."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-private-"))
    parent.chmod(0o755)  # the home's own mode is what keeps others out, not a private parent
    home, work = parent / "home", parent / "work"
    work.mkdir()
    for source in (ROOT / "examples" / "train.ipynb", ROOT / "examples" / "prepare.ipynb", ROOT / "examples" / "pipeline.yaml",
                   Path(__file__).parent / "sweep_notebooks" / "objective.ipynb"):
        shutil.copy(source, work / source.name)
    env = {**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "200", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    commands = [["run", "train.ipynb", "-p", "n_estimators=5"], ["run", "pipeline.yaml"],
                ["sweep", "objective.ipynb", "--param", "x=grid(1.0, 2.0)", "--search", "grid", "--metric", "score", "--mode", "max",
                 "--concurrency", "1"]]
    try:
        for command in commands:
            done = subprocess.run([NBSCALE, *command], cwd=work, env=env, capture_output=True, text=True, timeout=600, umask=0)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        yield home
    finally:
        warm_driver.stop(home)
        agent.stop(home)
        trial_host.stop(home)
        ray_head.stop(home)
        shutil.rmtree(parent, ignore_errors=True)


def _everything_under(home: Path) -> list[Path]:
    return [home, *sorted(home.rglob("*"))]


def test_every_file_is_0600_and_every_folder_0700_whatever_the_umask(used_home: Path) -> None:
    paths = _everything_under(used_home)
    names = {p.name for p in paths}
    # what the issue found readable, each one present and checked below
    assert {"runs.db", "log.txt", "manifest.json", "output.ipynb", "mlflow.db", "mlartifacts", "sweeps", "agent.log"} <= names
    shared = [f"{stat.S_IMODE(p.lstat().st_mode):04o} {p.relative_to(used_home)}" for p in paths
              if not p.is_symlink() and not p.is_socket() and stat.S_IMODE(p.lstat().st_mode) & 0o077]
    assert shared == []


def _try_to_read(paths: list[Path]) -> list[str]:
    """As the other user: every path it could list or read."""
    opened = []
    for path in paths:
        try:
            if path.is_dir():
                os.listdir(path)
            else:
                with open(path, "rb") as handle:
                    handle.read(1)
            opened.append(str(path))
        except OSError:
            pass
    return opened


def test_another_user_can_read_nothing(other_user, used_home: Path) -> None:
    paths = [p for p in _everything_under(used_home) if not p.is_socket()]
    assert len(paths) > 20
    assert other_user.run(_try_to_read, paths) == []
    # not only because the home is closed: with it opened to everyone, every file and folder stays closed
    used_home.chmod(0o711)
    try:
        assert other_user.run(_try_to_read, paths[1:]) == []
    finally:
        used_home.chmod(0o700)
