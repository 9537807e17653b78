"""Which Kueue LocalQueue a run's pods go to, and how they are labelled for it.

The queue is the spec's ``queue``, else the cluster config's ``kueue_queue``, else the user's hub
quota group (``queue_from_quota``: the group whose policy sets the user's GPU limit, as the quota
service reports it), else none: no label, and Kueue leaves the pods alone. LocalQueues are
named after teams (``workflow_compiler/kueue.py``), and hub groups after the same teams.

Only the pods that do the work carry ``kueue.x-k8s.io/queue-name``: notebook steps (on their
template's ``metadata.labels``) and a sweep's RayJob (on the RayJob itself, which Kueue admits
as a whole). Never the pod of the resource step that creates the RayJob, which would otherwise
wait in the queue for quota its own RayJob needs, nor the small helper steps that open and
close the MLflow parent run (the exit handler must not wait behind the team's queue).
"""

from __future__ import annotations

import logging
from typing import Any

from ..cluster import ClusterConfig
from ..errors import CompileError
from ..k8s_names import dns1123_label_errors

log = logging.getLogger(__name__)

#: The label Kueue reads to queue a pod or a RayJob in a LocalQueue of its namespace.
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


def resolve_queue(spec_queue: str | None, cluster: ClusterConfig, hub_queue: str | None = None) -> str | None:
    """The LocalQueue: the spec's, else the cluster config's, else the hub quota group's, else None."""
    queue = spec_queue or cluster.kueue_queue or hub_queue
    if queue is not None and dns1123_label_errors(queue):  # the spec and the config are checked on the way in; this is not
        raise CompileError(f"{queue!r} cannot name a Kueue LocalQueue: {'; '.join(dns1123_label_errors(queue))}.",
                           errors=[{"loc": ["queue"], "msg": "not a DNS-1123 label"}])
    return queue


def queue_from_quota(status: dict[str, Any]) -> str | None:
    """The hub quota group that can name a LocalQueue, from the quota service's ``me`` answer.

    The group whose policy sets the user's ``max_gpus`` (``limits.sources``), else the user's only
    group; None when quotas are off, the user is in several groups with none deciding, or the
    group's name is not a DNS-1123 label (Kueue could not have such a queue).
    """
    if not status.get("enabled"):
        return None
    source = str((status.get("limits") or {}).get("sources", {}).get("max_gpus", ""))
    groups = [str(g) for g in status.get("groups") or []]
    group = source.removeprefix("group:") if source.startswith("group:") else (groups[0] if len(groups) == 1 else None)
    if group is not None and dns1123_label_errors(group):
        log.info("hub group %s cannot name a Kueue LocalQueue; no queue label", group)
        return None
    return group
