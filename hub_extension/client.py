"""Client of the quota service, for the Jupyter server extension, the magics and the CLI.

``QuotaClient.from_env()`` answers ``None`` outside a hub or when the service is not configured
(quotas off). Inside a hub it needs three variables, all set by JupyterHub and the hub config:

* ``JUPYTERHUB_API_TOKEN`` and ``JUPYTERHUB_API_URL``: set by the hub in every single-user server;
  the token must hold ``access:services!service=nbscale-quotas`` and ``custom:nbscale-quotas:use``
  (``c.Spawner.server_token_scopes``, see hub_extension/README.md);
* ``NBSCALE_QUOTA_URL``: the service's base URL, e.g. ``http://127.0.0.1:10101/services/nbscale-quotas/``
  (direct) or ``http://hub.example.org/services/nbscale-quotas/`` (through the proxy), set with
  ``c.Spawner.environment``. ``NBSCALE_QUOTA_TIMEOUT`` (seconds, default 10) bounds each call.

Every failure to reach the service raises :class:`QuotaUnavailable` (fail closed); a refusal
raises :class:`QuotaExceeded` whose message names the limit, the usage and what to do.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from workflow_compiler.errors import NbscaleError, QuotaExceeded, QuotaUnavailable

from . import SERVICE_HEADER

log = logging.getLogger(__name__)

URL_ENV = "NBSCALE_QUOTA_URL"
TIMEOUT_ENV = "NBSCALE_QUOTA_TIMEOUT"
#: The status outside a configured hub; ``reason`` completes the sentence "GPU quotas are off: ..." (``quota_off_line``).
QUOTAS_OFF = {"enabled": False, "reason": f"not running inside JupyterHub with {URL_ENV} set"}


def quota_off_line(status: dict[str, Any]) -> str:
    """The one line the CLI, the magics and the panel show when quotas are off."""
    return f"GPU quotas are off: {status.get('reason') or 'not running inside JupyterHub'}"


def new_request_id() -> str:
    """A fresh idempotency key for one submission (reuse it when retrying the same submission)."""
    return "req-" + uuid.uuid4().hex


def quota_status() -> dict[str, Any]:
    """The caller's quota, or ``{"enabled": False, "reason": ...}`` outside a hub (raises QuotaUnavailable)."""
    client = QuotaClient.from_env()
    return client.my_quota() if client is not None else dict(QUOTAS_OFF)


@dataclass(frozen=True, kw_only=True)
class Lease:
    """GPUs reserved for one run or sweep until released or expired."""

    id: str
    expires_at: datetime
    gpus_total: int
    pool: str
    request_id: str
    ttl_seconds: float
    status: str
    gpu_seconds: float | None = None
    replayed: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any], *, replayed: bool = False) -> Lease:
        """Build from the service's lease JSON."""
        return cls(
            id=body["id"], expires_at=datetime.fromisoformat(body["expires_at"].rstrip("Z")),
            gpus_total=body["gpus_total"], pool=body["pool"], request_id=body["request_id"],
            ttl_seconds=body["ttl_seconds"], status=body["status"], gpu_seconds=body.get("gpu_seconds"),
            replayed=replayed, raw=body,
        )


