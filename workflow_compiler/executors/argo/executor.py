"""The Argo executor: submit a compiled Workflow, follow it by watching, read its logs, stop it, fetch its outputs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ... import quota
from ...errors import ExecutionError, RunNotFound
from ...private_files import private_folder
from ...spec import current_user
from ...store import RunRecord, nbscale_home, utcnow, wait_until
from ..base import OUTPUT_LINKS, Executor
from .connect import api_client_for, namespace_for
from .kube import RAYJOBS, WORKFLOWS, Backoff, KubeCalls, KubernetesObjectGone
from .logs import StepLogs
from .outputs import cluster_tracking_uri, download_output, find_workflow_run, record_links
from .status import WORKFLOW_LABEL, queued_pods, record_fields, workflow_nodes

log = logging.getLogger(__name__)

RUN_ID_LABEL = "nbscale.io/run-id"
#: The record's identity, kept on the Workflow so a server that lost its store can re-attach.
RUN_ANNOTATION = "nbscale.io/run"
_IDENTITY = ("id", "kind", "notebook", "user", "created")


class ArgoExecutor(Executor):
    """Creates Workflow objects on a cluster and follows them.

    Options: ``namespace`` (default: the cluster config's, the pod's, the kubeconfig context's, else
    ``default``), ``kubeconfig`` and ``context`` (default: in-cluster config, then ``$KUBECONFIG``),
    ``api_client`` (a ready ``kubernetes.client.ApiClient``), ``backoff`` (a ``Backoff``),
    ``stop_grace`` (seconds between ``shutdown: Stop`` and ``Terminate``, default 30).
    """

    name = "argo"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._calls: KubeCalls | None = None
        self._namespace: str | None = None
        self._beats: dict[str, float] = {}  # lease id -> when its next heartbeat is due (monotonic)

    @property
    def calls(self) -> KubeCalls:
        """The Kubernetes API of the configured cluster."""
        if self._calls is None:
            client = self.options.get("api_client") or api_client_for(self.options.get("kubeconfig"), self.options.get("context"))
            self._calls = KubeCalls(client, backoff=self.options.get("backoff") or Backoff())
        return self._calls

    @property
    def namespace(self) -> str:
        """Where workflows are created."""
        if self._namespace is None:
            self._namespace = namespace_for(self.options.get("namespace"), self.options.get("kubeconfig"), self.options.get("context"))
        return self._namespace

    # submit and follow ----------------------------------------------------------------------

    def submit(self, manifest: dict[str, Any], *, record: RunRecord) -> RunRecord:
        """Create the Workflow, labelled with the run id and annotated with the record's identity."""
        meta = manifest["metadata"]
        identity = json.dumps({k: getattr(record, k) for k in _IDENTITY}, sort_keys=True)
        body = {**manifest, "metadata": {**meta, "labels": {**meta.get("labels", {}), RUN_ID_LABEL: record.id},
                                         "annotations": {**meta.get("annotations", {}), RUN_ANNOTATION: identity}}}
        body["metadata"].pop("namespace", None)  # the executor's namespace wins: the calls are made there
        created = self.calls.call("create", "workflows", self.namespace, self.calls.custom.create_namespaced_custom_object,
                                  *self._path(), body, done_already=lambda: self._labelled(record.id))
        record = record.model_copy(update={"executor": self.name, "namespace": self.namespace,
                                           "workflow_name": created["metadata"]["name"], "run_dir": self._run_dir(record.id)})
        log.info("run %s: created workflow %s in %s", record.id, record.workflow_name, self.namespace)
        return self.store.create(record)

    def _labelled(self, run_id: str) -> dict[str, Any] | None:
        """The Workflow labelled with ``run_id``, if one exists (a create that failed may have happened)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        try:  # one try, inside the create's own retries
            listing: Any = self.calls.custom.list_namespaced_custom_object(*self._path(),
                                                                           label_selector=f"{RUN_ID_LABEL}={run_id}")
        except (ApiException, Urllib3Error, OSError):
            return None  # unknown: the create is tried again
        items = listing.get("items") or []
        return dict(items[0]) if items else None

    def get(self, run_id: str) -> RunRecord:
        """The record, refreshed from its Workflow (a deleted Workflow ends the run FAILED)."""
        record = self.store.get(run_id)
        if record.done:
            return record
        try:
            wf = self.calls.call("get", "workflows", self._ns(record), self.calls.custom.get_namespaced_custom_object,
                                 *self._path(record), record.workflow_name)
        except KubernetesObjectGone as exc:
            return self._end(record, "FAILED", f"lost: {exc.message}")
        return self._apply(record, wf)

    def updates(self, run_id: str, *, interval: float = 0.3) -> Iterator[RunRecord]:
        """The record now and after every change of its Workflow, driven by a watch, until the run ends."""
        from .watch import watch_workflow

        record = self.store.get(run_id)
        if record.done:
            yield record
            return
        try:
            for wf in watch_workflow(self.calls, self._ns(record), record.workflow_name,
                                     watch_seconds=int(self.options.get("watch_seconds", 60))):
                record = self._apply(self.store.get(run_id), wf)
                yield record
                if record.done:
                    return
        except KubernetesObjectGone as exc:
            yield self._end(self.store.get(run_id), "FAILED", f"lost: {exc.message}")

    def _apply(self, record: RunRecord, wf: dict[str, Any]) -> RunRecord:
        nodes = workflow_nodes(wf.get("status") or {}) or {}
        waiting = any(n.get("type") == "Pod" and n.get("phase") == "Pending" for n in nodes.values())
        queued = queued_pods(self._pods(record)) if waiting else {}
        fields = record_fields(wf, record, queued)
        if fields["status"] not in ("SUCCEEDED", "FAILED", "KILLED"):
            self._escalate(record, wf)
            self._keep_lease(record)
            return self.store.update(record.id, **fields)
        fields.update(self._outputs_fields(record))
        record = self.store.update(record.id, **fields)
        self._release_lease(record)
        return record

    def _pods(self, record: RunRecord) -> list[dict[str, Any]]:
        listing = self.calls.call("list", "pods", self._ns(record), self.calls.core.list_namespaced_pod, self._ns(record),
                                  label_selector=f"{WORKFLOW_LABEL}={record.workflow_name}")
        return [self.calls.api_client.sanitize_for_serialization(p) for p in listing.items]

    # cancel ---------------------------------------------------------------------------------

    def cancel(self, run_id: str, *, wait: float = 60.0) -> RunRecord:
        """``shutdown: Stop`` (exit handlers run), then ``Terminate`` after the grace period; RayJobs go too.

        KILLED is recorded only once Argo reports the Workflow finished; until then the record
        returned is the one as it stands (still stopping).
        """
        record = self.store.get(run_id)
        if record.done:
            return record
        if not record.cancel_requested:  # a second cancel must not turn a Terminate back into a Stop
            self._shutdown(record, "Stop")
        # to the microsecond: the grace period before Terminate is measured from it
        record = self.store.update(run_id, cancel_requested=record.cancel_requested or datetime.now(UTC).isoformat())
        self._delete_rayjobs(record)
        deadline, grace = time.monotonic() + wait, float(self.options.get("stop_grace", 30.0))
        if wait_until(lambda: self.get(run_id).done, timeout=min(wait, grace), interval=0.25) or wait < grace:
            return self.get(run_id)  # ended, or the caller cannot wait: a later get escalates after the grace period
        self._shutdown(record, "Terminate")
        wait_until(lambda: self.get(run_id).done, timeout=max(0.0, deadline - time.monotonic()), interval=0.25)
        return self.get(run_id)

    def stop_hint(self, record: RunRecord) -> str:
        """What to do when a cancel is still under way."""
        return (f"Argo is still stopping workflow {record.workflow_name} in namespace {record.namespace}. Check again with "
                f"`nbscale status {record.id}`, or end it with `kubectl -n {record.namespace} delete workflow {record.workflow_name}`.")

    def _shutdown(self, record: RunRecord, strategy: str) -> None:
        log.info("run %s: shutdown %s of workflow %s", record.id, strategy, record.workflow_name)
        try:
            self.calls.call("patch", "workflows", self._ns(record), self.calls.custom.patch_namespaced_custom_object,
                            *self._path(record), record.workflow_name, {"spec": {"shutdown": strategy}})
        except KubernetesObjectGone as exc:
            self._end(record, "KILLED", f"cancelled; {exc.message}")

    def _escalate(self, record: RunRecord, wf: dict[str, Any]) -> None:
        """Terminate a Workflow still stopping after the grace period, whoever watches it (CLI, server)."""
        if record.cancel_requested and (wf.get("spec") or {}).get("shutdown") == "Stop":
            asked = datetime.fromisoformat(record.cancel_requested)
            if (datetime.now(UTC) - asked).total_seconds() > float(self.options.get("stop_grace", 30.0)):
                self._shutdown(record, "Terminate")

    def _delete_rayjobs(self, record: RunRecord) -> None:
        """Delete the run's RayJobs one by one (the chart's Role grants list and delete, not deletecollection)."""
        group, version, plural = RAYJOBS
        ns = self._ns(record)
        try:
            listing = self.calls.call("list", "rayjobs.ray.io", ns, self.calls.custom.list_namespaced_custom_object,
                                      group, version, ns, plural, label_selector=f"{RUN_ID_LABEL}={record.id}")
            for job in listing.get("items", []):
                name = job["metadata"]["name"]
                log.info("run %s: deleting RayJob %s", record.id, name)
                try:
                    self.calls.call("delete", "rayjobs.ray.io", ns, self.calls.custom.delete_namespaced_custom_object,
                                    group, version, ns, plural, name)
                except KubernetesObjectGone:
                    pass  # gone already (its Workflow's owner reference, or another cancel)
        except ExecutionError as exc:  # no KubeRay here, or no right to it: the Workflow's stop still ends the run
            if record.kind == "sweep":
                log.warning("run %s: could not delete its RayJobs: %s", record.id, exc.message)

    # logs and outputs -----------------------------------------------------------------------

    def logs(self, run_id: str, offset: int = 0) -> tuple[str, int]:
        """The steps' ``main`` container logs, in start order, from byte ``offset``."""
        data = self._log_state(self.store.get(run_id))[0].encode()
        if len(data) <= offset:
            return "", offset
        return data[offset:].decode("utf-8", errors="replace"), len(data)

    def stream_logs(self, run_id: str, *, interval: float = 0.5) -> Iterator[str]:
        """The log as ``logs`` reads it, with the running step's pod log streamed as it is written (``follow=true``)."""
        offset = 0
        while True:
            record = self.get(run_id)
            text, follow = self._log_state(record)
            data = text.encode()
            if len(data) > offset:
                yield data[offset:].decode("utf-8", errors="replace")
                offset = len(data)
            elif record.done:
                return
            if follow is None:
                time.sleep(interval)
                continue
            for chunk in self._step_logs(record).follow(*follow):
                offset += len(chunk.encode())
                yield chunk

    def _log_state(self, record: RunRecord) -> tuple[str, tuple[str, str] | None]:
        try:
            wf = self.calls.call("get", "workflows", self._ns(record), self.calls.custom.get_namespaced_custom_object,
                                 *self._path(record), record.workflow_name)
        except KubernetesObjectGone:
            return "", None
        nodes = workflow_nodes(wf.get("status") or {})
        if nodes is None:
            return (f"[step statuses of {record.workflow_name} are offloaded to Argo's database; read its logs with "
                    f"`argo logs -n {self._ns(record)} {record.workflow_name}`]\n"), None
        return self._step_logs(record).read(record, nodes)

    def _step_logs(self, record: RunRecord) -> StepLogs:
        return StepLogs(self.calls, self._ns(record), self._private_folder(record.id, "logs"))

    def output_file(self, run_id: str, name: str) -> Path:
        """The output file ``name`` of a finished run, downloaded from its MLflow run on first request."""
        record = self.get(run_id)
        if record.done and not record.mlflow_run_id:  # MLflow was unreachable, or slow to show the run, when it ended
            record = self.store.update(run_id, **self._outputs_fields(record))
        uri = cluster_tracking_uri()
        if OUTPUT_LINKS.get(name) not in record.links or not record.mlflow_run_id or not uri:
            raise RunNotFound(f"run {run_id} has no {name} (yet): status {record.status}.")
        return download_output(uri, record.mlflow_run_id, name, self._private_folder(run_id, "outputs"))

    def _outputs_fields(self, record: RunRecord) -> dict[str, Any]:
        uri = cluster_tracking_uri()
        if not uri or record.mlflow_run_id:
            return {}
        try:
            found = find_workflow_run(uri, record.workflow_name)
        except Exception as exc:  # noqa: BLE001 - an unreachable MLflow must not hide the run's own end
            log.warning("run %s: could not find its MLflow run in %s: %s", record.id, uri, exc)
            return {}
        if not found:
            return {}
        return {"mlflow_run_id": found["run_id"], "mlflow_experiment_id": found["experiment_id"],
                "links": {**record.links, **record_links(uri, found, Path(self._run_dir(record.id)))}}

    # restart --------------------------------------------------------------------------------

    def reattach(self) -> list[str]:
        """Follow again the in-flight runs of this namespace's Workflows (by run-id label) after a restart.

        A record the store lost is rebuilt from the Workflow's annotation; a record whose Workflow
        is gone ends FAILED (lost). Returns the ids of the runs re-attached. The server extension
        also calls it periodically, so that leases are heartbeated and stopping runs terminated
        while nobody looks.
        """
        from ...compiler import LABEL_USER
        from ...compiler.naming import label_value

        mine = f"{RUN_ID_LABEL},{LABEL_USER}={label_value(current_user())}"  # a shared namespace holds others' runs too
        listing = self.calls.call("list", "workflows", self.namespace, self.calls.custom.list_namespaced_custom_object,
                                  *self._path(), label_selector=mine)
        seen = []
        for wf in listing.get("items", []):
            run_id = wf["metadata"]["labels"][RUN_ID_LABEL]
            try:
                record: RunRecord | None = self.store.get(run_id)
            except RunNotFound:
                record = self._adopt(wf)
            if record is not None and not record.done:
                self._apply(record, wf)
                seen.append(run_id)
        for record in self.store.list(status="RUNNING", limit=10_000)[0] + self.store.list(status="PENDING", limit=10_000)[0]:
            if record.executor == self.name and record.id not in seen and self._ns(record) == self.namespace:
                self.get(record.id)  # its Workflow is gone: ends FAILED (lost)
        return seen

    def _adopt(self, wf: dict[str, Any]) -> RunRecord | None:
        try:
            identity = json.loads((wf["metadata"].get("annotations") or {})[RUN_ANNOTATION])
        except (KeyError, ValueError):
            return None
        if identity.get("user") != current_user():  # a shared namespace holds other people's runs too
            return None
        record = RunRecord(**{k: identity[k] for k in _IDENTITY if k in identity}, executor=self.name, namespace=self.namespace,
                           workflow_name=wf["metadata"]["name"], run_dir=self._run_dir(identity["id"]))
        log.info("run %s: re-attached to workflow %s", record.id, record.workflow_name)
        return self.store.create(record)

    # helpers --------------------------------------------------------------------------------

    def _end(self, record: RunRecord, status: str, error: str) -> RunRecord:
        record = self.store.update(record.id, status=status, finished=utcnow(), error=error)
        self._release_lease(record)
        return record

    def _keep_lease(self, record: RunRecord) -> None:
        """Heartbeat the run's GPU lease (a third of its TTL apart) whenever someone follows the run."""
        if record.lease_id and time.monotonic() >= self._beats.get(record.lease_id, 0.0):
            ttl = quota.heartbeat(record.lease_id)
            self._beats[record.lease_id] = time.monotonic() + (ttl / 3 if ttl else 10.0)

    def _release_lease(self, record: RunRecord) -> None:
        if record.lease_id:
            held = record.duration or 0.0
            quota.release(record.lease_id, record.lease_gpus * held)

    def _ns(self, record: RunRecord) -> str:
        return record.namespace or self.namespace

    def _path(self, record: RunRecord | None = None) -> tuple[str, str, str, str]:
        group, version, plural = WORKFLOWS
        return group, version, self._ns(record) if record else self.namespace, plural

    @staticmethod
    def _private_folder(run_id: str, name: str) -> Path:
        """``runs/<id>/<name>`` in NBSCALE_HOME, each level created 0700 (UnsafeFolder when another can write it)."""
        return private_folder(private_folder(private_folder(nbscale_home() / "runs") / run_id) / name)

    @staticmethod
    def _run_dir(run_id: str) -> str:
        return str(nbscale_home() / "runs" / run_id)
