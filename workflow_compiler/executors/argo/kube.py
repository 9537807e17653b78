"""The Kubernetes API as the Argo executor calls it: one client, bounded retries, errors an operator can act on.

Every call names its verb, resource and namespace, so a refusal says which permission is missing
and which Role grants it; 429, 5xx and lost connections are retried with bounded exponential
backoff and then reported in one line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import ExecutionError

log = logging.getLogger(__name__)

#: The Role the Helm chart gives single-user servers: it grants what the Argo executor needs.
SINGLEUSER_ROLE = "nbscale-singleuser"
WORKFLOWS = ("argoproj.io", "v1alpha1", "workflows")
RAYJOBS = ("ray.io", "v1", "rayjobs")
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class KubernetesError(ExecutionError):
    """The Kubernetes API refused or failed a call; ``status``, ``verb``, ``resource`` and ``namespace`` say which."""

    def __init__(self, message: str, *, status: int = 0, verb: str = "", resource: str = "", namespace: str = "") -> None:
        super().__init__(message)
        self.status, self.verb, self.resource, self.namespace = status, verb, resource, namespace


class KubernetesForbidden(KubernetesError):
    """401/403: the service account lacks a permission."""

    http_status = 403


class ArgoNotInstalled(KubernetesError):
    """404 on the workflows resource itself: no Argo Workflows CRD on this cluster."""

    http_status = 503


class KubernetesObjectGone(KubernetesError):
    """404 on a named object: it was deleted (by hand, or by a TTL)."""

    http_status = 404


@dataclass(frozen=True)
class Backoff:
    """Bounded exponential backoff: ``attempts`` tries, waits from ``first`` doubling up to ``longest`` seconds."""

    attempts: int = 5
    first: float = 0.5
    longest: float = 8.0

    def delays(self) -> list[float]:
        """The waits between attempts."""
        return [min(self.longest, self.first * 2**i) for i in range(self.attempts - 1)]


class KubeCalls:
    """Calls to one cluster through one ``ApiClient``, with the retries and error messages above."""

    def __init__(self, api_client: Any, *, backoff: Backoff | None = None) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.backoff = backoff or Backoff()
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    @property
    def host(self) -> str:
        """The API server's URL."""
        return str(self.api_client.configuration.host)

    def call(self, verb: str, resource: str, namespace: str, fn: Callable[..., Any], *args: Any,
             done_already: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried on 429/5xx/connection errors; failures become KubernetesError.

        ``done_already`` makes a non-idempotent call (a create) safe to retry: before each retry it
        looks for what the failed attempt may have done anyway, and returns that if found.
        """
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        # Hand-written rather than urllib3's Retry: the failure must name the call, and a create must not run twice.
        delays = self.backoff.delays()
        for attempt in range(len(delays) + 1):
            try:
                if attempt and done_already is not None and (found := done_already()) is not None:
                    return found
                return fn(*args, **kwargs)
            except ApiException as exc:
                if exc.status not in RETRIED_STATUSES or attempt == len(delays):
                    raise api_error(exc, verb=verb, resource=resource, namespace=namespace, attempts=attempt + 1) from None
                reason = f"{exc.status} {exc.reason}"
            except (Urllib3Error, OSError) as exc:
                if attempt == len(delays):
                    raise KubernetesError(f"cannot reach the Kubernetes API at {self.host} to {verb} {resource} in namespace "
                                          f"{namespace} after {attempt + 1} attempts: {type(exc).__name__}. Check the cluster "
                                          "and KUBECONFIG, or use --executor local.", verb=verb, resource=resource,
                                          namespace=namespace) from None
                reason = type(exc).__name__
            log.info("%s %s in %s: %s; retrying in %.1f s", verb, resource, namespace, reason, delays[attempt])
            time.sleep(delays[attempt])
        raise AssertionError("unreachable")  # the loop returns or raises


def api_error(exc: Any, *, verb: str, resource: str, namespace: str, attempts: int = 1) -> KubernetesError:
    """The KubernetesError for an ApiException, with what to do about it."""
    status, body = int(exc.status or 0), _status_body(exc)
    where: dict[str, Any] = {"status": status, "verb": verb, "resource": resource, "namespace": namespace}
    if status in (401, 403):
        return KubernetesForbidden(
            f"the Kubernetes API refused to {verb} {resource} in namespace {namespace} ({status} {exc.reason}). "
            f"The Role {SINGLEUSER_ROLE} grants it: ask your administrator to bind it to this server's service account "
            f"in {namespace} (the nbscale Helm chart does).", **where)
    if status == 404:
        name = (body.get("details") or {}).get("name")
        if name:
            return KubernetesObjectGone(f"{resource} {name} is gone from namespace {namespace} (deleted, or removed by "
                                        "its TTL).", **where)
        if resource.startswith("workflows"):
            return ArgoNotInstalled(f"Argo Workflows is not installed on this cluster, or not in namespace {namespace} "
                                    f"(404 on workflows.argoproj.io). Install Argo Workflows, set the namespace in "
                                    "NBSCALE_CLUSTER_CONFIG, or use --executor local.", **where)
    message = body.get("message") or exc.reason or "no reason given"
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    return KubernetesError(f"the Kubernetes API failed to {verb} {resource} in namespace {namespace}{tries}: {status} "
                           f"{message}".replace("\n", " "), **where)


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
