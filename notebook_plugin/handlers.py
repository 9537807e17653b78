"""REST handlers under ``{base_url}/nbscale/api/``: thin, authenticated, authorized, one error mapper."""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from workflow_compiler.errors import RequestTooLarge, SpecError
from workflow_compiler.limits import MAX_BODY_BYTES, MAX_VALUE_DEPTH
from workflow_compiler.spec import parse_model

from .errors import error_response
from .service import LogQuery, RunService

#: The policy a run's HTML output is served with: sandboxed (no script, opaque origin), framed only by Jupyter.
OUTPUT_HTML_CSP = "sandbox; frame-ancestors 'self'"
#: The resource every nbscale handler is authorized against (``jupyter_server`` authorizers see it).
AUTH_RESOURCE = "nbscale"
H = TypeVar("H", bound="NbscaleHandler")


def maps_errors(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Answer any exception raised by ``method`` through ``error_response`` (JSON, right status)."""

    @functools.wraps(method)
    async def wrapper(self: NbscaleHandler, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, *args, **kwargs)
        except Exception as exc:  # the single place exceptions become HTTP answers
            status, body = error_response(exc)
            self.clear()
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps(body))

    return wrapper


class NbscaleHandler(ExtensionHandlerMixin, APIHandler):
    """Base of the nbscale handlers: the service, the caller, and blocking work off the event loop."""

    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> RunService:
        """The extension's RunService."""
        return self.settings["nbscale_service"]  # type: ignore[no-any-return]

    @property
    def username(self) -> str:
        """Who is calling, as the identity provider names them."""
        user = self.current_user
        return getattr(user, "username", "") or getattr(user, "name", "") or "jupyter"

    async def blocking(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``func`` in a thread: store, notebook and process work must not stall the server."""
        return await asyncio.to_thread(func, *args, **kwargs)

    def query(self) -> dict[str, str]:
        """The query string as a flat dict (last value wins)."""
        return {k: self.get_query_argument(k) for k in self.request.query_arguments}

    def json_body(self) -> Any:
        """The request body parsed as JSON (a bad body is a 400, a body over the limit a 413, through the mapper)."""
        body = self.request.body or b"null"
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge(f"the request body is {len(body) // 1024:,} KiB; the limit is {MAX_BODY_BYTES // 1024:,} KiB. "
                                  "Pass large data as a file path parameter instead.")
        try:
            return json.loads(body)
        except RecursionError:  # the decoder's own stack limit: the body is JSON, nested deeper than we read
            raise SpecError("the request body nests lists or objects too deeply to read; "
                            f"parameter values may nest at most {MAX_VALUE_DEPTH} deep.") from None


class ParametersHandler(NbscaleHandler):
    """``GET notebooks/parameters?path=``: the notebook's typed parameters."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self) -> None:
        self.finish(await self.blocking(self.service.parameters, self.get_query_argument("path", None)))


class SchemaHandler(NbscaleHandler):
    """``GET schema``: JSON Schemas of the run and pipeline specs."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self) -> None:
        self.finish(await self.blocking(self.service.schema))


class RunsHandler(NbscaleHandler):
    """``GET runs`` lists, ``POST runs`` submits a RunSpec (201 + record)."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self) -> None:
        self.finish(await self.blocking(self.service.list, self.query()))

    @web.authenticated
    @authorized
    @maps_errors
    async def post(self) -> None:
        record = await self.blocking(self.service.submit, self.json_body(), user=self.username)
        self.set_status(201)
        self.set_header("Location", f"{self.service.api_url}runs/{record['id']}")
        self.finish(record)


class RunHandler(NbscaleHandler):
    """``GET runs/{id}``: one run's record."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self, run_id: str) -> None:
        self.finish(await self.blocking(self.service.get, run_id))


class CancelHandler(NbscaleHandler):
    """``POST runs/{id}/cancel``: stop a run."""

    @web.authenticated
    @authorized
    @maps_errors
    async def post(self, run_id: str) -> None:
        self.finish(await self.blocking(self.service.cancel, run_id))


class LogsHandler(NbscaleHandler):
    """``GET runs/{id}/logs?offset=&wait=``: log text from an offset; waits up to ``wait`` s for more."""

    _gone = False

    def on_connection_close(self) -> None:
        """The client left: stop waiting for log text."""
        self._gone = True

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self, run_id: str) -> None:
        q = parse_model(LogQuery, self.query(), what="query")
        deadline = time.monotonic() + q.wait
        while True:
            text, offset, done = await self.blocking(self.service.logs_once, run_id, q.offset)
            if text or done or time.monotonic() >= deadline or self._gone:
                break
            await asyncio.sleep(0.5)
        self.finish({"text": text, "offset": offset, "done": done})


class OutputHandler(NbscaleHandler):
    """``GET runs/{id}/outputs/{name}``: ``output.ipynb`` or ``output.html`` of a run."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self, run_id: str, name: str) -> None:
        path, content_type = await self.blocking(self.service.output_file, run_id, name)
        data = await self.blocking(path.read_bytes)
        if name.endswith(".html"):
            # No allow-scripts: the notebook's HTML gets an opaque origin and runs no script with the user's
            # Jupyter session; frame-ancestors keeps other sites from framing it.
            self.set_header("Content-Security-Policy", OUTPUT_HTML_CSP)
        disposition = "attachment" if self.get_query_argument("download", "") else "inline"
        self.set_header("Content-Disposition", f'{disposition}; filename="{run_id}-{name}"')
        self.finish(data, set_content_type=content_type)  # APIHandler.finish would label it application/json


class QuotaHandler(NbscaleHandler):
    """``GET quota``: the caller's GPU quota, or ``{"enabled": false}`` outside a hub."""

    @web.authenticated
    @authorized
    @maps_errors
    async def get(self) -> None:
        from hub_extension.client import quota_status

        self.finish(await self.blocking(quota_status))


_RUN_ID = r"(?P<run_id>[A-Za-z0-9_.-]{1,64})"

#: (path under ``nbscale/api/``, handler): the URL table the extension registers.
ROUTES: list[tuple[str, type[NbscaleHandler]]] = [
    ("notebooks/parameters", ParametersHandler),
    ("schema", SchemaHandler),
    ("runs", RunsHandler),
    (f"runs/{_RUN_ID}", RunHandler),
    (f"runs/{_RUN_ID}/cancel", CancelHandler),
    (f"runs/{_RUN_ID}/logs", LogsHandler),
    (f"runs/{_RUN_ID}/outputs/(?P<name>[A-Za-z0-9_.-]+)", OutputHandler),
    ("quota", QuotaHandler),
]
