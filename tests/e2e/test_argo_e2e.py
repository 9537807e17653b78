"""End-to-end on a real cluster with Argo Workflows installed. Skipped unless a kubeconfig is given.

    NBSCALE_E2E_KUBECONFIG=~/.kube/config NBSCALE_E2E_NAMESPACE=argo \\
    NBSCALE_E2E_IMAGE=registry.example/nbscale/singleuser:0.1.0 .venv/bin/python -m pytest tests/e2e -m cluster

The nbscale image (images/singleuser.Dockerfile) must be pullable by the cluster, the namespace's
service account must be allowed to run workflows, and the workspace claim (``claim-<user>`` by
default, see workflow_compiler/cluster.py) must exist and hold examples/ at its root.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workflow_compiler.executors.argo import ArgoExecutor
from workflow_compiler.spec import build_run_spec
from workflow_compiler.store import RunStore
from workflow_compiler.submit import submit

KUBECONFIG = os.environ.get("NBSCALE_E2E_KUBECONFIG")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not KUBECONFIG, reason="set NBSCALE_E2E_KUBECONFIG to run against a real cluster with Argo"),
]


def test_example_notebook_runs_on_argo(tmp_path):
    executor = ArgoExecutor(store=RunStore(tmp_path / "runs.db"), kubeconfig=KUBECONFIG,
                            namespace=os.environ.get("NBSCALE_E2E_NAMESPACE", "argo"))
    fields = {"image": os.environ["NBSCALE_E2E_IMAGE"]} if os.environ.get("NBSCALE_E2E_IMAGE") else {}
    spec = build_run_spec("examples/train.ipynb", root=ROOT, cli_parameters=["n_estimators=20"], **fields)
    record = submit(spec, executor=executor, root=ROOT)
    record = executor.wait(record.id, timeout=900, interval=5)
    assert record.status == "SUCCEEDED", record.error
