"""Pure quota arithmetic: which limits apply to a user, and whether a request fits them.

Nothing here touches the database, so every limit and every refusal message is unit-tested
without a hub. :mod:`hub_extension.store` feeds it rows and usage inside one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_WINDOW_HOURS = 168.0
LIMIT_FIELDS = ("max_gpus", "max_runs", "max_gpus_per_run", "gpu_hours_budget", "window_hours")


@dataclass(frozen=True, kw_only=True)
class PolicyValues:
    """The settable fields of one policy row; ``None`` means "not set at this level"."""

    kind: str
    name: str
    max_gpus: int | None = None
    max_runs: int | None = None
    max_gpus_per_run: int | None = None
    gpu_hours_budget: float | None = None
    window_hours: float | None = None
    allowed_pools: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The effective limits of one user. ``None`` means unlimited; ``sources`` says where each came from."""

    max_gpus: int | None = None
    max_runs: int | None = None
    max_gpus_per_run: int | None = None
    gpu_hours_budget: float | None = None
    window_hours: float = DEFAULT_WINDOW_HOURS
    allowed_pools: tuple[str, ...] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form used by the REST API and the client."""
        return {
            "max_gpus": self.max_gpus,
            "max_runs": self.max_runs,
            "max_gpus_per_run": self.max_gpus_per_run,
            "gpu_hours_budget": self.gpu_hours_budget,
            "window_hours": self.window_hours,
            "allowed_pools": list(self.allowed_pools) if self.allowed_pools is not None else None,
            "sources": dict(self.sources),
        }


@dataclass(frozen=True, kw_only=True)
class Usage:
    """What a user holds right now and has used in the current window."""

    gpus_in_use: int = 0
    runs_active: int = 0
    gpu_seconds_in_window: float = 0.0

    @property
    def gpu_hours_in_window(self) -> float:
        """GPU-hours used in the window."""
        return self.gpu_seconds_in_window / 3600.0


@dataclass(frozen=True, kw_only=True)
class Request:
    """The part of an admission request that limits are checked against."""

    gpus: int
    pool: str
    concurrency: int = 1
    estimated_seconds: float = 3600.0

    @property
    def gpus_total(self) -> int:
        """GPUs held at once: a sweep asks for ``concurrency × gpus`` together."""
        return self.gpus * self.concurrency


@dataclass(frozen=True, kw_only=True)
class Refusal:
    """Why a request does not fit: the limit's name and value, the usage, and a message that says what to do."""

    limit: str
    limit_value: Any
    usage: dict[str, Any]
    requested: dict[str, Any]
    message: str

    def to_dict(self) -> dict[str, Any]:
        """JSON body of a 409 answer (same shape as every nbscale error, plus the details)."""
        return {
            "message": self.message,
            "errors": [],
            "type": "QuotaExceeded",
            "limit": self.limit,
            "limit_value": self.limit_value,
            "usage": self.usage,
            "requested": self.requested,
        }


def resolve_limits(user: str, groups: Iterable[str], policies: Iterable[PolicyValues]) -> Limits:
    """Effective limits: the user's override, else the most generous of their groups, else the default.

    Each field resolves on its own, so a user override of ``max_gpus`` still inherits the group's
    budget. With several groups the most generous value wins (``allowed_pools``: the union).
    """
    groups = set(groups)
    rows = list(policies)
    user_rows = [p for p in rows if p.kind == "user" and p.name == user]
    group_rows = sorted((p for p in rows if p.kind == "group" and p.name in groups), key=lambda p: p.name)
    default_rows = [p for p in rows if p.kind == "default"]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in (*LIMIT_FIELDS, "allowed_pools"):
        for level, candidates in (("user", user_rows), ("group", group_rows), ("default", default_rows)):
            set_here = [p for p in candidates if getattr(p, name) is not None]
            if not set_here:
                continue
            if name == "allowed_pools":
                values[name] = tuple(sorted({pool for p in set_here for pool in p.allowed_pools or ()}))
            else:
                values[name] = max(getattr(p, name) for p in set_here)
            best = [p for p in set_here if name == "allowed_pools" or getattr(p, name) == values[name]]
            sources[name] = "default" if level == "default" else f"{level}:{best[0].name}"
            break
    if values.get("window_hours") is None:
        values["window_hours"] = DEFAULT_WINDOW_HOURS
    return Limits(**values, sources=sources)


