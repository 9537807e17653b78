"""Kueue objects for a cluster's teams: GPU pools → ResourceFlavors, teams → ClusterQueues and LocalQueues.

``kueue_objects(teams, pools)`` is pure: the same files give the same ``kueue.x-k8s.io/v1beta2``
objects, each valid against the vendored Kueue CRDs. ``nbscale cluster kueue --teams teams.yaml``
prints them as manifests, or (``--format helm-values``) as the ``kueue:`` block the nbscale Helm
chart renders verbatim::

    kueue:
      enabled: true
      resourceFlavors: [{name: a100, spec: {...}}]
      clusterQueues: [{name: team-a, spec: {...}}]
      localQueues: [{name: team-a, namespace: jhub, spec: {...}}]

The teams file (see ``examples/kueue-teams.yaml``)::

    cohort: research              # every team's ClusterQueue joins this cohort and may borrow within it
    cpu_flavor: cpu               # the ResourceFlavor of CPU and memory (no node labels); default "cpu"
    teams:
      - name: vision              # ClusterQueue "vision"; LocalQueue "vision" in each namespace below
        namespaces: [jhub]
        nominal: {cpu: 64, memory: 256Gi, gpus: {a100: 8, t4: 4}}
        borrowing_limit: {gpus: {a100: 4}}   # absent: may borrow without limit

What is emitted: one ResourceFlavor per GPU pool (the pool's node selector as ``nodeLabels``, its
tolerations as ``tolerations``) and one for CPU and memory; per team a ClusterQueue with two
resource groups, CPU+memory on the CPU flavor and the GPU resources on the pool flavors (a pool the
team has no quota on gets 0), ``spec.cohortName`` the cohort, a namespace selector limited to the
team's namespaces, and preemption that reclaims lent quota; per team and namespace a LocalQueue
named after the team. A run names its queue with ``queue:`` in the spec, ``kueue_queue`` in the
cluster config, or through the user's hub quota group (see ``compiler/queueing.py``, which labels
the pods and RayJobs with ``kueue.x-k8s.io/queue-name``).

A LocalQueue named ``default`` is refused: Kueue's ``manageJobsWithoutQueueName`` setups route
unlabelled workloads of a namespace to its ``default`` queue, which would queue every pod there,
the hub's own included.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .compiler.templates import cpu_quantity
from .errors import CompileError
from .k8s_names import dns1123_label_errors
from .pools import PoolConfig
from .spec import QUANTITY_PATTERN
from .validation import validate_kueue
from .yaml_config import load_yaml_model
from .yaml_dump import dump_yaml, dump_yaml_all

log = logging.getLogger(__name__)

API_VERSION = "kueue.x-k8s.io/v1beta2"
MANAGED_BY = {"app.kubernetes.io/managed-by": "nbscale"}
RESERVED_QUEUE = "default"
Format = Literal["manifests", "helm-values"]


def _dns_label(value: str, what: str) -> str:
    problems = dns1123_label_errors(value)
    if problems:
        raise ValueError(f"{what} {value!r} is not a DNS-1123 label: {'; '.join(problems)}")
    return value


class TeamQuota(BaseModel):
    """Amounts of CPU cores, memory and whole GPUs per pool; for a borrowing limit, absent means no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpu: float | None = Field(default=None, ge=0, description="CPU cores")
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN, description="Memory as a Kubernetes quantity, e.g. 256Gi")
    gpus: dict[str, int] = Field(default_factory=dict, description="Whole GPUs per pool name, e.g. {a100: 8}")

    @field_validator("gpus")
    @classmethod
    def _whole_gpus(cls, value: dict[str, int]) -> dict[str, int]:
        for pool, count in value.items():
            if count < 0:
                raise ValueError(f"pool {pool!r}: a GPU count cannot be negative")
        return value


class Team(BaseModel):
    """One team: its ClusterQueue's quotas and the namespaces where its LocalQueue lives."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="ClusterQueue and LocalQueue name (a DNS-1123 label)")
    namespaces: list[str] = Field(min_length=1, description="Namespaces whose users submit to this team's queue")
    nominal: TeamQuota = Field(default_factory=TeamQuota, description="Guaranteed quota")
    borrowing_limit: TeamQuota = Field(default_factory=TeamQuota, description="At most this much borrowed from the cohort")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value == RESERVED_QUEUE:
            raise ValueError(
                f"a team (and so its LocalQueue) cannot be named {RESERVED_QUEUE!r}: Kueue can send every workload of a "
                "namespace without a queue label to the queue named 'default', the hub's own pods included; pick another name")
        return _dns_label(value, "team name")

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, value: list[str]) -> list[str]:
        for namespace in value:
            _dns_label(namespace, "namespace")
        if len(set(value)) != len(value):
            raise ValueError("lists a namespace twice")
        return value


class TeamsConfig(BaseModel):
    """The teams file: one cohort, the CPU flavor's name, and the teams."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cohort: str = Field(description="Cohort every team's ClusterQueue joins")
    cpu_flavor: str = Field(default="cpu", description="ResourceFlavor for CPU and memory (no node labels)")
    teams: list[Team] = Field(min_length=1)

    @field_validator("cohort", "cpu_flavor")
    @classmethod
    def _names(cls, value: str) -> str:
        return _dns_label(value, "name")

    @model_validator(mode="after")
    def _unique_teams(self) -> TeamsConfig:
        names = [team.name for team in self.teams]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"team names must be unique; repeated: {', '.join(repeated)}")
        return self


