"""The GPU-quota gate of the submit path, when nbscale runs inside JupyterHub with the quota service.

``submit`` asks for admission before anything starts (refused or unreachable: nothing runs); the
local worker that runs the workflow then holds the lease, heartbeating while the run lives and
releasing it with the GPU-seconds used however the run ends. So the CLI, the magics and the REST
API (which all call ``submit``) are gated the same way, and a detached run keeps its lease.
Outside a hub, ``QuotaClient.from_env()`` is None and quotas are off.

Only GPU work is gated. A submission that asks for no GPU never calls the service, so CPU-only
runs go on while it is down; a GPU submission that cannot reach it is refused (fail closed).
When a worker dies without releasing (or is cancelled before it starts), the local executor
releases the lease it recorded; failing that, the service reclaims it when its TTL runs out.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .spec import PipelineSpec, RunSpec

log = logging.getLogger(__name__)

#: Beyond this many GPU steps the pipeline's peak is bounded by their sum instead of searched.
_MAX_EXACT_STEPS = 12


def quota_client() -> Any | None:
    """The quota service client inside a hub, None when quotas are off."""
    from hub_extension.client import QuotaClient  # the service's client; imported only on submit

    return QuotaClient.from_env()


def lease_request(spec: RunSpec | PipelineSpec) -> dict[str, Any] | None:
    """What to ask the quota service for (GPUs held at once), or None when nothing needs a GPU."""
    if isinstance(spec, PipelineSpec):
        gpus = peak_pipeline_gpus(spec)
        pools = {s.resources.pool for s in spec.steps if s.resources.gpus}
        pool, concurrency, label = (pools.pop() if len(pools) == 1 else None), 1, spec.name
        estimated = float(sum(s.timeout_seconds or 3600 for s in spec.steps))
    elif spec.sweep is not None:
        # A sweep holds concurrency x gpus_per_trial at once; a fractional trial still occupies a
        # slice of a whole device, so the total is rounded up.
        per_trial = spec.sweep.gpus_per_trial
        gpus, concurrency = int(-(-per_trial * spec.sweep.concurrency // 1)), 1
        pool, label, estimated = spec.resources.pool, spec.notebook, float(spec.sweep.time_budget_s or spec.timeout_seconds or 3600)
    else:
        gpus, concurrency, pool, label = spec.resources.gpus, 1, spec.resources.pool, spec.notebook
        estimated = float(spec.timeout_seconds or 3600)
    if gpus <= 0:
        return None
    return {"gpus": gpus, "pool": pool or "default", "concurrency": concurrency, "estimated_seconds": estimated, "label": label}


def peak_pipeline_gpus(spec: PipelineSpec) -> int:
    """The most GPUs a pipeline's steps can hold at once: the heaviest set of mutually independent steps."""
    gpu_steps = [s for s in spec.steps if s.resources.gpus]
    if len(gpu_steps) > _MAX_EXACT_STEPS:
        return sum(s.resources.gpus for s in gpu_steps)
    ancestors = _ancestors(spec)
    independent = lambda a, b: a.name not in ancestors[b.name] and b.name not in ancestors[a.name]
    best = 0
    for size in range(1, len(gpu_steps) + 1):
        for group in itertools.combinations(gpu_steps, size):
            if all(independent(a, b) for a, b in itertools.combinations(group, 2)):
                best = max(best, sum(s.resources.gpus for s in group))
    return best


def _ancestors(spec: PipelineSpec) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for step in spec.order():
        found[step.name] = set(step.after).union(*(found[a] for a in step.after))
    return found


def admit(spec: RunSpec | PipelineSpec, *, request_id: str) -> str | None:
    """Admit ``spec`` against the caller's quota; the lease id, or None when quotas are off or no GPU is asked.

    Raises QuotaExceeded (names the limit, usage and what to do) or QuotaUnavailable (fail closed).
    """
    request = lease_request(spec)
    client = quota_client() if request is not None else None
    if client is None or request is None:
        return None
    try:
        lease = client.admit(request["gpus"], request["pool"], request["concurrency"], request["estimated_seconds"],
                             request_id, label=request["label"])
    finally:
        client.close()
    log.info("admitted %s: %s GPU(s) on pool %s, lease %s", request_id, lease.gpus_total, lease.pool, lease.id)
    return str(lease.id)


def release(lease_id: str, gpu_seconds: float | None = None) -> None:
    """Release a lease now (a run that ended or failed to start); errors are logged, the lease expires anyway."""
    client = None
    try:
        client = quota_client()
        if client is not None:
            client.release(lease_id, gpu_seconds)
    except Exception as exc:  # the service reclaims expired leases; a failed release must not hide the real error
        log.warning("could not release GPU lease %s: %s", lease_id, exc)
    finally:
        if client is not None:
            client.close()


def heartbeat(lease_id: str) -> float | None:
    """Extend a lease once (for runs no local process holds, e.g. on a cluster); its TTL in seconds, None if that failed."""
    client = None
    try:
        client = quota_client()
        return float(client.heartbeat(lease_id).ttl_seconds) if client is not None else None
    except Exception as exc:  # a missed heartbeat never stops the run; the service may reclaim the lease
        log.warning("heartbeat for GPU lease %s failed: %s", lease_id, exc)
        return None
    finally:
        if client is not None:
            client.close()


@contextmanager
def hold_lease(lease_id: str | None, *, gpus: int) -> Iterator[None]:
    """Heartbeat ``lease_id`` while the body runs, then release it with the GPU-seconds used."""
    client = quota_client() if lease_id else None
    if client is None or lease_id is None:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        interval = 1.0  # the first beat learns the lease's TTL
        while not stop.wait(interval):
            try:
                lease = client.heartbeat(lease_id)
                interval = max(0.5, float(lease.ttl_seconds) / 3)
            except Exception as exc:  # a missed heartbeat never stops the run; the service may reclaim the lease
                log.warning("heartbeat for GPU lease %s failed: %s", lease_id, exc)

    thread = threading.Thread(target=beat, name=f"lease-{lease_id}", daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
        client.close()
        release(lease_id, gpus * (time.monotonic() - started))
