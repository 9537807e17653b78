"""Which cluster and namespace the Argo executor talks to: in-cluster config, else a kubeconfig."""

from __future__ import annotations

import logging
import os
from typing import Any

from ...errors import ExecutionError
from ..selection import pod_namespace

log = logging.getLogger(__name__)


def api_client_for(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A ``kubernetes.client.ApiClient``: the named kubeconfig/context, else in-cluster, else ``$KUBECONFIG``."""
    from kubernetes import client, config

    try:
        if kubeconfig or context:
            return config.new_client_from_config(config_file=kubeconfig, context=context)
        if pod_namespace() is not None:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
                return client.ApiClient(configuration)
            except config.ConfigException as exc:
                log.info("no in-cluster Kubernetes config (%s); trying the kubeconfig", exc)
        return config.new_client_from_config(config_file=_kubeconfig_env())
    except (config.ConfigException, OSError) as exc:
        raise ExecutionError(f"no Kubernetes cluster configured ({exc}). Set KUBECONFIG, or run with --executor local.") from None


def namespace_for(option: str | None = None, kubeconfig: str | None = None, context: str | None = None) -> str:
    """The namespace: the option, the cluster config's, this pod's, the kubeconfig context's, else ``default``."""
    from ...cluster import load_cluster_config

    chosen = option or load_cluster_config().namespace or pod_namespace()
    if chosen:
        return chosen
    from kubernetes import config

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig or _kubeconfig_env())
    except (config.ConfigException, OSError):
        return "default"
    if context:
        active = next((c for c in contexts if c.get("name") == context), active)
    return str((active or {}).get("context", {}).get("namespace") or "default")


def _kubeconfig_env() -> str | None:
    """``$KUBECONFIG`` as it is now (the client reads it once, when first imported)."""
    return os.environ.get("KUBECONFIG") or None
