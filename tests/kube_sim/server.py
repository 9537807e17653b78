"""The simulated API server: objects, resource versions, watches, pod logs and injected faults.

Speaks the REST subset the Argo executor uses to the real ``kubernetes`` client, over HTTP on
127.0.0.1 (``http.server`` in a thread: the client needs nothing more, and a test needs no TLS).
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from workflow_compiler.errors import ManifestInvalid
from workflow_compiler.validation import validate_rayjob, validate_workflow

#: URL path → resource kind. Group paths name the CRDs the executor touches; pods and claims are core v1.
_ROUTE = re.compile(r"^/(?:apis/(?P<group>argoproj\.io/v1alpha1|ray\.io/v1)|api/v1)/namespaces/(?P<ns>[^/]+)/"
                    r"(?P<kind>workflows|rayjobs|pods|persistentvolumeclaims)(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$")
_VALIDATORS = {"workflows": validate_workflow, "rayjobs": validate_rayjob}
_GROUPS = {"workflows": "argoproj.io", "rayjobs": "ray.io", "pods": "", "persistentvolumeclaims": ""}
#: The ``kind`` of a list answer, by resource.
LIST_KINDS = {"workflows": "WorkflowList", "rayjobs": "RayJobList", "pods": "PodList",
              "persistentvolumeclaims": "PersistentVolumeClaimList"}


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` (a regex) with ``status``."""

    method: str
    path: str
    status: int
    times: int = 1
    message: str = ""
    after: bool = False  # do what was asked, then answer with the error (as a timeout after the write would)


@dataclass
class Event:
    """One change, kept for watches that resume from a resource version."""

    rv: int
    kind: str
    namespace: str
    type: str
    obj: dict[str, Any]


@dataclass
class SimState:
    """Everything the simulation holds; guarded by ``cond``."""

    objects: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    logs: dict[tuple[str, str], str] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    followed: list[str] = field(default_factory=list)  # pods whose log was read with follow=true
    rv: int = 0
    compacted: int = 0
    watch_epoch: int = 0


def status_body(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``meta/v1 Status`` failure, as the API server answers errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "details": details or {}, "code": code}


_REASONS = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 410: "Expired", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


