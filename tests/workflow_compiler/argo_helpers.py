"""Helpers for the Argo executor's tests against the Kubernetes simulation (tests/kube_sim)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kube_sim.fixtures import SimCluster

from workflow_compiler.executors.argo import ArgoExecutor, Backoff
from workflow_compiler.spec import build_run_spec, load_pipeline
from workflow_compiler.store import RunRecord, RunStore
from workflow_compiler.submit import submit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
FAST = Backoff(attempts=4, first=0.05, longest=0.2)


def argo_executor(cluster: SimCluster, tmp_path: Path, **options: Any) -> ArgoExecutor:
    """An Argo executor talking to the simulation through a real ``kubernetes`` ApiClient."""
    options = {"backoff": FAST, "stop_grace": 30.0, **options}
    return ArgoExecutor(store=RunStore(tmp_path / "runs.db"), api_client=cluster.api_client(), namespace=cluster.namespace, **options)


def submit_run(executor: ArgoExecutor, *, pipeline: bool = False) -> RunRecord:
    """Submit the example notebook (or the example pipeline) to the simulation."""
    spec = load_pipeline("pipeline.yaml", root=EXAMPLES) if pipeline else build_run_spec("train.ipynb", root=EXAMPLES)
    return submit(spec, executor=executor, root=EXAMPLES)


def follow_all(executor: ArgoExecutor, run_id: str) -> list[RunRecord]:
    """Every record the executor's updates produce until the run ends."""
    return list(executor.updates(run_id))
