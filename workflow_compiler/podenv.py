"""Environment capture: read the single-user pod we run in, so that cluster steps reuse its environment.

As JupyterFlow did, but without its leaks. Inside a JupyterHub single-user pod, one GET of the pod
(its name from ``HOSTNAME``, its namespace from the service account's namespace file) and one GET
per claim it mounts give a ``PodEnvironment``: the image and how it is pulled, the user's volumes
and mounts and working directory, env and envFrom, the uid/gid/fsGroup, the node placement, and
each claim's access modes. ``compile_workflow(..., pod_env=...)`` turns it into the pods of a run
(``compiler/podspec.py``); outside a pod nothing is captured and the cluster config applies.

What is never captured:

- the projected service-account token volume (``kube-api-access-*``, or any projected volume with a
  ``serviceAccountToken`` source) and its mounts: steps run as the cluster config's service account,
  never the user's;
- the hub's credentials and anything that looks like one: ``JUPYTERHUB_API_TOKEN``,
  ``JPY_API_TOKEN``, ``JUPYTERHUB_OAUTH_*``, any name containing TOKEN, SECRET, PASSWORD or KEY,
  any value carrying a ``user:password@`` URL part or shaped like a well-known token (``ghp_...``,
  ``xoxb-...``, a JWT), unless the cluster config's ``env_allow``
  names the variable. An entry with ``valueFrom`` is copied as the reference it is (the secret's
  value never enters a manifest); envFrom references are copied as they are.
- KubeSpawner's resource hints (``CPU_LIMIT``, ``MEM_GUARANTEE``, ...): they describe the notebook's
  pod, not the step's.

``PodEnvironment.left_out`` names what was dropped and why (names only, never values), for
``nbscale compile --show-env``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .cluster import ClusterConfig
from .errors import ExecutionError

log = logging.getLogger(__name__)

#: Where Kubernetes puts the pod's namespace; ``NBSCALE_POD_NAMESPACE_FILE`` overrides it (tests).
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NAMESPACE_FILE_ENV = "NBSCALE_POD_NAMESPACE_FILE"
TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
#: KubeSpawner names the notebook's container so; other pods: the first container.
NOTEBOOK_CONTAINER = "notebook"
HUB_CREDENTIALS = frozenset({"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"})
SECRET_WORDS = ("TOKEN", "SECRET", "PASSWORD", "KEY")
POD_RESOURCE_HINTS = frozenset({"CPU_LIMIT", "CPU_GUARANTEE", "MEM_LIMIT", "MEM_GUARANTEE"})
_CREDENTIAL_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s@:]*:[^/\s@]*@")
# Well-known token shapes (GitHub, GitLab, Slack, OpenAI-style keys, AWS key ids, JWTs): caught by value, whatever the name.
_TOKEN_VALUE = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}|glpat-[\w-]{20,}|xox[abpr]-[\w-]{10,}|sk-[\w-]{20,}"
                          r"|AKIA[0-9A-Z]{16}|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+)")
_SECURITY_FIELDS = ("runAsUser", "runAsGroup", "fsGroup", "runAsNonRoot", "supplementalGroups")


class PodEnvironment(BaseModel):
    """What a cluster run copies from the user's pod. Lists hold Kubernetes API objects (camelCase)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pod: str = Field(description="The pod captured")
    namespace: str
    node_name: str | None = Field(default=None, description="The node the pod runs on (for pinning steps to it)")
    image: str
    image_pull_policy: str | None = None
    image_pull_secrets: list[str] = Field(default_factory=list)
    working_dir: str | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = Field(default_factory=list)
    env: list[dict[str, Any]] = Field(default_factory=list)
    env_from: list[dict[str, Any]] = Field(default_factory=list)
    pod_security_context: dict[str, Any] = Field(default_factory=dict, description="runAsUser, runAsGroup, fsGroup, ...")
    container_security_context: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    claim_access_modes: dict[str, list[str]] = Field(default_factory=dict, description="Each mounted claim's access modes")
    user_service_account: str | None = Field(default=None, description="Recorded only: steps use the cluster config's")
    left_out: list[str] = Field(default_factory=list, description="What was not copied, and why (no values)")

    def claims(self) -> list[str]:
        """The PersistentVolumeClaims the captured volumes mount."""
        return claims_of(self.volumes)


def claims_of(volumes: list[dict[str, Any]]) -> list[str]:
    """Claim names of the ``persistentVolumeClaim`` volumes, in order."""
    return [v["persistentVolumeClaim"]["claimName"] for v in volumes if isinstance(v.get("persistentVolumeClaim"), dict)]


def is_token_volume(volume: Mapping[str, Any]) -> bool:
    """The service account's projected token volume (``kube-api-access-*`` or any serviceAccountToken projection)."""
    sources = (volume.get("projected") or {}).get("sources") or []
    return str(volume.get("name", "")).startswith("kube-api-access-") or any("serviceAccountToken" in s for s in sources)


def env_refusal(entry: Mapping[str, Any], allow: frozenset[str] = frozenset()) -> str | None:
    """Why this env entry must not be copied, or None when it may be."""
    name = str(entry.get("name", ""))
    if name in allow:
        return None
    upper = name.upper()
    if upper in HUB_CREDENTIALS or upper.startswith("JUPYTERHUB_OAUTH_"):
        return "the hub's credential"
    word = next((w for w in SECRET_WORDS if w in upper), None)
    if word is not None:
        return f"name contains {word}"
    value = str(entry.get("value") or "")
    if _CREDENTIAL_URL.search(value):
        return "value holds a user:password@ URL"
    if _TOKEN_VALUE.search(value):
        return "value looks like an access token"
    if upper in POD_RESOURCE_HINTS:
        return "describes the notebook pod's resources, not the step's"
    return None


