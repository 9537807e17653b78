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


def _executor(tmp_path: Path) -> ArgoExecutor:
    return ArgoExecutor(store=RunStore(tmp_path / "runs.db"), kubeconfig=KUBECONFIG,
                        namespace=os.environ.get("NBSCALE_E2E_NAMESPACE", "argo"))


def _spec(*parameters: str):
    fields = {"image": os.environ["NBSCALE_E2E_IMAGE"]} if os.environ.get("NBSCALE_E2E_IMAGE") else {}
    return build_run_spec("examples/train.ipynb", root=ROOT, cli_parameters=list(parameters), **fields)


def test_example_notebook_runs_on_argo(tmp_path):
    executor = _executor(tmp_path)
    record = submit(_spec("n_estimators=20"), executor=executor, root=ROOT)
    seen = list(executor.updates(record.id))  # followed by watching the Workflow
    record = seen[-1]
    assert record.status == "SUCCEEDED", record.error
    assert record.progress.done == record.progress.total == 1 and record.steps[0].name == "notebook"
    text, offset = executor.logs(record.id)
    assert text.startswith("----- step notebook -----") and offset == len(text.encode())


def test_cancel_stops_the_workflow_on_argo(tmp_path):
    executor = _executor(tmp_path)
    record = submit(_spec("n_estimators=5000"), executor=executor, root=ROOT)
    executor.wait(record.id, timeout=30, interval=2)
    record = executor.cancel(record.id, wait=120)
    assert record.status == "KILLED", record
