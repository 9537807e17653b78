"""The one check of a golden file: exact text, a readable diff, and regeneration that CI refuses.

``NBSCALE_REGEN_GOLDEN=1`` rewrites the golden files from what the code produces now; a reviewer then
reads the diff. Under ``CI`` that would make every golden test pass whatever the code emits, so it
fails instead.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import pytest

REGEN_VARIABLE = "NBSCALE_REGEN_GOLDEN"


def regenerating() -> bool:
    """Whether this session rewrites golden files; a failure under CI, where nobody reviews the diff."""
    if os.environ.get(REGEN_VARIABLE) != "1":
        return False
    if os.environ.get("CI"):
        pytest.fail(f"{REGEN_VARIABLE}=1 under CI: regenerate golden files on your machine and review the diff")
    return True


def assert_matches_golden(path: Path, text: str, *, produced_by: str = "produced") -> None:
    """``text`` is exactly the committed ``path``; with regeneration on, ``path`` is rewritten first."""
    if regenerating():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path.name}; run with {REGEN_VARIABLE}=1 to create it"
    expected = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True), "golden", produced_by))
    assert text == expected, f"{path.name} differs ({REGEN_VARIABLE}=1 to accept):\n{diff}"
