"""Where MLflow data goes: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under NBSCALE_HOME.

Kept free of heavy imports (no mlflow, no sqlalchemy) so that every process can ask cheaply.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlparse


def nbscale_home() -> Path:
    """Where nbscale keeps local state: ``$NBSCALE_HOME``, default ``~/.nbscale``."""
    return Path(os.environ.get("NBSCALE_HOME") or Path.home() / ".nbscale").expanduser()


def default_tracking_uri() -> str:
    """The embedded default store: ``sqlite:///$NBSCALE_HOME/mlflow.db``."""
    return f"sqlite:///{nbscale_home().resolve() / 'mlflow.db'}"


def tracking_uri() -> str:
    """The store to use now: ``MLFLOW_TRACKING_URI`` when set and not empty, else the default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other kind of store."""
    if not uri.startswith("sqlite:"):
        return None
    path = unquote(urlparse(uri).path)
    return Path(path) if path and path != "/:memory:" else None


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment in a SQLite store keeps its artifacts: ``mlartifacts/`` beside the database.

    MLflow's own default for a client-side SQLite store is ``./mlruns`` relative to whichever folder
    the creating process happens to run in; pinning it keeps every run's artifacts in one known place.
    Returns None for other stores (a tracking server chooses its own artifact root).
    """
    db = sqlite_path(uri)
    if db is None:
        return None
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", experiment).strip("-.")[:60] or "experiment"
    digest = hashlib.sha256(experiment.encode("utf-8")).hexdigest()[:8]
    return (db.parent / "mlartifacts" / f"{slug}-{digest}").resolve().as_uri()
