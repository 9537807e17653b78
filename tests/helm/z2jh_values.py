"""The example z2jh values, read the way the z2jh chart reads them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.helm.chart import CHART

EXAMPLE = CHART / "examples" / "z2jh-values.yaml"
Z2JH = Path(__file__).parent / "z2jh"


def load_example() -> dict[str, Any]:
    """helm/nbscale/examples/z2jh-values.yaml as a dict."""
    return yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of a user's values over a chart's: maps merge key by key, lists and scalars replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def z2jh_defaults() -> dict[str, Any]:
    """z2jh's own values.yaml (vendored, see z2jh/PROVENANCE.md)."""
    return yaml.safe_load((Z2JH / "values.yaml").read_text(encoding="utf-8"))


def z2jh_schema() -> dict[str, Any]:
    """z2jh's values.schema.yaml (vendored)."""
    return yaml.safe_load((Z2JH / "values.schema.yaml").read_text(encoding="utf-8"))


def hub_config_from_values(values: dict[str, Any], *, service_url: str, api_token: str) -> str:
    """The jupyterhub_config.py lines z2jh's hub builds from ``hub.services``, ``hub.loadRoles`` and ``hub.config``.

    As z2jh does: a service's name is its key and its ``api_token`` is the one z2jh keeps in its
    Secret (here ``api_token``); a role's name is its key; ``hub.config.<Class>.<trait>`` is
    ``c.<Class>.<trait>``. Only the service's URL is replaced, by where it listens on this machine.
    """
    hub = values["hub"]
    services = []
    for key, service in hub["services"].items():
        services.append({**service, "name": service.get("name", key), "api_token": api_token, "url": service_url})
    roles = [{**role, "name": role.get("name", key)} for key, role in hub["loadRoles"].items()]
    lines = [f"c.JupyterHub.services = {services!r}", f"c.JupyterHub.load_roles = {roles!r}"]
    for cls, traits in hub.get("config", {}).items():
        lines += [f"c.{cls}.{trait} = {value!r}" for trait, value in traits.items()]
    return "\n".join(lines) + "\n"
