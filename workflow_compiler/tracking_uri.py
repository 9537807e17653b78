"""Where MLflow data goes: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under NBSCALE_HOME.

Kept free of heavy imports (no mlflow, no sqlalchemy) so that every process can ask cheaply.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from .private_files import open_private, touch_private


def nbscale_home(environ: Mapping[str, str] | None = None) -> Path:
    """Where nbscale keeps local state: ``$NBSCALE_HOME``, default ``~/.nbscale`` (of ``environ``, default this process's)."""
    env = os.environ if environ is None else environ
    return Path(env.get("NBSCALE_HOME") or Path(env.get("HOME") or Path.home()) / ".nbscale").expanduser()


def default_tracking_uri() -> str:
    """The embedded default store: ``sqlite:///$NBSCALE_HOME/mlflow.db``."""
    return f"sqlite:///{nbscale_home().resolve() / 'mlflow.db'}"


def tracking_uri() -> str:
    """The store to use now: ``MLFLOW_TRACKING_URI`` when set and not empty, else the default."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


#: Where MLflow reads a tracking server's basic-auth credentials (mlflow.environment_variables).
USERNAME_VARIABLE, PASSWORD_VARIABLE = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"


def credentials_out_of_uri(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the password of ``MLFLOW_TRACKING_URI`` moved into MLflow's credential variables.

    MLflow prints the URI it was given in its errors, and those errors reach records, logs and
    notebooks; a URI without userinfo never carries the password there. MLflow sends the variables
    as the same basic auth (and they already won over the URI's userinfo when both were set). A URI
    with a user and no password is left as it is: MLflow sends no auth without a password.
    """
    uri = env.get("MLFLOW_TRACKING_URI", "")
    parsed = urlparse(uri)
    if not uri or parsed.password is None or parsed.username is None:
        return dict(env)
    host = parsed.netloc.rpartition("@")[2]
    moved = {**env, "MLFLOW_TRACKING_URI": parsed._replace(netloc=host).geturl()}
    if not (env.get(USERNAME_VARIABLE) and env.get(PASSWORD_VARIABLE)):
        moved.update({USERNAME_VARIABLE: unquote(parsed.username), PASSWORD_VARIABLE: unquote(parsed.password)})
    return moved


#: MLflow's switch for its usage telemetry (``mlflow.environment_variables``).
TELEMETRY_SWITCH = "MLFLOW_DISABLE_TELEMETRY"


def telemetry_switch(env: Mapping[str, str]) -> str:
    """``TELEMETRY_SWITCH``'s value for a process nbscale starts: MLflow's usage telemetry off
    (``"true"``) unless ``env`` says otherwise.

    MLflow 3 reports usage to its vendor from every process that imports it, starting with a
    config fetch from the internet; a sweep imports it in each trial worker (~0.3 s each on a
    2-core machine) and in each step. nbscale's processes stay quiet by default, as its agent
    always has; ``MLFLOW_DISABLE_TELEMETRY=false`` (or any value a user set) is kept.
    """
    return env.get(TELEMETRY_SWITCH, "true")


def without_telemetry(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with ``TELEMETRY_SWITCH`` set as ``telemetry_switch`` says."""
    return {**env, TELEMETRY_SWITCH: telemetry_switch(env)}


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
    touch_private(db)  # MLflow's store, and the -wal and -shm files SQLite gives the same mode: the user's alone
    with os.fdopen(open_private(db.with_name(db.name + ".init-lock"), os.O_WRONLY | os.O_CREAT), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``, built under ``store_init_lock`` (the constructor creates the schema).

    A tracking server is asked first, briefly (``check_tracking_server``): a wrong or stopped one is an
    error in seconds rather than MLflow's minutes of retries.
    """
    from mlflow.tracking import MlflowClient  # ~2 s to import: only callers that log pay for it

    from .tracking_server import check_tracking_server

    check_tracking_server(uri)

    db = sqlite_path(uri)
    if db is not None:
        # The store's module (~1 s to import) would otherwise load inside the lock, where parallel
        # steps and a sweep's trial workers would take turns at it; only creating the schema needs the lock.
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    with store_init_lock(uri):
        if db is not None and write_ahead_log_safe(db):
            use_write_ahead_log(db)
        return MlflowClient(tracking_uri=uri)


# -- SQLite's write-ahead log for the embedded store ---------------------------------------------
#
# In its default rollback-journal mode SQLite syncs the disk twice per commit, and a writer blocks
# every reader. A sweep's tracking agent commits four or five times per trial. With the WAL and
# synchronous=NORMAL, one trial's writes took 30 ms instead of 50 (and 30 ms of CPU instead of 42)
# on the 2-core machine of the README's benchmarks, and a sweep worker's `open` waited half as long.
# NORMAL in WAL mode never corrupts the database; a power cut may lose the last commits. The WAL's
# index lives in shared memory, which needs every process on one host: on NFS, SMB or FUSE mounts
# (JupyterHub homes often are) the store keeps its rollback journal.

#: Filesystems whose locks and shared memory the WAL can rely on (others, or an unknown type: no WAL).
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "bcachefs", "tmpfs", "overlay"})
_WAL_DATABASES: set[str] = set()


def filesystem_type(path: Path, mounts: str | None = None) -> str | None:
    """The type of the filesystem holding ``path``, from Linux's mount table; None when unknown."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:  # not Linux
            return None
    target = Path(os.path.realpath(path))
    best, found = -1, None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = Path(fields[1].replace("\\040", " "))  # the table escapes spaces in mount points
        if (mount == target or mount in target.parents) and len(mount.parts) > best:
            best, found = len(mount.parts), fields[2]
    return found


def write_ahead_log_safe(db: Path) -> bool:
    """Whether the SQLite database ``db`` is on a local filesystem (see above)."""
    return filesystem_type(db.parent) in LOCAL_FILESYSTEMS


def use_write_ahead_log(db: Path) -> None:
    """Switch ``db`` to WAL (it stays so) and make this process's connections to it sync less often."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    try:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    except sqlite3.Error:  # locked by a process that does not know the WAL: keep the journal it has
        return
    if mode != "wal":
        return
    _WAL_DATABASES.add(os.path.realpath(db))
    if not event.contains(Engine, "connect", _sync_normal_on_wal):
        # SQLAlchemy's documented way to set per-connection pragmas; MLflow builds the engine itself
        event.listen(Engine, "connect", _sync_normal_on_wal)


def _sync_normal_on_wal(dbapi_connection: Any, _record: Any) -> None:
    import sqlite3

    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    files = {os.path.realpath(row[2]) for row in dbapi_connection.execute("PRAGMA database_list") if row[1] == "main" and row[2]}
    if files & _WAL_DATABASES:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")
