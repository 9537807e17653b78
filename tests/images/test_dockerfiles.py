"""The Dockerfiles cannot be built here (no Docker engine), so they are linted and cross-checked."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[2] / ".venv" / "bin" / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_runner_image_is_the_spec_default_and_provides_the_step_command():
    from workflow_compiler.spec import DEFAULT_IMAGE

    text = (ROOT / "images" / "runner.Dockerfile").read_text()
    assert DEFAULT_IMAGE in text, "the build instructions must produce the image RunSpec uses by default"
    for copied in re.findall(r"^COPY (\S+)", text, flags=re.M):
        assert (ROOT / copied).exists(), f"{copied} is copied into the image but does not exist"
    assert "nbscale-step" in (ROOT / "setup.py").read_text()
