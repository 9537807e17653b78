"""nbscale's processes keep MLflow's usage telemetry off unless the user turned it on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workflow_compiler.tracking_uri import TELEMETRY_SWITCH, without_telemetry


def test_off_by_default_and_a_users_choice_is_kept() -> None:
    assert without_telemetry({"PATH": "/bin"}) == {"PATH": "/bin", TELEMETRY_SWITCH: "true"}
    assert without_telemetry({TELEMETRY_SWITCH: "false"})[TELEMETRY_SWITCH] == "false"


@pytest.mark.parametrize(("before", "inside"), [(None, "true"), ("false", "false")])
def test_the_embedded_rays_processes_inherit_the_setting_while_it_starts(monkeypatch: pytest.MonkeyPatch,
                                                                         before: str | None, inside: str) -> None:
    from workflow_compiler.sweep.ray_connect import _embedded_site

    if before is None:
        monkeypatch.delenv(TELEMETRY_SWITCH, raising=False)
    else:
        monkeypatch.setenv(TELEMETRY_SWITCH, before)
    with _embedded_site():
        assert os.environ[TELEMETRY_SWITCH] == inside
    assert os.environ.get(TELEMETRY_SWITCH) == before  # the driver's own environment is as it was


@pytest.mark.parametrize(("before", "after"), [(None, "true"), ("false", "false")])
def test_the_cli_sets_it_before_anything_imports_mlflow(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                        before: str | None, after: str) -> None:
    from workflow_compiler import cli

    if before is None:
        monkeypatch.delenv(TELEMETRY_SWITCH, raising=False)
    else:
        monkeypatch.setenv(TELEMETRY_SWITCH, before)
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert os.environ[TELEMETRY_SWITCH] == after


def test_the_cli_module_itself_does_not_import_mlflow() -> None:
    """What makes setting the switch in ``main`` early enough: MLflow reads it when imported."""
    code = "import sys, workflow_compiler.cli; print('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
