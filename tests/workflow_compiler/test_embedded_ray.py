"""The embedded default's own Ray: loopback only, and its processes start without a slow optional import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RAYSITE = Path(__file__).resolve().parents[2] / "workflow_compiler" / "sweep" / "raysite"

# Imports ray before nbscale does (as a notebook or a benchmark may), starts the embedded Ray, and
# reports what one of its idle workers saw and every address the node's processes listen on.
_PROBE = textwrap.dedent("""
    import json, os, sys
    import ray
    import psutil
    from workflow_compiler.sweep.driver import ensure_ray

    ensure_ray()

    @ray.remote
    def worker_view():
        return {"rfc3987_syntax_blocked": "rfc3987_syntax" in sys.modules and sys.modules["rfc3987_syntax"] is None,
                "pythonpath": os.environ.get("PYTHONPATH", "")}

    view = ray.get(worker_view.remote())
    listening = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            listening |= {c.laddr.ip for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:  # ended since the listing: it listens on nothing; AccessDenied must fail
            pass
    print(json.dumps({**view, "gcs": ray.get_runtime_context().gcs_address, "listening": sorted(listening),
                      "driver_pythonpath": os.environ.get("PYTHONPATH")}))
    ray.shutdown()
""")


def test_raysite_hook_blocks_rfc3987_and_still_runs_a_shadowed_sitecustomize(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['SHADOWED_SITECUSTOMIZE_RAN'] = '1'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(RAYSITE), str(other)])}
    probe = ("import os, sys; print(sys.modules.get('rfc3987_syntax', 'absent') is None, "
             "os.environ.get('SHADOWED_SITECUSTOMIZE_RAN'))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "1"]


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only_and_its_workers_start_lean(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")}
    env.update(RAY_AUTH_MODE="disabled", NBSCALE_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["gcs"].startswith("127.0.0.1:")
    assert seen["listening"] and set(seen["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1", "::1"}, seen["listening"]
    assert seen["rfc3987_syntax_blocked"] is True
    assert seen["pythonpath"].split(os.pathsep)[0] == str(RAYSITE)
    assert seen["driver_pythonpath"] is None  # only the Ray processes get the hook, not the caller
