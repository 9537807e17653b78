"""HTTP side of the simulation: routes, faults, chunked watches and followed pod logs."""

from __future__ import annotations

import json
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from .server import _REASONS, _ROUTE, LIST_KINDS, _not_found, status_body

if TYPE_CHECKING:
    from .server import KubeSim

_TERMINAL_POD = ("Succeeded", "Failed")


class SimHandler(BaseHTTPRequestHandler):
    """One request to the simulated API server."""

    sim: KubeSim
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # the test output stays readable

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # plumbing -------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        body = self._body()
        route = _ROUTE.match(url.path)
        watching = query.get("watch") in ("true", "1")
        fault = self.sim.take_fault("WATCH" if watching else method, url.path)
        if fault is not None:
            if fault.after and route is not None and not watching:
                self._object_call(method, route["kind"], route["ns"], route["name"], query, body)
            reason = _REASONS.get(fault.status, "Error")
            message = fault.message or f"injected {fault.status} {reason}"
            return self._json(fault.status, status_body(fault.status, message, reason), retry_after=fault.status == 429)
        if route is None:
            return self._json(404, status_body(404, "the server could not find the requested resource", "NotFound"))
        kind, ns, name, sub = route["kind"], route["ns"], route["name"], route["sub"]
        if watching:
            return self._watch(kind, ns, query)
        if sub == "log":
            return self._log(ns, name, query)
        self._json(*self._object_call(method, kind, ns, name, query, body))

    def _object_call(self, method: str, kind: str, ns: str, name: str | None, query: dict[str, str],
                     body: Any) -> tuple[int, dict[str, Any]]:
        sim = self.sim
        if method == "POST" and name is None:
            return sim.create(kind, ns, body)
        if method == "PATCH" and name:
            if self.headers.get("Content-Type", "").split(";")[0] != "application/merge-patch+json":
                return 415, status_body(415, "the simulation takes merge patches only", "UnsupportedMediaType")
            return sim.patch(kind, ns, name, body)
        if method == "GET" and name:
            obj = sim.get(kind, ns, name)
            return (200, obj) if obj is not None else (404, _not_found(kind, name))
        if method == "GET":
            items = sim.list(kind, ns, labels=query.get("labelSelector"), fields=query.get("fieldSelector"))
            return 200, {"kind": LIST_KINDS[kind], "apiVersion": "v1", "metadata": {"resourceVersion": str(sim.state.rv)}, "items": items}
        if method == "DELETE" and name:
            obj = sim.remove(kind, ns, name)
            return (200, obj) if obj is not None else (404, _not_found(kind, name))
        if method == "DELETE":
            gone = [sim.remove(kind, ns, o["metadata"]["name"]) for o in sim.list(kind, ns, labels=query.get("labelSelector"))]
            return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [g for g in gone if g]}
        return 405, status_body(405, f"{method} is not simulated here", "MethodNotAllowed")

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _json(self, status: int, body: dict[str, Any], *, retry_after: bool = False) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def _start_chunks(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # streams --------------------------------------------------------------------------------

    def _watch(self, kind: str, ns: str, query: dict[str, str]) -> None:
        sim = self.sim
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        timeout = min(float(query.get("timeoutSeconds") or sim.watch_seconds), sim.watch_seconds)
        self._start_chunks("application/json")
        try:
            with sim.cond:
                epoch, since = sim.state.watch_epoch, query.get("resourceVersion")
                if since not in (None, "", "0") and int(since) < sim.state.compacted:
                    gone = status_body(410, f"too old resource version: {since} ({sim.state.compacted})", "Expired")
                    self._chunk(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                    return self._end_chunks()
                cursor = int(since) if since not in (None, "", "0") else sim.state.rv
                initial = [] if since not in (None, "", "0") else sim.list(kind, ns, labels=labels, fields=fields)
            for obj in initial:
                self._chunk(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                events, cursor = sim.events_after(cursor, kind, ns, fields, labels)
                for event in events:
                    self._chunk(json.dumps({"type": event.type, "object": event.obj}).encode() + b"\n")
                with sim.cond:
                    if sim.state.watch_epoch != epoch:
                        break
                    if not events:
                        sim.cond.wait(0.2)
            self._end_chunks()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _log(self, ns: str, pod: str, query: dict[str, str]) -> None:
        sim = self.sim
        if sim.get("pods", ns, pod) is None:
            return self._json(404, _not_found("pods", pod))
        if query.get("container", "main") != "main":
            text = ""
        else:
            text = sim.state.logs.get((ns, pod), "")
        if query.get("follow") not in ("true", "1"):
            data = text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        self._follow_log(ns, pod)
        return None

    def _follow_log(self, ns: str, pod: str) -> None:
        sim = self.sim
        sent = 0
        with sim.cond:
            sim.state.followed.append(pod)
        self._start_chunks("text/plain")
        try:
            while True:
                with sim.cond:
                    text = sim.state.logs.get((ns, pod), "")
                    obj = sim.state.objects.get(("pods", ns, pod))
                    ended = obj is None or obj.get("status", {}).get("phase") in _TERMINAL_POD
                    if len(text) == sent and not ended:
                        sim.cond.wait(0.2)
                        continue
                if len(text) > sent:
                    self._chunk(text[sent:].encode())
                    sent = len(text)
                elif ended:
                    break
            self._end_chunks()
        except (BrokenPipeError, ConnectionResetError):
            pass
