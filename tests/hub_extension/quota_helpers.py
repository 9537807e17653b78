"""Helpers of the quota tests: wait on a condition with a deadline, never for a fixed time (loaded 2-core machines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Call ``check`` until it returns something true, and return that; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(poll)
    return value


def heartbeated_after(quota: dict[str, Any], lease_id: str, moment: datetime | str) -> dict[str, Any] | None:
    """The lease in ``quota`` (a ``GET me`` answer) if it is live and was last heartbeated after ``moment``.

    The service sets ``expires_at`` to the heartbeat's time plus the TTL, so ``expires_at - ttl``
    is the last heartbeat by the service's own clock.
    """
    if isinstance(moment, str):
        moment = parse_time(moment)
    for lease in quota["leases"]:
        if lease["id"] == lease_id and lease["status"] == "active":
            return lease if last_heartbeat(lease) > moment else None
    return None


def last_heartbeat(lease: dict[str, Any]) -> datetime:
    """When ``lease`` (its JSON) was last heartbeated or admitted, by the service's clock."""
    return parse_time(lease["expires_at"]) - timedelta(seconds=lease["ttl_seconds"])


def parse_time(stamp: str) -> datetime:
    """A timestamp of the quota API (naive UTC, ``Z``-suffixed)."""
    return datetime.fromisoformat(stamp.rstrip("Z"))
