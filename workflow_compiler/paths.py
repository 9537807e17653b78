"""Where a notebook may live: inside the root (the working directory or the server's root dir)."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from .errors import NotebookError


def resolve_notebook_path(path: str | os.PathLike[str], root: str | os.PathLike[str], *, allow_hidden: bool = False,
                          root_label: str | None = None) -> tuple[Path, str]:
    """Resolve ``path`` inside ``root``, following symlinks.

    Returns the absolute path and the path relative to the root in POSIX form (what specs and
    manifests carry). Refuses paths that leave the root (``..``, absolute paths elsewhere, symlinks
    pointing out) and, unless ``allow_hidden``, hidden files and folders. Messages name the root as
    ``root_label`` when given (a server keeps its folders private), else by its absolute path.
    """
    root_abs = Path(root).resolve()
    raw = Path(path)
    candidate = raw if raw.is_absolute() else root_abs / raw
    resolved = candidate.resolve()
    if resolved != root_abs and root_abs not in resolved.parents:
        advice = ("Move or copy the notebook into it." if root_label else
                  "Move or copy the notebook under it, or run nbscale from a folder that contains it.")
        raise NotebookError(
            f"{path} is outside {root_label or f'the working directory {root_abs}'}"
            f"{' (it leads there through a symbolic link)' if candidate.is_symlink() else ''}. {advice}",
            path=str(path), http_status=403,
            errors=[{"loc": ["notebook"], "msg": "outside the root directory"}],
        )
    relative = PurePosixPath(resolved.relative_to(root_abs).as_posix())
    if not allow_hidden and any(part.startswith(".") for part in relative.parts):
        raise NotebookError(
            f"{path} is in a hidden file or folder; nbscale does not run hidden notebooks.",
            path=str(path), http_status=403,
            errors=[{"loc": ["notebook"], "msg": "hidden path"}],
        )
    if not resolved.exists():  # named as typed, like every other message here, not by the absolute path
        raise NotebookError(f"{path}: no such file. Check the path (it is relative to {root_label or 'the working directory'}).",
                            path=str(path), http_status=404, errors=[{"loc": ["notebook"], "msg": "no such file"}])
    return resolved, str(relative)
