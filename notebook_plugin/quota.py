"""GPU quota admission around a submission, when running under JupyterHub with the quota service.

The lease must live as long as the run, not as long as the HTTP request, so a daemon thread
holds ``QuotaClient.lease`` (admit, heartbeat, release) until the run ends.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from workflow_compiler.spec import RunSpec
from workflow_compiler.store import RunRecord

log = logging.getLogger(__name__)


def lease_request(spec: RunSpec) -> dict[str, Any] | None:
    """What to ask the quota service for, or None when the run needs no GPU."""
    if spec.sweep is not None:
        per_trial = spec.sweep.gpus_per_trial
        gpus = int(per_trial) if per_trial >= 1 else (1 if per_trial > 0 else 0)
        concurrency = spec.sweep.concurrency
    else:
        gpus, concurrency = spec.resources.gpus, 1
    if gpus <= 0:
        return None
    estimated = float(spec.timeout_seconds or 3600)
    return {"gpus": gpus, "pool": spec.resources.pool or "default", "concurrency": concurrency,
            "estimated_seconds": estimated, "label": spec.notebook}


def submit_with_quota(spec: RunSpec, start: Callable[[], RunRecord], wait: Callable[[str], Any],
                      client: Any | None = None) -> RunRecord:
    """Admit ``spec`` against the user's GPU quota, start it, and hold the lease until ``wait`` returns.

    Outside a hub (no quota client) or for CPU-only runs this is just ``start()``. Refusals raise
    ``QuotaExceeded`` (409) and an unreachable service ``QuotaUnavailable`` (503), before anything runs.
    """
    if client is None:
        from hub_extension.client import QuotaClient

        client = QuotaClient.from_env()
    request = lease_request(spec)
    if client is None or request is None:
        return start()
    answers: queue.Queue[RunRecord | BaseException] = queue.Queue()

    def hold() -> None:
        try:
            with client.lease(**request):
                try:
                    record = start()
                except BaseException as exc:  # re-raised in the caller; the lease is released on exit
                    answers.put(exc)
                    return
                answers.put(record)
                wait(record.id)
        except BaseException as exc:  # refused or unreachable: re-raised in the caller
            answers.put(exc)

    threading.Thread(target=hold, name="nbscale-quota-lease", daemon=True).start()
    answer = answers.get()
    if isinstance(answer, BaseException):
        raise answer
    log.info("run %s admitted: %s GPU(s) on pool %s", answer.id, request["gpus"], request["pool"])
    return answer
