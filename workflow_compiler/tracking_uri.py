"""Where MLflow data goes: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under NBSCALE_HOME.

Kept free of heavy imports (no mlflow, no sqlalchemy) so that every process can ask cheaply.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
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


@contextmanager
def store_init_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store across processes.

    MLflow creates and migrates a new SQLite schema on a client's first call; two processes doing
    that at once (parallel steps, concurrent runs on a fresh machine) fail with "Online migration
    expected to match one row". Other stores need no lock.
    """
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``, built under ``store_init_lock`` (the constructor creates the schema)."""
    from mlflow.tracking import MlflowClient  # ~2 s to import: only callers that log pay for it

    if sqlite_path(uri) is not None:
        # The store's module (~1 s to import) would otherwise load inside the lock, where parallel
        # steps and a sweep's trial workers would take turns at it; only creating the schema needs the lock.
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    with store_init_lock(uri):
        return MlflowClient(tracking_uri=uri)
