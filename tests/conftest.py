"""Session-wide settings: every test writes local state under a temporary NBSCALE_HOME."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kube_sim.fixtures import kube_sim, kube_sim_session  # noqa: F401 - fixtures of the Kubernetes simulation

# Ray in tests stays on loopback: single-node mode binds every Ray process to 127.0.0.1. It is read
# when ray is imported, so it is set here, before any test module is collected.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Tests talk to 127.0.0.1 only: MLflow 3's usage telemetry, which reaches out to its vendor from every
# process that imports MLflow, is off for every process a test starts, nbscale's or not.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session", autouse=True)
def nbscale_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private NBSCALE_HOME (runs, MLflow store) for the whole session, and quiet, local tools.

    Local runs start a warm tracking agent per NBSCALE_HOME, and sweeps a warm trial host; in tests
    they leave after 30 idle seconds, and every one a test started (found by its pid file) is
    stopped at the end.
    """
    home = tmp_path_factory.mktemp("nbscale-home")
    os.environ["NBSCALE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("NO_COLOR", "1")
    os.environ.setdefault("NBSCALE_TRACKING_AGENT_IDLE", "30")
    yield home
    from workflow_compiler.sweep import ray_head, trial_host, warm_driver
    from workflow_compiler.tracking import agent

    for pid_file in tmp_path_factory.getbasetemp().rglob(f"agent/{warm_driver.PID_NAME}"):  # first: its sweeps use the others
        warm_driver.stop(pid_file.parent.parent)
    for pid_file in tmp_path_factory.getbasetemp().rglob("agent/agent.pid"):
        agent.stop(pid_file.parent.parent)
    for pid_file in tmp_path_factory.getbasetemp().rglob(f"agent/{trial_host.PID_NAME}"):
        trial_host.stop(pid_file.parent.parent)
    for pid_file in tmp_path_factory.getbasetemp().rglob(f"agent/{ray_head.PID_NAME}"):
        ray_head.stop(pid_file.parent.parent)
