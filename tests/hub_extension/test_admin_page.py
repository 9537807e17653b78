"""The admin page in headless Chromium: an admin sets a limit, and user-supplied strings render escaped."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
XSS = '<img src=x onerror=alert(1)><script>window.__pwned=1;alert(2)</script>'


@pytest.mark.browser
def test_admin_sets_a_limit_and_hostile_strings_stay_text(quota_hub, api, admin_api, unique_user) -> None:
    if not Path("/usr/bin/chromium").exists() or not (ROOT / "node_modules" / "playwright-core").exists():
        pytest.fail("needs /usr/bin/chromium and node_modules/playwright-core: run scripts/bootstrap.sh test")
    target, submitter = unique_user("limited"), unique_user("notebook-author")
    quota_hub.ensure_user(target, ["gpu-users"])
    # a notebook named like markup, submitted by an ordinary user, shows up in the admin's ledger
    assert api(quota_hub.token_for(submitter)).admit(label=XSS).status_code == 201
    artifacts = ROOT / "test-artifacts" / "hub_extension"
    artifacts.mkdir(parents=True, exist_ok=True)
    config = {"hubUrl": quota_hub.url, "serviceUrl": quota_hub.service_url, "admin": "quota-admin",
              "target": target, "xss": XSS, "artifacts": str(artifacts)}
    run = subprocess.run([shutil.which("node") or "node", str(Path(__file__).with_name("admin_page.cjs")), json.dumps(config)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result["targetRow"][:3] == ["user", target, "3"]  # the limit the admin typed is on the page
    policy = [p for p in admin_api.get("policies").json()["policies"] if p["name"] == target]
    assert policy[0]["max_gpus"] == 3 and policy[0]["updated_by"] == "quota-admin"
    assert XSS in result["ledgerLabels"]  # shown as text, character for character
    assert XSS in result["xssPolicyText"]
    assert result["injectedImages"] == 0 and result["pwned"] is False and result["dialogs"] == []
    assert (artifacts / "admin_page.png").stat().st_size > 10_000
