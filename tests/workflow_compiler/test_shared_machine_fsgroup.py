"""A home on a pod's volume under ``fsGroup`` (Zero to JupyterHub's single-user pod, ``fsGroup: 100``).

At every pod start kubelet gives the volume to the fsGroup: each file and folder is chgrp'd to it,
gains group read and write (folders also group search and setgid), and symlinks are left alone
(kubernetes ``pkg/volume/volume_linux.go``, ``changeFilePermission``). ``_kubelet_fs_group`` does
the same to a real home that ``nbscale run`` used. A group that holds no one but the caller (``users``
in the docker-stacks image holds only jovyan) shares nothing, so the home keeps working; a group
with another member could plant files there, so the home is refused as before.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflow_compiler.errors import UnsafeFolder
from workflow_compiler.private_files import private_folder, private_home
from workflow_compiler.tracking import agent

NBSCALE = str(Path(sys.executable).parent / "nbscale")
NOTEBOOKS = Path(__file__).parent / "notebooks"
LONE_GROUP, SHARED_GROUP, MEMBER = "nbscale-fsgroup", "nbscale-fsshared", "nbscale-fsmember"
JOVYAN_GROUP, JOVYAN = "nbscale-fsusers", "nbscale-jovyan"  # as users (100) and jovyan in the docker-stacks image


def _kubelet_fs_group(volume: Path, gid: int) -> None:
    """What kubelet does to a volume under ``fsGroup: gid`` (without ``OnRootMismatch``): every entry's group becomes
    ``gid``; files gain rw for the group, folders rwx and setgid; symlinks keep their mode."""
    for root, folders, files in os.walk(volume):
        for path in [Path(root), *(Path(root, name) for name in files)]:
            info = os.lstat(path)
            os.lchown(path, -1, gid)
            if stat.S_ISLNK(info.st_mode):
                continue
            extra = 0o2770 if stat.S_ISDIR(info.st_mode) else 0o660
            os.chmod(path, stat.S_IMODE(info.st_mode) | extra)
        for name in folders:
            if Path(root, name).is_symlink():
                os.lchown(Path(root, name), -1, gid)


@pytest.fixture(scope="module")
def groups() -> Iterator[dict[str, int]]:
    """Two throwaway groups: one nobody is in (a pod's fsGroup), one with another user in it; removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("making groups and users needs root (groupadd, useradd); these tests run as root in CI")
    names = (LONE_GROUP, SHARED_GROUP, JOVYAN_GROUP)
    for name in names:
        subprocess.run(["groupadd", name], check=False, capture_output=True)
    for user, group in ((MEMBER, SHARED_GROUP), (JOVYAN, JOVYAN_GROUP)):
        subprocess.run(["useradd", "-M", "-N", "-g", group, "-s", "/usr/sbin/nologin", user], check=False, capture_output=True)
    try:
        yield {name: grp.getgrnam(name).gr_gid for name in names}
    finally:
        for user in (MEMBER, JOVYAN):
            subprocess.run(["userdel", user], check=False, capture_output=True)
        for name in names:
            subprocess.run(["groupdel", name], check=False, capture_output=True)


@pytest.fixture
def volume() -> Iterator[Path]:
    """The pod's volume (the user's ``~``), with NBSCALE_HOME at ``.nbscale`` inside it, not yet created."""
    folder = Path(tempfile.mkdtemp(prefix="nbs-pv-"))
    (folder / "echo.ipynb").write_bytes((NOTEBOOKS / "echo.ipynb").read_bytes())
    yield folder
    if (folder / ".nbscale").is_dir():
        agent.stop(folder / ".nbscale")
    shutil.rmtree(folder, ignore_errors=True)


def _nbscale(volume: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NBSCALE_HOME": str(volume / ".nbscale"), "COLUMNS": "300"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([NBSCALE, *args], cwd=volume, capture_output=True, text=True, timeout=300, env=env)


def _restart_pod(volume: Path, gid: int) -> None:
    """A pod restart: nbscale's daemons end with the old pod, and kubelet applies the fsGroup again."""
    agent.stop(volume / ".nbscale")
    _kubelet_fs_group(volume, gid)


def _succeeds(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_home_kubelet_gave_to_a_group_of_no_one_else_keeps_working(groups: dict[str, int], volume: Path) -> None:
    home = volume / ".nbscale"
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=1"))
    _succeeds(_nbscale(volume, "runs"))
    _restart_pod(volume, groups[LONE_GROUP])
    assert stat.S_IMODE(home.stat().st_mode) == 0o2770 and home.stat().st_gid == groups[LONE_GROUP]
    assert len(_succeeds(_nbscale(volume, "runs")).strip()) > 0
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=2"))
    _restart_pod(volume, groups[LONE_GROUP])  # the next start, once more
    listed = _succeeds(_nbscale(volume, "runs"))
    assert listed.count("echo") >= 2, listed
    assert stat.S_IMODE(home.stat().st_mode) == 0o2770  # nbscale did not fight kubelet over the group's bits


def test_a_home_kubelet_gave_to_a_group_with_another_member_is_refused(groups: dict[str, int], volume: Path) -> None:
    home = volume / ".nbscale"
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=1"))
    _restart_pod(volume, groups[SHARED_GROUP])
    for command in (["runs"], ["run", "echo.ipynb", "-p", "count=2"]):
        done = _nbscale(volume, *command)
        assert done.returncode != 0, done.stdout + done.stderr
        message = " ".join(done.stderr.split())
        # the pod's ~ is the volume's root, which kubelet gave to the same group: it is the first step refused
        assert f"NBSCALE_HOME {home} lies under {volume}, which other users can write to (mode 2770)" in message, message
        assert "set nbscale_home to a folder of your own" in message.lower()


@pytest.mark.parametrize(("group", "mode", "refused"), [
    (LONE_GROUP, 0o2770, None),
    (LONE_GROUP, 0o2775, None),  # others may only read: tightened, as a home of 0755 is
    (LONE_GROUP, 0o2777, "can be written by other users (mode 2777)"),
    (SHARED_GROUP, 0o2770, "can be written by other users (mode 2770)"),
    (SHARED_GROUP, 0o2750, None),  # the other member may only read: tightened
], ids=["lone-group", "lone-group-others-read", "lone-group-others-write", "shared-group", "shared-group-read"])
@pytest.mark.parametrize("where", ["home", "agent"])
def test_one_rule_for_the_home_and_its_folders(groups: dict[str, int], volume: Path, where: str, group: str, mode: int,
                                               refused: str | None) -> None:
    home = volume / ".nbscale"
    private_folder(private_home(home) / "agent")
    folder = home if where == "home" else home / "agent"
    os.chown(folder, -1, groups[group])
    folder.chmod(mode)
    check = private_home if where == "home" else private_folder
    if refused:
        with pytest.raises(UnsafeFolder) as error:
            check(folder)
        assert refused in error.value.message
        return
    check(folder)
    shared = 0o007 if group == LONE_GROUP else 0o077
    assert stat.S_IMODE(folder.stat().st_mode) & shared == 0  # what another user could read was closed


def _check_home(home: Path) -> int:
    """As the pod's user: the home and its agent folder checked as every command checks them; the home's mode after."""
    private_folder(private_home(home) / "agent")
    return stat.S_IMODE(os.stat(home).st_mode)


@pytest.mark.parametrize(("group", "refused"), [(JOVYAN_GROUP, False), (SHARED_GROUP, True)], ids=["own-primary-group", "group-of-another"])
def test_the_pod_user_s_own_primary_group_is_a_group_of_one(groups: dict[str, int], other_user, group: str, refused: bool) -> None:
    """The docker-stacks case: jovyan's primary group is the fsGroup (users, 100), and no one else is in it."""
    import pwd

    jovyan = pwd.getpwnam(JOVYAN)
    parent = Path(tempfile.mkdtemp(prefix="nbs-pod-"))
    try:
        parent.chmod(0o755)
        os.chown(parent, jovyan.pw_uid, jovyan.pw_gid)  # in the sticky /tmp, the user's own folder (as /home/jovyan's parent is root's in a pod)
        volume = parent / "jovyan"
        volume.mkdir()
        (volume / ".nbscale").mkdir(mode=0o700)
        (volume / ".nbscale" / "agent").mkdir(mode=0o700)
        _kubelet_fs_group(volume, groups[group])
        for path in (volume, volume / ".nbscale", volume / ".nbscale" / "agent"):
            os.chown(path, jovyan.pw_uid, -1)
        as_jovyan = type(other_user)(jovyan.pw_uid, jovyan.pw_gid)  # conftest's OtherUser: a forked child running as that user
        if refused:
            with pytest.raises(UnsafeFolder, match=f"lies under {volume}, which other users can write to \\(mode 2775\\)"):
                as_jovyan.run(_check_home, volume / ".nbscale")
        else:
            assert as_jovyan.run(_check_home, volume / ".nbscale") == 0o2770
    finally:
        shutil.rmtree(parent, ignore_errors=True)
