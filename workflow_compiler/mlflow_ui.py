"""Links into the MLflow UI, and how to start that UI when nothing serves it."""

from __future__ import annotations

import os
import shlex
import socket
from urllib.parse import urlparse

from .tracking_uri import tracking_uri


def mlflow_ui_base() -> str:
    """Where ``mlflow ui`` serves the local store (``make mlflow-ui``); links in records point there."""
    return os.environ.get("NBSCALE_MLFLOW_UI", "http://127.0.0.1:5000").rstrip("/")


def mlflow_run_link(experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run."""
    return f"{mlflow_ui_base()}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_ui_command() -> str:
    """The command line that serves the MLflow UI where links point, on this machine's store."""
    base = urlparse(mlflow_ui_base())
    return shlex.join(["mlflow", "ui", "--backend-store-uri", tracking_uri(), "--host", base.hostname or "127.0.0.1",
                       "--port", str(base.port or 5000)])


#: What the CLI and the magics say under an MLflow link that nothing serves, before ``mlflow_ui_command()``.
MLFLOW_UI_DOWN = "MLflow UI not running: `make mlflow-ui` (in the nbscale checkout) or"


def mlflow_ui_down(link: str) -> bool:
    """Whether ``link`` points at a local MLflow UI that nothing serves (so the user must start it)."""
    base = urlparse(mlflow_ui_base())
    if not link.startswith(mlflow_ui_base()) or base.hostname not in ("127.0.0.1", "localhost"):
        return False
    try:
        with socket.create_connection((base.hostname, base.port or 80), timeout=0.2):
            return False
    except OSError:
        return True
