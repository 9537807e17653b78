"""Manifests as YAML a reviewer can diff, and the core of ``nbscale compile``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from ..cluster import ClusterConfig
from ..gc_pause import collector_paused
from ..pools import PoolConfig
from ..validation import validate_workflow
from ..yaml_dump import NO_WRAP, ManifestDumper
from .workflow import Spec, compile_workflow

log = logging.getLogger(__name__)

# Keys that read best first; every other key follows in alphabetical order.
_FIRST_KEYS = ("apiVersion", "kind", "name", "generateName", "namespace", "metadata", "spec")
_MAP = "tag:yaml.org,2002:map"


def _key_rank(key: Any) -> tuple[int, Any]:
    return (_FIRST_KEYS.index(key) if key in _FIRST_KEYS else len(_FIRST_KEYS), key)


class _ReviewDumper(ManifestDumper):
    """``ManifestDumper`` writing each mapping's keys in review order, without a reordered copy of the manifest."""

    def ignore_aliases(self, data: Any) -> bool:
        """Never an anchor: a dict a caller's manifest shares is written out at each place, as a copy would be."""
        return True


def _represent_ordered(dumper: yaml.SafeDumper, data: dict[Any, Any]) -> yaml.MappingNode:
    # The manifest is already a private copy (``compile_workflow`` detaches it): ordering it again would copy it twice.
    return dumper.represent_mapping(_MAP, sorted(data.items(), key=lambda item: _key_rank(item[0])))


_ReviewDumper.add_representer(dict, _represent_ordered)
_ReviewDumper.add_multi_representer(dict, _represent_ordered)


def to_yaml(manifest: dict[str, Any]) -> str:
    """The manifest as block-style YAML with a stable key order and one line per scalar."""
    return yaml.dump(manifest, Dumper=_ReviewDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=NO_WRAP)


def checked_manifest(spec: Spec, *, validate: bool = True, **compile_options: Any) -> dict[str, Any]:
    """``compile_workflow(spec, **compile_options)``, checked against the Argo CRD when ``validate``.

    The one compile + validate path of ``nbscale compile`` and of every submit. It runs with the
    cyclic garbage collector paused: a burst of small containers over the heap pydantic and the CRD
    schema leave, where the collector cost ~15% of ``nbscale compile`` (``gc_pause.py``).
    """
    with collector_paused():
        manifest = compile_workflow(spec, **compile_options)
        if validate:
            validate_workflow(manifest)
    return manifest


def compile_to_file(
    spec: Spec,
    out: Path | None,
    validate: bool,
    *,
    cluster: ClusterConfig | None = None,
    pools: PoolConfig | None = None,
    notebook_root: Path | None = None,
    fanout: bool | None = None,
) -> str:
    """Compile ``spec`` to YAML, check it against the Argo CRD if ``validate``, write it to ``out``.

    Returns the YAML text. Raises ``ManifestInvalid`` when validation fails (nothing is written),
    and whatever ``compile_workflow`` raises. ``fanout`` as in ``compile_workflow`` (sweeps).
    """
    with collector_paused():
        manifest = checked_manifest(spec, validate=validate, cluster=cluster, pools=pools, notebook_root=notebook_root,
                                    fanout=fanout)
        text = to_yaml(manifest)
    if out is not None:
        _write_atomically(Path(out), text)
        log.info("wrote %s", out)
    return text


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a failed write never leaves half a manifest.

    ``-o /dev/null``, ``-o /dev/stdout`` or a named pipe is written into: a rename would put a regular file
    in the device's place (as root), or fail on the device's folder (as anyone else).
    """
    if path.exists() and not path.is_file():
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
