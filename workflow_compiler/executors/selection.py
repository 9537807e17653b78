"""Which executor a command uses when none is named: Argo inside a cluster's pod, else local.

One function decides (``default_executor_name``), so the CLI, the magics and the server
extension agree. Inside a Kubernetes pod means: ``KUBERNETES_SERVICE_HOST`` is set and the service
account's namespace file exists; a cluster config (``NBSCALE_CLUSTER_CONFIG``) says nbscale is
meant to submit to that cluster.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..cluster import CLUSTER_CONFIG_ENV

#: Where Kubernetes mounts the pod's namespace; ``NBSCALE_POD_NAMESPACE_FILE`` overrides it (tests).
POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
POD_NAMESPACE_FILE_ENV = "NBSCALE_POD_NAMESPACE_FILE"
EXECUTOR_CHOICES = ("local", "argo")


def pod_namespace(environ: Mapping[str, str] | None = None) -> str | None:
    """The namespace of the pod this process runs in, or None outside a Kubernetes pod."""
    env = os.environ if environ is None else environ
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = Path(env.get(POD_NAMESPACE_FILE_ENV) or POD_NAMESPACE_FILE)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def default_executor_name(environ: Mapping[str, str] | None = None) -> str:
    """``argo`` in a Kubernetes pod with a cluster config, else ``local``."""
    env = os.environ if environ is None else environ
    return "argo" if pod_namespace(env) and env.get(CLUSTER_CONFIG_ENV) else "local"


def default_executor_class(environ: Mapping[str, str] | None = None) -> str:
    """The import path of the default executor's class (for the server extension's traitlet)."""
    if default_executor_name(environ) == "argo":
        return "workflow_compiler.executors.argo.ArgoExecutor"
    return "workflow_compiler.executors.local.LocalExecutor"
