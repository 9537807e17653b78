"""What every pod of a run shares: from the captured ``PodEnvironment``, else from the cluster config.

``pod_settings(cluster, pod_env, user)`` is the one place that decides the volumes, mounts, env,
image pull, security context and node placement of the pods nbscale creates (steps, the parent-run
helpers, a sweep's Ray head and workers). Without a captured pod it gives today's shape: the
cluster config's image and workspace claim. With one, the steps reuse the user's pod:

- its image (unless the step names one) and ``workingDir``, by ``effective_cluster``;
- its volumes and mounts, after checking each claim's access modes: ReadWriteMany (or read-only
  mounts of ReadOnlyMany) mount anywhere; ReadWriteOnce mounts only on the notebook's node, so it
  is refused unless the cluster config pins steps there (``pin_steps_to_user_node``), which adds a
  node affinity to that node; ReadWriteOncePod is always refused. A step never waits forever in
  ContainerCreating for a volume it cannot attach;
- its env (already filtered in ``podenv.py``) under the step's own variables, and its envFrom;
- its uid/gid/fsGroup and image pull secrets; its node selector and tolerations for CPU steps
  when ``cpu_steps_inherit_placement`` (GPU steps always take their pool's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..cluster import ClusterConfig
from ..errors import CompileError
from .naming import claim_name

if TYPE_CHECKING:  # the captured pod's model is built only where a pod is captured
    from ..podenv import PodEnvironment

WORKSPACE_VOLUME = "workspace"
#: Names and paths the compiler's own volumes use; a captured volume must not take them.
RESERVED_VOLUMES = frozenset({"outputs"})
RESERVED_PATHS = ("/nbscale",)


@dataclass(frozen=True)
class PodSettings:
    """The parts of every pod that come from the user's pod (or the cluster config). Kubernetes camelCase dicts."""

    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    env: list[dict[str, Any]] = field(default_factory=list)
    env_from: list[dict[str, Any]] = field(default_factory=list)
    image_pull_policy: str | None = None
    image_pull_secrets: list[str] = field(default_factory=list)
    pod_security_context: dict[str, Any] = field(default_factory=dict)
    container_security_context: dict[str, Any] = field(default_factory=dict)
    cpu_node_selector: dict[str, str] = field(default_factory=dict)
    cpu_tolerations: list[dict[str, Any]] = field(default_factory=list)
    affinity: dict[str, Any] | None = None

    def container_env(self, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The captured env, then the step's ``own`` variables, which win over captured ones of the same name."""
        names = {e["name"] for e in own}
        return [e for e in self.env if e["name"] not in names] + own


def effective_cluster(cluster: ClusterConfig, pod_env: PodEnvironment | None) -> ClusterConfig:
    """The cluster config with the pod's image as the default image and its working directory as the workspace."""
    if pod_env is None:
        return cluster
    update: dict[str, Any] = {"default_image": pod_env.image}
    if pod_env.working_dir:
        update["workspace_mount"] = pod_env.working_dir
    return cluster.model_copy(update=update)


def pod_settings(cluster: ClusterConfig, pod_env: PodEnvironment | None, user: str) -> PodSettings:
    """The shared pod settings of a run by ``user``; raises CompileError for a claim the steps could not mount."""
    if pod_env is None:
        claim = claim_name(cluster.workspace_claim_template, user)
        return PodSettings(volumes=[{"name": WORKSPACE_VOLUME, "persistentVolumeClaim": {"claimName": claim}}],
                           mounts=[{"name": WORKSPACE_VOLUME, "mountPath": cluster.workspace_mount}])
    _check_reserved(pod_env)
    pinned = _check_claims(pod_env, cluster)
    inherit = cluster.cpu_steps_inherit_placement
    return PodSettings(
        volumes=[dict(v) for v in pod_env.volumes], mounts=[dict(m) for m in pod_env.volume_mounts],
        env=[dict(e) for e in pod_env.env], env_from=[dict(e) for e in pod_env.env_from],
        image_pull_policy=pod_env.image_pull_policy, image_pull_secrets=list(pod_env.image_pull_secrets),
        pod_security_context=dict(pod_env.pod_security_context),
        container_security_context=dict(pod_env.container_security_context),
        cpu_node_selector=dict(pod_env.node_selector) if inherit else {},
        cpu_tolerations=[dict(t) for t in pod_env.tolerations] if inherit else [],
        affinity=_node_affinity(pod_env.node_name) if pinned and pod_env.node_name else None,
    )


def _check_reserved(pod_env: PodEnvironment) -> None:
    for volume in pod_env.volumes:
        if volume["name"] in RESERVED_VOLUMES:
            raise CompileError(f"the notebook's pod has a volume named {volume['name']!r}, which nbscale's steps use for "
                               "their outputs; rename that volume in the spawner config, or set capture_pod_env: false.")
    for mount in pod_env.volume_mounts:
        if str(mount.get("mountPath", "")).startswith(RESERVED_PATHS):
            raise CompileError(f"the notebook's pod mounts {mount['name']!r} under /nbscale, where steps write their outputs; "
                               "mount it elsewhere, or set capture_pod_env: false.")


def _check_claims(pod_env: PodEnvironment, cluster: ClusterConfig) -> bool:
    """Whether steps must be pinned to the notebook's node; CompileError for a claim they could not mount."""
    read_only = {m["name"] for m in pod_env.volume_mounts if m.get("readOnly")}
    claim_volumes = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in pod_env.volumes if v.get("persistentVolumeClaim")}
    pinned = False
    for claim, volume in claim_volumes.items():
        modes = set(pod_env.claim_access_modes.get(claim, []))
        if "ReadWriteMany" in modes or ("ReadOnlyMany" in modes and volume in read_only):
            continue
        if "ReadWriteOnce" in modes and cluster.pin_steps_to_user_node and pod_env.node_name:
            pinned = True
            continue
        raise CompileError(_claim_message(claim, sorted(modes), pod_env.node_name),
                           errors=[{"loc": ["cluster", "workspace"], "msg": f"claim {claim} is {', '.join(sorted(modes)) or 'of unknown access mode'}"}])
    return pinned


def _claim_message(claim: str, modes: list[str], node: str | None) -> str:
    what = ", ".join(modes) or "of unknown access mode"
    fixes = ("give users a ReadWriteMany workspace claim (NFS, CephFS, a cloud file store: the spawner's storage and the cluster "
             "config's workspace_claim_template)")
    if "ReadWriteOncePod" not in modes:
        fixes += f", or set pin_steps_to_user_node: true in the cluster config to run steps on the notebook's node ({node or 'unknown'})"
    return (f"the claim {claim!r} mounted by your notebook is {what}: pods on other nodes could not mount it and would wait "
            f"forever in ContainerCreating. To run on the cluster, {fixes}.")


def _node_affinity(node: str) -> dict[str, Any]:
    term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}