def _container(pod: Mapping[str, Any]) -> dict[str, Any]:
    containers = pod.get("spec", {}).get("containers") or []
    if not containers:
        raise ExecutionError(f"pod {pod.get('metadata', {}).get('name')} has no containers to copy an environment from.")
    return next((c for c in containers if c.get("name") == NOTEBOOK_CONTAINER), containers[0])


def _security(context: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: context[k] for k in _SECURITY_FIELDS if context and context.get(k) is not None}


def pod_environment_from(pod: Mapping[str, Any], *, claim_access_modes: Mapping[str, list[str]] | None = None,
                         allow: frozenset[str] = frozenset()) -> PodEnvironment:
    """The environment to copy from a pod object (as the API serializes it); pure."""
    spec, container = pod.get("spec", {}), _container(pod)
    left_out: list[str] = []
    volumes = []
    for volume in spec.get("volumes") or []:
        if is_token_volume(volume):
            left_out.append(f"volume {volume.get('name')}: the service account token; steps use the cluster config's account")
        else:
            volumes.append(dict(volume))
    kept = {v["name"] for v in volumes}
    mounts = [dict(m) for m in container.get("volumeMounts") or []
              if m.get("name") in kept and not str(m.get("mountPath", "")).startswith(TOKEN_MOUNT)]
    env = []
    for entry in container.get("env") or []:
        reason = env_refusal(entry, allow)
        if reason is None:
            env.append(dict(entry))
        else:
            left_out.append(f"env {entry.get('name')}: {reason}")
    return PodEnvironment(
        pod=str(pod.get("metadata", {}).get("name", "")), namespace=str(pod.get("metadata", {}).get("namespace", "")),
        node_name=spec.get("nodeName"), image=container["image"], image_pull_policy=container.get("imagePullPolicy"),
        image_pull_secrets=[s["name"] for s in spec.get("imagePullSecrets") or [] if s.get("name")],
        working_dir=container.get("workingDir"), volumes=volumes, volume_mounts=mounts, env=env,
        env_from=[dict(e) for e in container.get("envFrom") or []],
        pod_security_context=_security(spec.get("securityContext")),
        container_security_context=_security(container.get("securityContext")),
        node_selector=dict(spec.get("nodeSelector") or {}), tolerations=[dict(t) for t in spec.get("tolerations") or []],
        claim_access_modes={c: list(claim_access_modes.get(c, [])) for c in claims_of(volumes)} if claim_access_modes else {},
        user_service_account=spec.get("serviceAccountName"), left_out=left_out,
    )


def pod_identity(environ: Mapping[str, str] | None = None, namespace_file: Path | None = None) -> tuple[str, str] | None:
    """(pod name, namespace) when running in a Kubernetes pod, else None."""
    env = os.environ if environ is None else environ
    path = namespace_file or Path(env.get(NAMESPACE_FILE_ENV) or NAMESPACE_FILE)
    name = env.get("HOSTNAME", "").strip()
    try:
        namespace = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return (name, namespace) if name and namespace else None


def capture_pod_environment(cluster: ClusterConfig, *, api_client: Any = None, environ: Mapping[str, str] | None = None,
                            namespace_file: Path | None = None) -> PodEnvironment | None:
    """Read this pod (and its claims) through the Kubernetes API; None outside a pod or when the config turns capture off."""
    identity = pod_identity(environ, namespace_file)
    if identity is None or not cluster.capture_pod_env:
        return None
    from kubernetes import client  # imported only inside a pod: the client takes a while to import

    api_client = api_client or _in_cluster_client()
    core = client.CoreV1Api(api_client)
    name, namespace = identity
    pod = api_client.sanitize_for_serialization(_read(core.read_namespaced_pod, name, namespace, "pods"))
    captured = pod_environment_from(pod, allow=frozenset(cluster.env_allow))
    modes = {}
    for claim in captured.claims():
        status = api_client.sanitize_for_serialization(
            _read(core.read_namespaced_persistent_volume_claim, claim, namespace, "persistentvolumeclaims"))
        modes[claim] = list((status.get("status") or {}).get("accessModes") or status.get("spec", {}).get("accessModes") or [])
    log.info("captured pod %s/%s: image %s, %d volumes, %d env", namespace, name, captured.image, len(captured.volumes),
             len(captured.env))
    return captured.model_copy(update={"claim_access_modes": modes})


def _in_cluster_client() -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise ExecutionError(f"cannot reach the Kubernetes API from this pod ({exc}); set capture_pod_env: false in the "
                             "cluster config to compile without the pod's environment.") from None
    return client.ApiClient(configuration)


def _read(call: Any, name: str, namespace: str, resource: str) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return call(name, namespace)
    except ApiException as exc:
        raise ExecutionError(
            f"cannot read {resource} {namespace}/{name} to copy this pod's environment ({exc.status} {exc.reason}). "
            f"Grant the notebook's service account 'get' on {resource} in {namespace} (the nbscale chart's role does), "
            "or set capture_pod_env: false in the cluster config.") from None