def selector_matches(selector: str | None, values: dict[str, str]) -> bool:
    """Equality-based selectors (``a=b,c=d``, ``a!=b``, ``a``), as labels and fields use them."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if values.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if values.get(key.rstrip("=")) != value.lstrip("="):
                return False
        elif term not in values:
            return False
    return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``null`` removes a key)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KubeSim:
    """The simulated API server and its state; ``url`` is what a kubeconfig's ``server`` names."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.state = SimState()
        self.watch_seconds = 30.0  # a watch longer than this ends, as the API server's do
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="kube-sim", daemon=True)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> KubeSim:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.end_watches()
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        """Forget every object, event, log and fault (between tests)."""
        with self.cond:
            rv = self.state.rv
            self.state = SimState(rv=rv, compacted=rv)
            self.cond.notify_all()

    # faults and watch control ---------------------------------------------------------------

    def fail(self, method: str, path: str, status: int, *, times: int = 1, message: str = "", after: bool = False) -> None:
        """Inject a fault: ``method`` is an HTTP verb or ``WATCH``; ``path`` a regex on the URL path."""
        with self.cond:
            self.state.faults.append(Fault(method.upper(), path, status, times, message, after))

    def end_watches(self) -> None:
        """End every open watch, as an API server restart or a load balancer's timeout would."""
        with self.cond:
            self.state.watch_epoch += 1
            self.cond.notify_all()

    def compact(self) -> None:
        """Forget the event history: a watch that resumes from an older version gets 410 Gone."""
        with self.cond:
            self.state.events.clear()
            self.state.rv += 1  # even the newest version a watcher holds is now too old
            self.state.compacted = self.state.rv
            self.state.watch_epoch += 1
            self.cond.notify_all()

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The first fault matching this request, counted down."""
        with self.cond:
            self.state.requests.append((method, path))
            for fault in self.state.faults:
                if fault.method == method and re.search(fault.path, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.state.faults.remove(fault)
                    return fault
        return None

    # objects --------------------------------------------------------------------------------

    def put(self, kind: str, namespace: str, obj: dict[str, Any], event: str = "MODIFIED") -> dict[str, Any]:
        """Store ``obj`` with a new resource version and tell the watches."""
        with self.cond:
            self.state.rv += 1
            stored = copy.deepcopy(obj)
            stored.setdefault("metadata", {}).update(namespace=namespace, resourceVersion=str(self.state.rv))
            self.state.objects[(kind, namespace, stored["metadata"]["name"])] = stored
            self.state.events.append(Event(self.state.rv, kind, namespace, event, copy.deepcopy(stored)))
            self.cond.notify_all()
            return copy.deepcopy(stored)

    def remove(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Delete an object (a DELETED event); None when absent."""
        with self.cond:
            obj = self.state.objects.pop((kind, namespace, name), None)
            if obj is not None:
                self.state.rv += 1
                self.state.events.append(Event(self.state.rv, kind, namespace, "DELETED", copy.deepcopy(obj)))
                self.cond.notify_all()
            return obj

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A copy of one object, or None."""
        with self.cond:
            obj = self.state.objects.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: str, namespace: str, *, labels: str | None = None, fields: str | None = None) -> list[dict[str, Any]]:
        """Copies of the objects of ``kind`` in ``namespace`` matching the selectors."""
        with self.cond:
            return [copy.deepcopy(o) for (k, ns, _), o in self.state.objects.items()
                    if k == kind and ns == namespace and _matches(o, labels, fields)]

    def append_log(self, namespace: str, pod: str, text: str) -> None:
        """Add to a pod's ``main`` container log."""
        with self.cond:
            self.state.logs[(namespace, pod)] = self.state.logs.get((namespace, pod), "") + text
            self.cond.notify_all()

    def create(self, kind: str, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What POST does: validate against the CRD, name from ``generateName``, refuse duplicates."""
        if kind in _VALIDATORS:
            try:
                _VALIDATORS[kind](body)
            except ManifestInvalid as exc:
                return 422, status_body(422, f"{kind} is invalid: {exc.message}", "Invalid")
        meta = body.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = meta.get("generateName", "x-") + secrets.token_hex(3)[:5]
        with self.cond:
            if (kind, namespace, meta["name"]) in self.state.objects:
                return 409, status_body(409, f'{kind} "{meta["name"]}" already exists', "AlreadyExists",
                                        {"name": meta["name"], "group": _GROUPS[kind], "kind": kind})
            meta.update(uid=secrets.token_hex(8), creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            return 201, self.put(kind, namespace, body, "ADDED")

    def patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What a merge-patch does: apply, check the result against the CRD, store."""
        with self.cond:
            current = self.get(kind, namespace, name)
            if current is None:
                return 404, _not_found(kind, name)
            merged = merge_patch(current, patch)
            if kind in _VALIDATORS:
                check = {k: v for k, v in merged.items() if k != "status"}
                check["metadata"] = {k: v for k, v in merged["metadata"].items()
                                     if k in ("name", "namespace", "labels", "annotations", "generateName")}
                try:
                    _VALIDATORS[kind](check)
                except ManifestInvalid as exc:
                    return 422, status_body(422, f"{kind} is invalid: {exc.message}", "Invalid")
            return 200, self.put(kind, namespace, merged)

    def events_after(self, cursor: int, kind: str, namespace: str, fields: str | None, labels: str | None) -> tuple[list[Event], int]:
        """Events newer than ``cursor`` that a watch with these selectors sees, and the new cursor."""
        with self.cond:
            seen = [e for e in self.state.events if e.rv > cursor]
            matching = [e for e in seen if e.kind == kind and e.namespace == namespace and _matches(e.obj, labels, fields)]
            return matching, max([cursor, *(e.rv for e in seen)])


def _matches(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    meta = obj.get("metadata", {})
    return selector_matches(labels, meta.get("labels") or {}) and selector_matches(
        fields, {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")})


def _not_found(kind: str, name: str) -> dict[str, Any]:
    return status_body(404, f'{kind} "{name}" not found', "NotFound", {"name": name, "group": _GROUPS[kind], "kind": kind})


def _handler_for(sim: KubeSim) -> type[BaseHTTPRequestHandler]:
    from .http_handler import SimHandler

    return type("BoundSimHandler", (SimHandler,), {"sim": sim})
