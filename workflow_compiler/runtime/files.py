"""Small file helpers: atomic JSON writes, so a reader never sees half a file, and tolerant JSON reads."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON, atomically."""
    write_atomic(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8"))


def read_json(path: Path | None) -> dict[str, Any]:
    """A JSON object from a file another process writes; {} when absent, partial or not an object."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # written concurrently; the next poll reads it whole
    return data if isinstance(data, dict) else {}


class ProgressFile:
    """``progress.json`` in the output folder: ``{"cells_done", "cells_total", "status"}``.

    Counts code cells of the executed notebook, the injected-parameters cell included.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.cells_done = 0
        self.cells_total = 0
        self.status = "PENDING"

    def write(self, *, status: str | None = None, cells_done: int | None = None, cells_total: int | None = None) -> None:
        """Update the given fields and rewrite the file."""
        self.status = status if status is not None else self.status
        self.cells_done = cells_done if cells_done is not None else self.cells_done
        self.cells_total = cells_total if cells_total is not None else self.cells_total
        write_json(self.path, {"cells_done": self.cells_done, "cells_total": self.cells_total, "status": self.status})
