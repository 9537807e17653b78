"""A real HTTP service on 127.0.0.1 whose answers a test chooses: for the clients of services that are
not Kubernetes (the GPU quota service), where the simulation in ``kube_sim/`` does not apply.

``JsonService(answer)`` calls ``answer(method, path, body)`` for each request and sends back the
``(status, JSON body)`` it returns, with ``headers``; ``seen`` keeps every request in order.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[str, str, Any], tuple[int, dict[str, Any]]]


class JsonService(ThreadingHTTPServer):
    """Serves until ``close()``; a context manager too."""

    daemon_threads = True

    def __init__(self, answer: Answer, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer = answer
        self.headers = dict(headers or {})
        self.seen: list[tuple[str, str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without a trailing slash."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        """Stop serving and free the port."""
        self.shutdown()
        self.server_close()

    def __enter__(self) -> JsonService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A late answer meets a client that gave up (broken pipe): expected in these tests, not printed."""


class _Handler(BaseHTTPRequestHandler):
    server: JsonService

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        path = self.path.split("?")[0]
        self.server.seen.append((method, path, body))
        status, answer = self.server.answer(method, path, body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        for key, value in {**self.server.headers, "Content-Type": "application/json", "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass
