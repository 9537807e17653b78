"""Cluster settings the compiler needs: namespace, service account, workspace volume, MLflow, image.

One ``ClusterConfig`` describes where compiled workflows run. The defaults fit a JupyterHub on
Kubernetes with KubeSpawner's per-user volume ``claim-{username}`` mounted at ``/home/jovyan``.
A cluster overrides them with a YAML file named by ``NBSCALE_CLUSTER_CONFIG`` (or passed to
``load_cluster_config``), using the field names below::

    namespace: jupyterhub
    service_account: nbscale-runner
    mlflow_tracking_uri: http://mlflow.nbscale.svc:5000
    sweep_fanout: true           # no KubeRay here: grid sweeps become Argo withItems fan-out
    kueue_queue: research        # Kueue LocalQueue of runs that name none (see workflow_compiler/kueue.py)
    env_allow: [WANDB_API_KEY]   # copied from the notebook's pod although the name looks like a secret
    pin_steps_to_user_node: true # the home claim is ReadWriteOnce: run steps on the notebook's node
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .k8s_names import dns1123_label_errors, dns1123_subdomain_errors
from .spec import DEFAULT_IMAGE
from .yaml_config import load_yaml_model

log = logging.getLogger(__name__)

#: Environment variable naming a cluster config YAML that replaces the defaults.
CLUSTER_CONFIG_ENV = "NBSCALE_CLUSTER_CONFIG"

PodGCStrategy = Literal["OnPodCompletion", "OnPodSuccess", "OnWorkflowCompletion", "OnWorkflowSuccess"]


def _no_argo_expression(value: str) -> str:
    if "{{" in value or "}}" in value:
        raise ValueError("must not contain '{{' or '}}' (Argo would read them as an expression)")
    return value


class ClusterConfig(BaseModel):
    """Where and how compiled workflows run on a cluster."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str | None = Field(default=None, description="Namespace of the Workflow; None: the submitter's current namespace")
    service_account: str | None = Field(default=None, description="Service account of the step pods; None: the namespace default")
    workspace_claim_template: str = Field(
        default="claim-{username}",
        description="PersistentVolumeClaim holding the user's files; {username} is the user, made DNS-1123 safe",
    )
    workspace_mount: str = Field(default="/home/jovyan", description="Where the workspace is mounted; notebook paths are relative to it")
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLFLOW_TRACKING_URI inside the pods; None: not set (the executor decides)"
    )
    default_image: str = Field(default=DEFAULT_IMAGE, min_length=1, description="Image for steps that name none (the single-user image)")
    pod_gc_strategy: PodGCStrategy = Field(default="OnPodCompletion", description="Argo podGC strategy")
    archive_artifacts: bool = Field(default=False, description="Tar+gzip output artifacts; False keeps output.ipynb/html viewable as is")
    artifact_repository_ref: dict[str, str] | None = Field(
        default=None, description="Argo artifactRepositoryRef, e.g. {configMap: artifact-repositories, key: default}"
    )
    limit_cpu: bool = Field(default=False, description="Also set a CPU limit equal to the request (off: no CPU throttling)")
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, description="Delete finished Workflows after this many seconds")
    sweep_fanout: bool = Field(
        default=False, description="Compile grid sweeps to Argo withItems fan-out (no KubeRay needed) instead of a KubeRay RayJob"
    )
    capture_pod_env: bool = Field(
        default=True, description="Inside a single-user pod, steps reuse its image, volumes, env and uid (workflow_compiler/podenv.py)"
    )
    env_allow: list[str] = Field(
        default_factory=list, description="Variables copied from the pod although their name or value looks like a credential"
    )
    cpu_steps_inherit_placement: bool = Field(
        default=False, description="CPU steps take the notebook pod's nodeSelector and tolerations (GPU steps take their pool's)"
    )
    pin_steps_to_user_node: bool = Field(
        default=False, description="Run steps on the notebook's node, so that a ReadWriteOnce home claim can be mounted there too"
    )
    kueue_queue: str | None = Field(
        default=None, description="Kueue LocalQueue of runs whose spec names none; None: the user's hub quota group, else no queue"
    )

    @field_validator("namespace", "kueue_queue")
    @classmethod
    def _label_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        what = {"namespace": "namespace", "kueue_queue": "LocalQueue"}[str(info.field_name)]
        if value is not None and dns1123_label_errors(value):
            raise ValueError(f"{value!r} is not a {what} name: {'; '.join(dns1123_label_errors(value))}")
        return value

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and dns1123_subdomain_errors(value):
            raise ValueError(f"{value!r} is not a service account name: {'; '.join(dns1123_subdomain_errors(value))}")
        return value

    @field_validator("workspace_claim_template")
    @classmethod
    def _claim_template(cls, value: str) -> str:
        try:
            sample = value.format(username="a")
        except (KeyError, IndexError, ValueError):
            raise ValueError("may use only the placeholder {username}") from None
        if dns1123_subdomain_errors(sample):
            raise ValueError(f"must give a DNS-1123 name, e.g. 'claim-{{username}}'; got {sample!r} for user 'a'")
        return value

    @field_validator("workspace_mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not path.is_absolute() or ".." in path.parts or str(path) == "/":
            raise ValueError("must be an absolute folder other than '/', e.g. /home/jovyan")
        return _no_argo_expression(str(path))

    @field_validator("mlflow_tracking_uri", "default_image")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        if value is not None and any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")
        return value if value is None else _no_argo_expression(value)

    @field_validator("artifact_repository_ref")
    @classmethod
    def _repository_ref(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if set(value) - {"configMap", "key"}:
                raise ValueError("takes only the keys configMap and key")
            for item in value.values():
                _no_argo_expression(item)
        return value


def load_cluster_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """The cluster config: from ``path``, else the file ``$NBSCALE_CLUSTER_CONFIG``, else the defaults."""
    source = path if path is not None else os.environ.get(CLUSTER_CONFIG_ENV) or None
    if source is None:
        return ClusterConfig()
    config = load_yaml_model(ClusterConfig, Path(source), what="cluster config", env=CLUSTER_CONFIG_ENV)
    log.debug("loaded cluster config from %s", source)
    return config
