"""Submit compiled workflows to Argo Workflows on a Kubernetes cluster, with the ``kubernetes`` client."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import ExecutionError
from ..store import Progress, RunRecord, utcnow
from .base import Executor

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "argoproj.io", "v1alpha1", "workflows"
_PHASES = {"Pending": "PENDING", "Running": "RUNNING", "Succeeded": "SUCCEEDED", "Failed": "FAILED", "Error": "FAILED"}


class ArgoExecutor(Executor):
    """Creates Workflow objects and reads their status back.

    Options: ``namespace`` (default: the kubeconfig context's, else ``default``), ``kubeconfig``
    (a path; default: in-cluster config, then ``~/.kube/config``), ``context``.
    """

    name = "argo"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._api: Any = None
        self._core: Any = None

    def _clients(self) -> tuple[Any, Any]:
        if self._api is None:
            from kubernetes import client, config

            try:
                if self.options.get("kubeconfig") or self.options.get("context"):
                    config.load_kube_config(config_file=self.options.get("kubeconfig"), context=self.options.get("context"))
                else:
                    try:
                        config.load_incluster_config()
                    except config.ConfigException:
                        config.load_kube_config()
            except (config.ConfigException, OSError) as exc:
                raise ExecutionError(f"no Kubernetes cluster configured ({exc}). Set KUBECONFIG or use the local executor (--executor local).") from None
            self._api, self._core = client.CustomObjectsApi(), client.CoreV1Api()
        return self._api, self._core

    @property
    def namespace(self) -> str:
        """Where workflows are created."""
        if self.options.get("namespace"):
            return str(self.options["namespace"])
        try:
            from kubernetes import config

            _, active = config.list_kube_config_contexts(config_file=self.options.get("kubeconfig"))
            return str(active.get("context", {}).get("namespace") or "default")
        except Exception:  # no kubeconfig (in-cluster): the pod's namespace is the usual choice
            return "default"

    def submit(self, manifest: dict[str, Any], *, record: RunRecord) -> RunRecord:
        """Create the Workflow, labelled with the run id."""
        api, _ = self._clients()
        body = {**manifest, "metadata": {**manifest["metadata"], "labels": {**manifest["metadata"].get("labels", {}), "nbscale.io/run-id": record.id}}}
        created = self._call(api.create_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, body)
        record = record.model_copy(update={"executor": self.name, "workflow_name": created["metadata"]["name"]})
        return self.store.create(record)

    def get(self, run_id: str) -> RunRecord:
        """The record, refreshed from the Workflow's status."""
        record = self.store.get(run_id)
        if record.done:
            return record
        api, _ = self._clients()
        wf = self._call(api.get_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, record.workflow_name)
        status = wf.get("status", {})
        nodes = [n for n in status.get("nodes", {}).values() if n.get("type") == "Pod"]
        progress = Progress(done=sum(n.get("phase") == "Succeeded" for n in nodes), total=len(nodes), unit="steps",
                            running=sum(n.get("phase") == "Running" for n in nodes), failed=sum(n.get("phase") in ("Failed", "Error") for n in nodes))
        new_status = _PHASES.get(status.get("phase", "Pending"), "PENDING")
        fields: dict[str, Any] = {"status": new_status, "progress": progress, "started": status.get("startedAt") or record.started}
        if new_status in ("SUCCEEDED", "FAILED"):
            fields.update(finished=status.get("finishedAt") or utcnow(), error=status.get("message") if new_status == "FAILED" else None)
        if wf.get("spec", {}).get("shutdown") and new_status == "FAILED":
            fields["status"] = "KILLED"
        return self.store.update(run_id, **fields)

    def cancel(self, run_id: str, *, wait: float = 60.0) -> RunRecord:
        """Ask Argo to terminate the workflow (``spec.shutdown: Terminate``)."""
        record = self.store.get(run_id)
        api, _ = self._clients()
        self._call(api.patch_namespaced_custom_object, GROUP, VERSION, self.namespace, PLURAL, record.workflow_name,
                   {"spec": {"shutdown": "Terminate"}})
        return self.store.update(run_id, status="KILLED", finished=utcnow(), error="cancelled")

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        """The main containers' logs of the workflow's pods, concatenated."""
        record = self.store.get(run_id)
        _, core = self._clients()
        pods = self._call(core.list_namespaced_pod, self.namespace, label_selector=f"workflows.argoproj.io/workflow={record.workflow_name}")
        text = "".join(f"[{p.metadata.name}]\n" + self._call(core.read_namespaced_pod_log, p.metadata.name, self.namespace, container="main")
                       for p in pods.items)
        data = text.encode()
        return data[offset:].decode(errors="replace"), len(data)

    @staticmethod
    def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise ExecutionError(f"the Kubernetes API refused: {exc.status} {exc.reason}: {exc.body}") from None
