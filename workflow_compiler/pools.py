"""GPU pools: a pool name a user picks (``--pool a100``) → where its pods may run.

A pool is a node selector, tolerations and the extended-resource name its GPUs are counted
under. The built-in default suits nodes labelled by NVIDIA GPU feature discovery; a cluster
replaces it with a small YAML file named by ``NBSCALE_POOLS`` (or passed to ``load_pools``)::

    default_pool: gpu            # used when a run asks for GPUs without naming a pool
    pools:
      a100:
        node_selector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}
        tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
        gpu_resource: nvidia.com/gpu
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import CompileError
from .k8s_names import dns1123_label_errors, label_value_errors, qualified_name_errors
from .yaml_config import load_yaml_model

log = logging.getLogger(__name__)

#: Environment variable naming a pools YAML file that replaces the built-in default.
POOLS_ENV = "NBSCALE_POOLS"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"


class Toleration(BaseModel):
    """A Kubernetes toleration, written in the API's own camelCase."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _exists_has_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise ValueError("a toleration with operator Exists must not have a value")
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The toleration as it appears in a pod spec."""
        return self.model_dump(exclude_none=True)


class Pool(BaseModel):
    """Where the pods of one pool run and how its GPUs are requested."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pods must match")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints of the pool's nodes that the pods tolerate")
    gpu_resource: str = Field(default=DEFAULT_GPU_RESOURCE, description="Extended resource the GPUs are counted as, e.g. amd.com/gpu")
    description: str = ""

    @field_validator("node_selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            problems = [f"key {p}" for p in qualified_name_errors(key)] + [f"value {p}" for p in label_value_errors(label)]
            if problems:
                raise ValueError(f"node selector {key!r}: {'; '.join(problems)}")
        return value

    @field_validator("gpu_resource")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        if "/" not in value or qualified_name_errors(value):
            raise ValueError(f"{value!r} is not an extended resource name like nvidia.com/gpu")
        return value


class PoolConfig(BaseModel):
    """All pools of a cluster, and the one used when a run asks for GPUs without naming one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: dict[str, Pool] = Field(default_factory=dict)
    default_pool: str | None = Field(default=None, description="Pool for GPU runs that name none; None: GPU limits only")

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, value: dict[str, Pool]) -> dict[str, Pool]:
        for name in value:
            if dns1123_label_errors(name):
                raise ValueError(f"pool name {name!r} must be lowercase letters, digits and '-'")
        return value

    @model_validator(mode="after")
    def _default_exists(self) -> PoolConfig:
        if self.default_pool is not None and self.default_pool not in self.pools:
            raise ValueError(f"default_pool {self.default_pool!r} is not one of the pools: {', '.join(sorted(self.pools)) or 'none'}")
        return self

    def get(self, name: str) -> Pool:
        """The pool called ``name``; an unknown name is a CompileError listing the known pools."""
        if name not in self.pools:
            known = ", ".join(sorted(self.pools)) or "(none configured)"
            raise CompileError(
                f"Unknown GPU pool {name!r}. Known pools: {known}. Pick one of them with --pool,"
                f" or add it to the pools file (${POOLS_ENV}).",
                errors=[{"loc": ["resources", "pool"], "msg": f"unknown pool; known: {known}"}],
            )
        return self.pools[name]

    def resolve(self, name: str | None, gpus: int) -> Pool | None:
        """The pool a step runs in: the named one, else the default pool for GPU steps, else None."""
        if name is not None:
            return self.get(name)
        if gpus > 0 and self.default_pool is not None:
            return self.pools[self.default_pool]
        return None


_GPU_TAINT = [{"key": DEFAULT_GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
_PRODUCT = "nvidia.com/gpu.product"  # the node label NVIDIA GPU feature discovery sets

#: The built-in pools: any NVIDIA node, or one GPU model, as GPU feature discovery labels them.
BUILTIN_POOLS: dict[str, Any] = {
    "default_pool": "gpu",
    "pools": {
        "gpu": {"tolerations": _GPU_TAINT, "description": "any node with an NVIDIA GPU"},
        "t4": {"node_selector": {_PRODUCT: "Tesla-T4"}, "tolerations": _GPU_TAINT},
        "a10g": {"node_selector": {_PRODUCT: "NVIDIA-A10G"}, "tolerations": _GPU_TAINT},
        "a100": {"node_selector": {_PRODUCT: "NVIDIA-A100-SXM4-80GB"}, "tolerations": _GPU_TAINT},
        "h100": {"node_selector": {_PRODUCT: "NVIDIA-H100-80GB-HBM3"}, "tolerations": _GPU_TAINT},
    },
}


def load_pools(path: str | os.PathLike[str] | None = None) -> PoolConfig:
    """The pool configuration: from ``path``, else the file ``$NBSCALE_POOLS``, else the built-in one."""
    source = path if path is not None else os.environ.get(POOLS_ENV) or None
    if source is None:
        return PoolConfig.model_validate(BUILTIN_POOLS)
    config = load_yaml_model(PoolConfig, Path(source), what="pools file", env=POOLS_ENV)
    log.debug("loaded %d GPU pools from %s", len(config.pools), source)
    return config
