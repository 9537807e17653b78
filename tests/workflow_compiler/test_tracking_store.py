"""The embedded SQLite MLflow store: opened by several processes at once (parallel steps, concurrent
runs), and in write-ahead-log mode where its filesystem allows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workflow_compiler import tracking_uri

OPEN_AND_LOG = """
import sys
from mlflow.tracking import MlflowClient
from workflow_compiler.runtime.tracking import ensure_experiment, make_client
uri = sys.argv[1]
client = make_client(uri)
experiment = ensure_experiment(client, "race", uri)
run = client.create_run(experiment)
client.log_metric(run.info.run_id, "ok", 1.0)
"""


def test_parallel_first_use_of_a_fresh_store_never_fails(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN_AND_LOG, uri], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(errors)[-3000:]

    from mlflow.tracking import MlflowClient

    runs = MlflowClient(tracking_uri=uri).search_runs([MlflowClient(tracking_uri=uri).get_experiment_by_name("race").experiment_id])
    assert len(runs) == 4


ORDER_OF_WORK = """
import sys
from workflow_compiler import tracking_uri

held = tracking_uri.store_init_lock

def watched(uri):
    print("store module loaded before the lock:", "mlflow.store.tracking.sqlalchemy_store" in sys.modules, flush=True)
    return held(uri)

tracking_uri.store_init_lock = watched
tracking_uri.open_client(sys.argv[1])
"""


def test_the_store_module_loads_before_the_lock_is_taken(tmp_path):
    # ~1 s of import inside the cross-process lock made a sweep's trial workers, and parallel steps,
    # open their stores one after another; only the schema's creation needs it.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", ORDER_OF_WORK, uri], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "store module loaded before the lock: True" in done.stdout, done.stdout


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export/home /home nfs4 rw,relatime 0 0
/dev/sdb1 /home/alice/fast\\040disk xfs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


@pytest.mark.parametrize(("path", "fstype"), [
    ("/", "ext4"), ("/opt/data", "ext4"), ("/home/alice/.nbscale", "nfs4"),
    ("/home/alice/fast disk/.nbscale", "xfs"), ("/home/alice/fast", "nfs4"), ("/tmp/x", "tmpfs"),
])
def test_the_filesystem_of_a_path_is_its_longest_mount(path, fstype):
    assert tracking_uri.filesystem_type(Path(path), MOUNTS) == fstype


def test_no_write_ahead_log_where_the_filesystem_is_not_known_to_be_local(monkeypatch):
    monkeypatch.setattr(tracking_uri, "filesystem_type", lambda path, mounts=None: "nfs4")
    assert not tracking_uri.write_ahead_log_safe(Path("/home/alice/.nbscale/mlflow.db"))
    monkeypatch.setattr(tracking_uri, "filesystem_type", lambda path, mounts=None: None)  # no mount table (not Linux)
    assert not tracking_uri.write_ahead_log_safe(Path("/x/mlflow.db"))
    monkeypatch.setattr(tracking_uri, "filesystem_type", lambda path, mounts=None: "ext4")
    assert tracking_uri.write_ahead_log_safe(Path("/x/mlflow.db"))


WAL_CHECK = """
import sqlite3, sys
import sqlalchemy
from workflow_compiler import tracking_uri
if sys.argv[2] == "network":
    tracking_uri.filesystem_type = lambda path, mounts=None: "nfs4"
client = tracking_uri.open_client(sys.argv[1])
client.create_experiment("e")  # MLflow's own connections work in either mode
with sqlalchemy.create_engine(sys.argv[1]).connect() as connection:  # as MLflow's engine connects
    print("synchronous", connection.exec_driver_sql("PRAGMA synchronous").scalar())
print("journal", sqlite3.connect(sys.argv[1][len("sqlite:///"):]).execute("PRAGMA journal_mode").fetchone()[0])
"""


@pytest.mark.parametrize(("where", "journal", "synchronous"), [("local", "wal", 1), ("network", "delete", 2)])
def test_the_store_uses_the_write_ahead_log_on_a_local_disk_only(tmp_path, where, journal, synchronous):
    # tmp_path is on a local filesystem here (ext4 or overlay); "network" stands for an NFS home
    assert tracking_uri.write_ahead_log_safe(tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = subprocess.run([sys.executable, "-c", WAL_CHECK, uri, where], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"journal {journal}" in done.stdout and f"synchronous {synchronous}" in done.stdout, done.stdout  # 1 NORMAL, 2 FULL
