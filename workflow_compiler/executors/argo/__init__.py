"""The Argo executor: runs compiled Workflows on a Kubernetes cluster with Argo Workflows.

``kube`` (calls, retries, errors), ``connect`` (cluster and namespace), ``status`` (Workflow →
record), ``watch`` (following), ``logs`` (step logs), ``outputs`` (MLflow artifacts), ``executor``.
"""

from .executor import RUN_ID_LABEL, ArgoExecutor
from .kube import SINGLEUSER_ROLE, ArgoNotInstalled, Backoff, KubernetesError, KubernetesForbidden

__all__ = ["RUN_ID_LABEL", "SINGLEUSER_ROLE", "ArgoExecutor", "ArgoNotInstalled", "Backoff", "KubernetesError", "KubernetesForbidden"]
