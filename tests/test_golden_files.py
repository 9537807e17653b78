"""The golden-file check every golden test shares: regeneration is refused under CI."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden_files import assert_matches_golden


def test_regeneration_under_ci_fails_and_leaves_the_golden_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "case.yaml"
    golden.write_text("kind: old\n", encoding="utf-8")
    monkeypatch.setenv("NBSCALE_REGEN_GOLDEN", "1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="under CI"):
        assert_matches_golden(golden, "kind: new\n")
    assert golden.read_text(encoding="utf-8") == "kind: old\n"


def test_regeneration_off_ci_rewrites_and_a_difference_is_shown_otherwise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    golden = tmp_path / "case.yaml"
    golden.write_text("kind: old\n", encoding="utf-8")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NBSCALE_REGEN_GOLDEN", raising=False)
    with pytest.raises(AssertionError, match=r"(?s)case.yaml differs.*-kind: old.*\+kind: new"):
        assert_matches_golden(golden, "kind: new\n")
    monkeypatch.setenv("NBSCALE_REGEN_GOLDEN", "1")
    assert_matches_golden(golden, "kind: new\n")
    assert golden.read_text(encoding="utf-8") == "kind: new\n"