class QuotaClient:
    """Synchronous, thread-safe client of the quota service REST API (``api/v1/``)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0, retries: int = 2,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise QuotaUnavailable(f"{URL_ENV} must be an http(s) URL, got '{base_url}'.")
        self.base_url = base_url.rstrip("/") + "/"
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.base_url + "api/v1/", timeout=timeout, transport=transport,
            headers={"Authorization": f"token {token}", "Accept": "application/json"},
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> QuotaClient | None:
        """The client for this single-user server, or ``None`` when quotas are off (see module doc)."""
        env = os.environ if environ is None else environ
        url, token = env.get(URL_ENV, "").strip(), env.get("JUPYTERHUB_API_TOKEN", "").strip()
        if not url or not token or not env.get("JUPYTERHUB_API_URL"):
            return None
        try:
            timeout = float(env.get(TIMEOUT_ENV, "10"))
        except ValueError:
            raise QuotaUnavailable(f"{TIMEOUT_ENV} must be a number of seconds, got '{env[TIMEOUT_ENV]}'.") from None
        return cls(url, token, timeout=timeout)

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    # API -------------------------------------------------------------------------------------

    def admit(self, gpus: int, pool: str, concurrency: int, estimated_seconds: float, request_id: str,
              *, label: str = "", ttl_seconds: float | None = None) -> Lease:
        """Ask for ``gpus × concurrency`` GPUs on ``pool``; a lease, or QuotaExceeded / QuotaUnavailable.

        Safe to retry with the same ``request_id``: the service answers the same lease.
        """
        body: dict[str, Any] = {"gpus": gpus, "pool": pool, "concurrency": concurrency,
                                "estimated_seconds": estimated_seconds, "request_id": request_id, "label": label}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        answer = self._call("POST", "leases", body, expect=(200, 201, 409))
        if answer.get("admitted"):
            return Lease.from_json(answer["lease"], replayed=bool(answer.get("replayed")))
        raise QuotaExceeded(answer.get("message", "Refused by the quota service."),
                            limit=answer.get("limit", ""), usage=answer.get("usage"))

    def heartbeat(self, lease_id: str) -> Lease:
        """Extend the lease; QuotaExceeded(limit='lease') if it already expired or was released."""
        return Lease.from_json(self._call("POST", f"leases/{lease_id}/heartbeat", {})["lease"])

    def release(self, lease_id: str, gpu_seconds: float | None = None) -> Lease:
        """End the lease, reporting the GPU-seconds used (``None``: wall time × GPUs). Idempotent."""
        body = {} if gpu_seconds is None else {"gpu_seconds": max(0.0, float(gpu_seconds))}
        return Lease.from_json(self._call("POST", f"leases/{lease_id}/release", body)["lease"])

    def my_quota(self) -> dict[str, Any]:
        """Limits, usage, what is left and the live leases of the calling user (``"enabled": True``)."""
        return self._call("GET", "me", None)

    @contextmanager
    def lease(self, *, gpus: int, pool: str = "default", concurrency: int = 1, estimated_seconds: float = 3600.0,
              request_id: str | None = None, label: str = "", ttl_seconds: float | None = None) -> Iterator[Lease]:
        """Admit, heartbeat in a background thread, and always release: wrap one run in one ``with``.

        A lost heartbeat (service down, lease expired) is logged and never stops the run.
        """
        lease = self.admit(gpus, pool, concurrency, estimated_seconds, request_id or new_request_id(),
                           label=label, ttl_seconds=ttl_seconds)
        with self.keep(lease):
            yield lease

    @contextmanager
    def keep(self, lease: Lease) -> Iterator[Lease]:
        """Heartbeat an already admitted ``lease`` and release it on exit, however the block ends.

        For runs that outlive the process that admitted them: admit in the server (so a refusal is
        answered at once), pass ``lease.raw`` to the worker, and ``keep(Lease.from_json(raw))`` there.
        """
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat_loop, args=(lease, stop), daemon=True,
                                name=f"nbscale-quota-heartbeat-{lease.id}")
        started = time.monotonic()
        beat.start()
        try:
            yield lease
        finally:
            stop.set()
            beat.join(timeout=5)
            try:
                self.release(lease.id, lease.gpus_total * (time.monotonic() - started))
            except NbscaleError as exc:
                log.warning("could not release GPU lease %s (it expires by itself): %s", lease.id, exc)

    def _heartbeat_loop(self, lease: Lease, stop: threading.Event) -> None:
        interval = max(0.2, lease.ttl_seconds / 3)
        while not stop.wait(interval):
            try:
                self.heartbeat(lease.id)
            except QuotaExceeded as exc:
                log.error("GPU lease %s is gone; the run continues unreserved: %s", lease.id, exc)
                return
            except QuotaUnavailable as exc:
                log.warning("heartbeat for GPU lease %s failed, will retry: %s", lease.id, exc)

    # transport -------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: dict[str, Any] | None,
              expect: tuple[int, ...] = (200, 201)) -> dict[str, Any]:
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(method, path, json=body)
            except httpx.HTTPError as exc:  # every call is idempotent, so retrying is safe
                last = exc
                time.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code in (502, 503, 504) and attempt < self.retries:
                time.sleep(0.2 * (attempt + 1))
                continue
            return self._answer(response, expect)
        raise QuotaUnavailable(
            f"The GPU quota service at {self.base_url} cannot be reached ({type(last).__name__}: {last}). "
            "Submissions are refused until it is back; running work is not affected. "
            "Try again shortly, or ask a hub admin to check the nbscale-quotas service."
        )

    def _answer(self, response: httpx.Response, expect: tuple[int, ...]) -> dict[str, Any]:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = payload.get("message", "") if isinstance(payload, dict) else ""
        if SERVICE_HEADER not in response.headers:
            raise QuotaUnavailable(
                f"{self.base_url} answered {response.status_code} but is not the GPU quota service "
                f"(check {URL_ENV}). Submissions are refused until it answers; running work is not affected."
            )
        if response.status_code in expect and isinstance(payload, dict):
            return payload
        if response.status_code in (401, 403):
            raise QuotaExceeded(
                f"Your hub token may not use the GPU quota service: {message or response.reason_phrase}. "
                "Ask a hub admin for the nbscale quota user role.", limit="access")
        if response.status_code in (404, 409, 410) and message:
            raise QuotaExceeded(message, limit="lease")
        if response.status_code == 400 and message:
            raise NbscaleError(message, errors=payload.get("errors", []))  # type: ignore[union-attr]
        raise QuotaUnavailable(
            f"The GPU quota service at {self.base_url} answered {response.status_code} "
            f"{message or response.reason_phrase}. Submissions are refused until it answers normally; "
            "running work is not affected."
        )


@contextmanager
def quota_lease(client: QuotaClient | None, **request: Any) -> Iterator[Lease | None]:
    """``client.lease(**request)``, or a no-op yielding ``None`` when quotas are off (``client is None``)."""
    if client is None:
        yield None
        return
    with client.lease(**request) as lease:
        yield lease
