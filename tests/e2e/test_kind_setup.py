"""tests/e2e/kind/: the script is shellcheck-clean, and the values it installs pass both charts' schemas.

These run everywhere (no cluster): a mistake in the opt-in kind run shows up here first.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

from tests.helm.chart import KUBE_VERSION, manifests, validate_values
from tests.helm.z2jh_values import deep_merge, load_example, z2jh_defaults, z2jh_schema
from workflow_compiler.crd_schemas import strict_validator

KIND = Path(__file__).parent / "kind"
ROOT = Path(__file__).resolve().parents[2]


def test_run_script_passes_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).with_name("shellcheck"))
    result = subprocess.run([shellcheck, "--severity=style", str(KIND / "run.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nbscale_values_of_the_kind_run_render_valid_objects() -> None:
    values = yaml.safe_load((KIND / "nbscale-values.yaml").read_text())
    validate_values(values)
    for obj in manifests(values):
        if obj["apiVersion"].startswith("kueue.x-k8s.io/"):
            crd = f"kueue/kueue.x-k8s.io_{obj['kind'].lower()}s.yaml"
            assert not list(strict_validator(crd, "v1beta2").iter_errors(obj)), obj
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def test_z2jh_values_of_the_kind_run_pass_z2jh_schema() -> None:
    values = deep_merge(load_example(), yaml.safe_load((KIND / "z2jh-kind-values.yaml").read_text()))
    errors = list(jsonschema.Draft7Validator(z2jh_schema()).iter_errors(deep_merge(z2jh_defaults(), values)))
    assert not errors, [e.message for e in errors]


def test_the_versions_installed_are_the_documented_ones() -> None:
    script = (KIND / "run.sh").read_text()
    guide = (ROOT / "docs" / "deploy.md").read_text()
    pinned = dict(re.findall(r"^(\w+_CHART_VERSION)=(\S+)", script, flags=re.M))
    assert set(pinned) == {"ARGO_CHART_VERSION", "KUBERAY_CHART_VERSION", "KUEUE_CHART_VERSION", "Z2JH_CHART_VERSION"}
    for version in pinned.values():
        assert f"`{version}`" in guide, f"docs/deploy.md's version matrix does not name chart version {version}"
