"""A fresh SQLite MLflow store opened by several processes at once (parallel steps, concurrent runs)."""

from __future__ import annotations

import subprocess
import sys

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