def load_teams(path: str | os.PathLike[str]) -> TeamsConfig:
    """Read and check a teams file; any problem is a CompileError naming the file and the field."""
    return load_yaml_model(TeamsConfig, Path(path), what="teams file")


def _check_pools(teams: TeamsConfig, pools: PoolConfig) -> None:
    if teams.cpu_flavor in pools.pools:
        raise CompileError(f"cpu_flavor {teams.cpu_flavor!r} is also a GPU pool's name; give the CPU flavor another name.")
    for team in teams.teams:
        for quota in (team.nominal, team.borrowing_limit):
            unknown = sorted(set(quota.gpus) - set(pools.pools))
            if unknown:
                known = ", ".join(sorted(pools.pools)) or "none"
                raise CompileError(f"team {team.name!r} has GPU quota on unknown pool(s) {', '.join(unknown)}; known pools: {known}. "
                                   "Fix the teams file or pass the cluster's pools file with --pools.")


def _quota(resource: str, nominal: Any, limit: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": resource, "nominalQuota": nominal}
    if limit is not None:
        entry["borrowingLimit"] = limit
    return entry


def _cpu_group(team: Team, flavor: str) -> dict[str, Any]:
    nominal, limit = team.nominal, team.borrowing_limit
    resources = [
        _quota("cpu", cpu_quantity(nominal.cpu) if nominal.cpu else "0", cpu_quantity(limit.cpu) if limit.cpu is not None else None),
        _quota("memory", nominal.memory or "0", limit.memory),
    ]
    return {"coveredResources": ["cpu", "memory"], "flavors": [{"name": flavor, "resources": resources}]}


def _gpu_group(team: Team, pools: PoolConfig) -> dict[str, Any]:
    covered = sorted({pool.gpu_resource for pool in pools.pools.values()})
    flavors = []
    for name, pool in pools.pools.items():  # file order: Kueue tries flavors in this order
        resources = []
        for resource in covered:  # every flavor lists every covered resource, in the same order
            mine = resource == pool.gpu_resource
            limit = team.borrowing_limit.gpus.get(name) if mine else None
            resources.append(_quota(resource, team.nominal.gpus.get(name, 0) if mine else 0, limit))
        flavors.append({"name": name, "resources": resources})
    return {"coveredResources": covered, "flavors": flavors}


def _cluster_queue(team: Team, teams: TeamsConfig, pools: PoolConfig) -> dict[str, Any]:
    groups = [_cpu_group(team, teams.cpu_flavor)]
    if pools.pools:
        groups.append(_gpu_group(team, pools))
    return {
        "cohortName": teams.cohort,
        "namespaceSelector": {"matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": list(team.namespaces)}]},
        "queueingStrategy": "BestEffortFIFO",
        # Borrowed quota goes back to its owner when the owner needs it: nominal quota is a guarantee.
        "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"},
        "resourceGroups": groups,
    }


def _flavor_specs(teams: TeamsConfig, pools: PoolConfig) -> list[tuple[str, dict[str, Any]]]:
    specs: list[tuple[str, dict[str, Any]]] = [(teams.cpu_flavor, {})]
    for name, pool in pools.pools.items():  # file order: Kueue tries flavors in this order
        spec: dict[str, Any] = {}
        if pool.node_selector:
            spec["nodeLabels"] = dict(pool.node_selector)
        if pool.tolerations:
            spec["tolerations"] = [t.to_k8s() for t in pool.tolerations]
        specs.append((name, spec))
    return specs


def kueue_values(teams: TeamsConfig, pools: PoolConfig) -> dict[str, Any]:
    """The ``kueue:`` Helm values block (the contract the nbscale chart renders verbatim)."""
    _check_pools(teams, pools)
    return {"kueue": {
        "enabled": True,
        "resourceFlavors": [{"name": name, "spec": spec} for name, spec in _flavor_specs(teams, pools)],
        "clusterQueues": [{"name": team.name, "spec": _cluster_queue(team, teams, pools)} for team in teams.teams],
        "localQueues": [{"name": team.name, "namespace": namespace, "spec": {"clusterQueue": team.name}}
                        for team in teams.teams for namespace in team.namespaces],
    }}


def kueue_objects(teams: TeamsConfig, pools: PoolConfig) -> list[dict[str, Any]]:
    """Every Kueue object for ``teams`` on ``pools``, checked against the vendored v1beta2 CRDs."""
    values = kueue_values(teams, pools)["kueue"]
    objects = []
    for kind, key in (("ResourceFlavor", "resourceFlavors"), ("ClusterQueue", "clusterQueues"), ("LocalQueue", "localQueues")):
        for item in values[key]:
            metadata = {"name": item["name"], **({"namespace": item["namespace"]} if "namespace" in item else {}),
                        "labels": dict(MANAGED_BY)}
            objects.append({"apiVersion": API_VERSION, "kind": kind, "metadata": metadata, "spec": item["spec"]})
    for obj in objects:
        validate_kueue(obj)
    log.debug("generated %d Kueue objects for %d teams", len(objects), len(teams.teams))
    return objects


def render_kueue(teams: TeamsConfig, pools: PoolConfig, fmt: Format = "manifests") -> str:
    """``kueue_objects`` as multi-document YAML, or ``kueue_values`` as one YAML document."""
    objects = kueue_objects(teams, pools)  # validates, whichever format is printed
    if fmt == "helm-values":
        return dump_yaml(kueue_values(teams, pools), sort_keys=False, default_flow_style=False)
    return dump_yaml_all(objects, sort_keys=False, default_flow_style=False)
