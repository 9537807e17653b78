"""The embedded default's own Ray: loopback only, and its processes start without a slow optional import."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
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


# Starts the sweep's Ray as a sweep would, reports how it is reached, then waits on stdin while the test tries to join it.
_OWN_RAY_PROBE = textwrap.dedent("""
    import json, os, sys
    import ray
    from workflow_compiler.sweep.driver import ensure_ray

    ensure_ray()
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "auth": os.environ.get("RAY_AUTH_MODE"),
                      "token": os.environ.get("RAY_AUTH_TOKEN_PATH"),
                      "session": ray._private.worker._global_node.get_session_dir_path()}), flush=True)
    sys.stdin.readline()
""")


def _joined_without_token(address: str, env: dict[str, str]) -> bool:
    """Whether another driver of this user, without the token, gets into the Ray at ``address``."""
    probe = (f"import ray; ray.init(address={address!r}, _node_ip_address='127.0.0.1', logging_level='ERROR', log_to_driver=False);"
             "print('connected')")
    try:
        done = subprocess.run([sys.executable, "-c", probe], env={**env, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:  # Ray's driver may retry a refused connection for long: not joined
        return False
    return done.stdout.strip().endswith("connected")


@pytest.mark.slow
@pytest.mark.parametrize(("home_name", "warm_ray", "warned"), [
    ("h" * 95, None, True),  # its sockets' paths too long for the warm head: a Ray of its own, and the sweep's log says why
    ("home", "0", False),  # asked for: no warning
], ids=["long-home", "warm-ray-off"])
def test_a_ray_of_the_sweeps_own_needs_a_token_keeps_its_files_private_and_removes_them(home_name: str, warm_ray: str | None,
                                                                                     warned: bool) -> None:
    parent = Path(tempfile.mkdtemp(prefix="nbs-own-"))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "NBSCALE_WARM_RAY", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_AUTH_MODE="disabled", NBSCALE_HOME=str(parent / home_name), **({"NBSCALE_WARM_RAY": warm_ray} if warm_ray else {}))
    probe = subprocess.Popen([sys.executable, "-c", _OWN_RAY_PROBE], env=env, cwd=parent, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert probe.stdout is not None and probe.stdin is not None
        seen = json.loads(probe.stdout.readline() or "null")
        assert seen is not None, probe.communicate(timeout=60)[1][-3000:]
        folder = Path(seen["token"]).parent
        assert seen["auth"] == "token" and seen["session"].startswith(str(folder) + "/")  # not /tmp/ray
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
        assert stat.S_IMODE(Path(seen["token"]).stat().st_mode) == 0o600
        assert not _joined_without_token(seen["gcs"], env)
        _, err = probe.communicate("\n", timeout=120)
    finally:
        probe.kill()
        shutil.rmtree(parent, ignore_errors=True)
    assert probe.returncode == 0, err[-3000:]
    assert not folder.exists()
    assert ("no warm Ray head: the path of its socket" in err) is warned and "Traceback" not in err, err[-3000:]
