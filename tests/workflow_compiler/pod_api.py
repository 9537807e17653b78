"""A stand-in for the two Kubernetes API reads environment capture makes (a simulation, not a cluster).

It serves recorded objects at their real API paths (``/api/v1/namespaces/NS/pods/NAME`` and
``.../persistentvolumeclaims/NAME``) on 127.0.0.1, answers 404/403 with a ``Status`` body as the API
server does, and records each request, so the real ``kubernetes`` client is what tests exercise.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class PodApi:
    """Recorded objects by API path, requests seen, and paths that answer 403."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.forbidden: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.headers: dict[str, str] = {}  # sent with every answer (e.g. to pose as the quota service)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add_pod(self, pod: dict[str, Any]) -> None:
        """Serve ``pod`` at its API path."""
        meta = pod["metadata"]
        self.objects[f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"] = pod

    def add_claim(self, namespace: str, name: str, modes: list[str]) -> str:
        """Serve a bound PersistentVolumeClaim with these access modes; returns its path."""
        path = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{name}"
        self.objects[path] = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
                              "spec": {"accessModes": modes, "resources": {"requests": {"storage": "10Gi"}}},
                              "status": {"phase": "Bound", "accessModes": modes}}
        return path

    def api_client(self) -> Any:
        """A real ``kubernetes.client.ApiClient`` pointed at this stand-in."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
                path = self.path.split("?")[0]
                api.requests.append(("GET", path))
                if path in api.forbidden:
                    self._answer(403, {"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403})
                elif path in api.objects:
                    self._answer(200, api.objects[path])
                else:
                    self._answer(404, {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in api.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def recorded_pod(name: str) -> dict[str, Any]:
    """A recorded pod object from ``pods/NAME.json``."""
    from pathlib import Path

    pod: dict[str, Any] = json.loads((Path(__file__).parent / "pods" / f"{name}.json").read_text(encoding="utf-8"))
    return pod


def captured(name: str, modes: str = "ReadWriteMany", **allow: Any) -> Any:
    """The PodEnvironment of a recorded pod whose claims all have access mode ``modes`` (no API involved)."""
    from workflow_compiler.podenv import claims_of, pod_environment_from

    pod = recorded_pod(name)
    claims = claims_of(pod["spec"].get("volumes") or [])
    return pod_environment_from(pod, claim_access_modes={c: [modes] for c in claims}, **allow)
