"""The HTML copy of an executed notebook, made with nbconvert."""

from __future__ import annotations

from pathlib import Path

from .files import write_atomic


def preload(*, render: bool = False) -> None:
    """Import nbconvert's HTML exporter while the kernel starts; with ``render``, also render a
    one-cell notebook.

    The first render of a process loads the templates and compiles Jinja and the Python lexer of
    pygments (0.5-1 s here); done ahead, the real render after the last cell takes a tenth of that.
    Worth it when a core is free (the warm tracking agent); not while a helper imports MLflow.
    """
    import nbformat
    from nbconvert import HTMLExporter

    if not render:
        return

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1  # warm-up"), nbformat.v4.new_markdown_cell("*warm-up*")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    HTMLExporter().from_notebook_node(nb)


def render_html(notebook: Path, html: Path) -> None:
    """Convert ``notebook`` to a standalone HTML page at ``html``."""
    from nbconvert import HTMLExporter

    body, _resources = HTMLExporter().from_filename(str(notebook))
    write_atomic(html, body.encode("utf-8"))
