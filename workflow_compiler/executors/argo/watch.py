"""Follow one Workflow by watching it: list once, watch from that resourceVersion, resume, re-list on 410 Gone.

A watch ends whenever the API server or a proxy on the way decides (its timeout, a restart); it is
resumed from the last resourceVersion seen. When that version is too old (410 Gone) the Workflow
is listed afresh. Connection errors, 429 and 5xx are retried with the calls' bounded backoff; a run
of failures longer than that ends the follow with a one-line KubernetesError.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from .kube import RETRIED_STATUSES, WORKFLOWS, KubeCalls, KubernetesError, KubernetesObjectGone, api_error

log = logging.getLogger(__name__)

#: How long one watch request lasts before it is resumed (the server may end it sooner).
WATCH_SECONDS = 60


def watch_workflow(calls: KubeCalls, namespace: str, name: str, *, watch_seconds: int = WATCH_SECONDS) -> Iterator[dict[str, Any]]:
    """Yield the Workflow ``name`` now and after every change, until the caller stops iterating."""
    from kubernetes import watch
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    selector = f"metadata.name={name}"
    resource_version: str | None = None
    failures = 0
    delays = calls.backoff.delays()
    while True:
        if resource_version is None:
            listing = calls.call("list", "workflows", namespace, calls.custom.list_namespaced_custom_object, *_path(namespace),
                                 field_selector=selector)
            if not listing.get("items"):
                raise KubernetesObjectGone(f"workflows {name} is gone from namespace {namespace} (deleted, or removed by its TTL).",
                                           status=404, verb="list", resource="workflows", namespace=namespace)
            resource_version = str(listing["metadata"]["resourceVersion"])
            yield listing["items"][0]
        stream = watch.Watch()
        try:
            for event in stream.stream(calls.custom.list_namespaced_custom_object, *_path(namespace), field_selector=selector,
                                       resource_version=resource_version, timeout_seconds=watch_seconds,
                                       _request_timeout=watch_seconds + 15):
                obj = event["raw_object"]
                resource_version = str(obj.get("metadata", {}).get("resourceVersion") or resource_version)
                failures = 0
                if event["type"] == "DELETED":
                    raise KubernetesObjectGone(f"workflows {name} was deleted from namespace {namespace} while nbscale followed it.",
                                               status=404, verb="watch", resource="workflows", namespace=namespace)
                yield obj
            continue  # the server ended the watch: resume from the last version seen
        except ApiException as exc:
            if exc.status == 410:
                log.info("watch of %s: resourceVersion %s expired (410 Gone); listing again", name, resource_version)
                resource_version = None
                continue
            if exc.status not in RETRIED_STATUSES or failures >= len(delays):
                raise api_error(exc, verb="watch", resource="workflows", namespace=namespace, attempts=failures + 1) from None
            reason = f"{exc.status} {exc.reason}"
        except (Urllib3Error, OSError) as exc:
            if failures >= len(delays):
                raise KubernetesError(f"lost the watch of workflow {name} on {calls.host} after {failures + 1} attempts: "
                                      f"{type(exc).__name__}. Check the cluster, then `nbscale status` again.",
                                      verb="watch", resource="workflows", namespace=namespace) from None
            reason = type(exc).__name__
        finally:
            stream.stop()
        log.info("watch of %s: %s; resuming in %.1f s", name, reason, delays[failures])
        time.sleep(delays[failures])
        failures += 1


def _path(namespace: str) -> tuple[str, str, str, str]:
    group, version, plural = WORKFLOWS
    return group, version, namespace, plural
