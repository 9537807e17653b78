"""The HTML copy of an executed notebook, made with nbconvert."""

from __future__ import annotations

from pathlib import Path

from .files import write_atomic


def preload() -> None:
    """Import nbconvert's HTML exporter ahead of time (about a second), while the notebook runs."""
    import nbconvert.exporters.html  # noqa: F401


def render_html(notebook: Path, html: Path) -> None:
    """Convert ``notebook`` to a standalone HTML page at ``html``."""
    from nbconvert import HTMLExporter

    body, _resources = HTMLExporter().from_filename(str(notebook))
    write_atomic(html, body.encode("utf-8"))
