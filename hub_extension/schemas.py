"""Request bodies of the quota REST API (pydantic v2; unknown fields such as ``user`` are rejected)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

PoolName = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]


class AdmissionBody(BaseModel):
    """POST ``api/v1/leases``. The caller is who the hub says, never a field of this body."""

    model_config = ConfigDict(extra="forbid")

    gpus: int = Field(ge=0, le=1024, description="GPUs per run (per trial for a sweep)")
    pool: PoolName = "default"
    concurrency: int = Field(1, ge=1, le=10_000, description="trials at once; a plain run is 1")
    estimated_seconds: float = Field(gt=0, le=30 * 86400, description="expected wall time")
    request_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", description="client idempotency key")
    label: str = Field("", max_length=200, description="what is running, e.g. the notebook path")
    ttl_seconds: float | None = Field(None, ge=1, le=86400, description="lease lifetime between heartbeats")


class ReleaseBody(BaseModel):
    """POST ``api/v1/leases/{id}/release``."""

    model_config = ConfigDict(extra="forbid")

    gpu_seconds: float | None = Field(None, ge=0, description="GPU-seconds actually used; omitted = wall time × GPUs")


class PolicyBody(BaseModel):
    """PUT ``api/v1/policies/{kind}/{name}``: every omitted field is "not set at this level"."""

    model_config = ConfigDict(extra="forbid")

    max_gpus: int | None = Field(None, ge=0, le=100_000)
    max_runs: int | None = Field(None, ge=0, le=100_000)
    max_gpus_per_run: int | None = Field(None, ge=0, le=100_000)
    gpu_hours_budget: float | None = Field(None, ge=0, le=10_000_000)
    window_hours: float | None = Field(None, gt=0, le=24 * 366)
    allowed_pools: list[PoolName] | None = None
