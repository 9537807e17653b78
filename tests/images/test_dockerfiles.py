"""The Dockerfile cannot be built here (no Docker engine), so it is linted and cross-checked."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
SINGLEUSER = ROOT / "images" / "singleuser.Dockerfile"
IMAGE = "nbscale/singleuser:0.1.0"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_image_in_images() -> None:
    assert DOCKERFILES == [SINGLEUSER], "steps run in the single-user image: there is no separate runner image"


def test_the_base_image_is_pinned() -> None:
    (base,) = re.findall(r"^FROM (\S+)", SINGLEUSER.read_text(), flags=re.M)
    assert base.startswith("quay.io/jupyter/") and re.search(r":\d{4}-\d{2}-\d{2}(@sha256:[0-9a-f]{64})?$", base), base


def test_the_image_provides_what_the_chart_and_steps_use() -> None:
    text = SINGLEUSER.read_text()
    assert f"-t {IMAGE} " in text, "the build instructions must produce the image the chart and the z2jh values name"
    for copied in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, flags=re.M):
        for source in copied.split():
            assert (ROOT / source).exists(), f"{source} is copied into the image but does not exist"
    assert "nbscale-step=" in (ROOT / "setup.py").read_text()
    values = yaml.safe_load((ROOT / "helm" / "nbscale" / "values.yaml").read_text())
    assert f"{values['image']['repository']}:{values['image']['tag']}" == IMAGE
    assert values["clusterConfig"]["default_image"] == IMAGE
    z2jh = yaml.safe_load((ROOT / "helm" / "nbscale" / "examples" / "z2jh-values.yaml").read_text())
    assert f"{z2jh['singleuser']['image']['name']}:{z2jh['singleuser']['image']['tag']}" == IMAGE


def test_the_private_group_is_the_pods_fs_group_wherever_our_image_runs() -> None:
    """A home on a pod's volume is group-writable under fsGroup: the image names that group private (nbscale counts
    no group private otherwise), and it must be the gid the chart's pods and the z2jh example give the volume."""
    (named,) = re.findall(r"NBSCALE_PRIVATE_GROUP=(\d+)", SINGLEUSER.read_text())
    z2jh = yaml.safe_load((ROOT / "helm" / "nbscale" / "examples" / "z2jh-values.yaml").read_text())
    assert z2jh["singleuser"]["extraEnv"]["NBSCALE_PRIVATE_GROUP"] == named == str(z2jh["singleuser"].get("fsGid", 100))  # z2jh's default
    fs_groups = re.findall(r"^\s*fsGroup: (\d+)", (ROOT / "helm" / "nbscale" / "values.yaml").read_text(), flags=re.M)
    assert fs_groups and set(fs_groups) == {named}