def _plural(n: float, word: str) -> str:
    return f"{n:g} {word}" if n == 1 else f"{n:g} {word}s"


def check_request(limits: Limits, usage: Usage, request: Request) -> Refusal | None:
    """Return why ``request`` does not fit ``limits`` given ``usage``, or ``None`` when it fits.

    Checks run from the cheapest fix to the slowest (pool, size per run, runs, GPUs, budget).
    Usage above a limit (the limit was lowered) refuses new work but never touches running work.
    """
    used = {
        "gpus_in_use": usage.gpus_in_use,
        "runs_active": usage.runs_active,
        "gpu_hours_in_window": round(usage.gpu_hours_in_window, 4),
    }
    asked = {
        "gpus": request.gpus,
        "concurrency": request.concurrency,
        "gpus_total": request.gpus_total,
        "pool": request.pool,
        "estimated_seconds": request.estimated_seconds,
    }

    def refuse(limit: str, value: Any, message: str) -> Refusal:
        return Refusal(limit=limit, limit_value=value, usage=used, requested=asked, message=message)

    if limits.allowed_pools is not None and request.pool not in limits.allowed_pools:
        allowed = ", ".join(limits.allowed_pools) or "none"
        return refuse(
            "allowed_pools",
            list(limits.allowed_pools),
            f"Pool '{request.pool}' is not allowed for you (allowed pools: {allowed}). "
            "Choose an allowed pool, or contact a hub admin for access.",
        )
    if limits.max_gpus_per_run is not None and request.gpus > limits.max_gpus_per_run:
        return refuse(
            "max_gpus_per_run",
            limits.max_gpus_per_run,
            f"The limit is {_plural(limits.max_gpus_per_run, 'GPU')} per run and this run asks for "
            f"{request.gpus}. Ask for at most {limits.max_gpus_per_run}, or contact a hub admin.",
        )
    if limits.max_runs is not None and usage.runs_active + 1 > limits.max_runs:
        wait = usage.runs_active + 1 - limits.max_runs
        return refuse(
            "max_runs",
            limits.max_runs,
            f"The limit is {_plural(limits.max_runs, 'run')} at once and you have "
            f"{usage.runs_active} running. Wait for {_plural(wait, 'run')} to finish, "
            "or contact a hub admin.",
        )
    if limits.max_gpus is not None and usage.gpus_in_use + request.gpus_total > limits.max_gpus:
        return refuse("max_gpus", limits.max_gpus, _gpu_message(limits.max_gpus, usage, request))
    if limits.gpu_hours_budget is not None and request.gpus_total > 0:
        needed = request.gpus_total * request.estimated_seconds / 3600.0
        if usage.gpu_hours_in_window + needed > limits.gpu_hours_budget:
            left = max(0.0, limits.gpu_hours_budget - usage.gpu_hours_in_window)
            return refuse(
                "gpu_hours_budget",
                limits.gpu_hours_budget,
                f"The GPU-hour budget is {limits.gpu_hours_budget:g} h per {limits.window_hours:g} h "
                f"window; you have used {usage.gpu_hours_in_window:.2f} h and this submission would "
                f"use about {needed:.2f} h ({left:.2f} h left). Ask for fewer GPUs or a shorter "
                "estimated duration, wait for older usage to leave the window, or contact a hub admin.",
            )
    return None


def _gpu_message(limit: int, usage: Usage, request: Request) -> str:
    free = max(0, limit - usage.gpus_in_use)
    over = usage.gpus_in_use + request.gpus_total - limit
    shape = (
        f"{request.concurrency} trials × {request.gpus} GPU"
        if request.concurrency > 1
        else _plural(request.gpus, "GPU")
    )
    fixes = []
    if request.concurrency > 1 and request.gpus and free >= request.gpus:
        fixes.append(f"lower the sweep concurrency to {free // request.gpus}")
    elif free and request.concurrency == 1:
        fixes.append(f"ask for at most {_plural(free, 'GPU')}")
    if 0 < over <= usage.gpus_in_use:
        fixes.append(f"wait for runs holding {over} GPU(s) to finish")
    if request.gpus_total > limit and not fixes:
        fixes.append(f"ask for at most {_plural(limit, 'GPU')} in total")
    return (
        f"The limit is {_plural(limit, 'GPU')} in use at once; you have {usage.gpus_in_use} in use "
        f"and this submission asks for {shape}. To run now, {', or '.join(fixes)}; or contact a hub admin."
    )
