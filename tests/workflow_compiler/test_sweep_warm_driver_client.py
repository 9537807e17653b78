"""The warm sweep driver's client (``sweep/warm_driver.py``) stays light, and steps aside when it should.

The client is what a sweep command runs before its first trial: it must not import what the
driver holds imported (pydantic's models, Ray, MLflow, rich), and it must leave the command to its
own process (returning None, having run and printed nothing) wherever the driver does not apply.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workflow_compiler.sweep import warm_driver

HEAVY = ["pydantic", "ray", "mlflow", "rich", "nbformat", "pandas", "yaml"]


def test_the_client_imports_nothing_the_driver_holds(tmp_path: Path) -> None:
    probe = ("import json, sys\n"
             "from workflow_compiler import cli\n"
             "from workflow_compiler.sweep import __main__, warm_driver  # python -m workflow_compiler.sweep's client too\n"
             "from workflow_compiler.private_files import private_home\n"
             "from workflow_compiler.tracking.daemon import start_daemon\n"
             "from workflow_compiler.tracking_uri import nbscale_home\n"
             "warm_driver.wanted(); warm_driver.socket_path(nbscale_home()); warm_driver._request('cli', ['sweep'], 'v')\n"
             f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                          env={"PATH": "/usr/bin:/bin", "NBSCALE_HOME": str(tmp_path / "home"), "PYTHONPATH": ":".join(sys.path)})
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("environ", [{warm_driver.ENV_WARM_DRIVER: "0"}, {"RAY_ADDRESS": "10.0.0.5:6379"},
                                     {"NBSCALE_WARM_RAY": "0"}])
def test_where_the_driver_does_not_apply_the_command_runs_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                 environ: dict[str, str]) -> None:
    monkeypatch.setenv("NBSCALE_HOME", str(tmp_path / "home"))
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert warm_driver.run_in_driver("cli", ["sweep", "--help"]) is None
    assert not (tmp_path / "home").exists()  # no daemon was started


def test_inside_a_child_of_the_driver_the_command_does_not_ask_the_driver_again(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", warm_driver.ENV_WARM_DRIVER):
        monkeypatch.delenv(name, raising=False)
    assert warm_driver.wanted()
    monkeypatch.setattr(warm_driver, "IN_DRIVER", True)
    assert not warm_driver.wanted()
