"""Running code in real kernels for the magics tests: a local one, and one owned by a Jupyter server."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager
from tornado.websocket import websocket_connect


class Outputs:
    """What a cell produced: text (stdout, results, errors), display MIME types, error name."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.mimetypes: set[str] = set()
        self.error: str | None = None

    def add(self, msg_type: str, content: dict[str, Any]) -> None:
        if msg_type == "stream":
            self.text.append(content["text"])
        elif msg_type in ("execute_result", "display_data"):
            self.mimetypes.update(content["data"])
            self.text.append(str(content["data"].get("text/html") or content["data"].get("text/plain", "")))
        elif msg_type == "error":
            self.error = content["ename"]
            self.text.append(f"{content['ename']}: {content['evalue']}")

    def __str__(self) -> str:
        return "".join(self.text)


class LocalKernel:
    """An ipykernel started with jupyter_client in ``cwd``, outside any Jupyter server."""

    def __init__(self, cwd: Path) -> None:
        self.km = KernelManager(kernel_name="python3")
        self.km.start_kernel(cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 300) -> Outputs:
        out = Outputs()
        self.kc.execute_interactive(code, timeout=timeout, output_hook=lambda m: out.add(m["msg_type"], m["content"]))
        return out

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


async def run_in_server_kernel(base_url: str, token: str, cwd: str, cells: list[str], timeout: float = 300) -> list[Outputs]:
    """Start a kernel through the server's REST API (so the server is its parent) and run ``cells``."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    http = AsyncHTTPClient()
    headers = {"Authorization": f"token {token}"}
    response = await http.fetch(f"{base_url}api/sessions", method="POST", headers=headers, body=json.dumps(
        {"path": f"{cwd}/magics-test.ipynb" if cwd else "magics-test.ipynb", "type": "notebook", "kernel": {"name": "python3"}}))
    kernel_id = json.loads(response.body)["kernel"]["id"]
    ws_url = base_url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    conn = await websocket_connect(HTTPRequest(ws_url, headers=headers))
    session = uuid.uuid4().hex
    results = []
    try:
        for code in cells:
            msg_id = uuid.uuid4().hex
            conn.write_message(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session, "username": "test", "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            }))
            out = Outputs()
            while True:
                raw = await asyncio.wait_for(conn.read_message(), timeout=timeout)
                if raw is None:
                    raise RuntimeError("the kernel websocket closed")
                msg = json.loads(raw)
                if msg.get("parent_header", {}).get("msg_id") != msg_id or msg.get("channel") != "iopub":
                    continue
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    break
                out.add(msg["msg_type"], msg["content"])
            results.append(out)
    finally:
        conn.close()
        await http.fetch(f"{base_url}api/kernels/{kernel_id}", method="DELETE", headers=headers)
    return results
