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
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workflow_compiler.errors import UnsafeFolder
from workflow_compiler.private_files import PRIVATE_GROUP_SETTING, _group_of_one, private_folder, private_home
from workflow_compiler.tracking import agent

NBSCALE = str(Path(sys.executable).parent / "nbscale")
NOTEBOOKS = Path(__file__).parent / "notebooks"
PREFIX = "nbsfs"  # throwaway groups and users are PREFIX<pid of the test run>-<role>: a killed run's are swept by the next
LONE_GROUP, SHARED_GROUP, JOVYAN_GROUP = "lone", "shared", "users"  # users (100) in the docker-stacks image holds only jovyan
MEMBER, JOVYAN = "member", "jovyan"


def _name(role: str) -> str:
    return f"{PREFIX}{os.getpid()}-{role}"


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


def _sweep_left_behind() -> None:
    """Remove the throwaway users and groups of test runs that are no longer running (a killed run's)."""
    import pwd

    def stale(name: str) -> bool:
        run = name[len(PREFIX):].partition("-")[0]
        return name.startswith(PREFIX) and run.isdigit() and not Path(f"/proc/{run}").exists()

    for user in [p.pw_name for p in pwd.getpwall() if stale(p.pw_name)]:
        subprocess.run(["userdel", user], check=False, capture_output=True)
    for group in [g.gr_name for g in grp.getgrall() if stale(g.gr_name)]:
        subprocess.run(["groupdel", group], check=False, capture_output=True)


@pytest.fixture(scope="module")
def groups() -> Iterator[dict[str, int]]:
    """Three throwaway groups: one nobody is in (a pod's fsGroup), one with another user in it, jovyan's primary group;
    named for this run and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("making groups and users needs root (groupadd, useradd); these tests run as root in CI")
    _sweep_left_behind()
    roles = (LONE_GROUP, SHARED_GROUP, JOVYAN_GROUP)
    try:
        for role in roles:
            subprocess.run(["groupadd", _name(role)], check=True, capture_output=True)
        for user, group in ((MEMBER, SHARED_GROUP), (JOVYAN, JOVYAN_GROUP)):
            subprocess.run(["useradd", "-M", "-N", "-g", _name(group), "-s", "/usr/sbin/nologin", _name(user)],
                           check=True, capture_output=True)
        yield {role: grp.getgrnam(_name(role)).gr_gid for role in roles}
    finally:
        for user in (MEMBER, JOVYAN):
            subprocess.run(["userdel", _name(user)], check=False, capture_output=True)
        for role in roles:
            subprocess.run(["groupdel", _name(role)], check=False, capture_output=True)


@pytest.fixture
def in_group(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """``in_group(gid)``: this test process is in ``gid`` (as a pod's processes are in its fsGroup) and names it as
    the private group; both undone afterwards."""
    before = os.getgroups()

    def join(gid: int) -> None:
        os.setgroups([*before, gid])
        monkeypatch.setenv(PRIVATE_GROUP_SETTING, str(gid))
        _group_of_one.cache_clear()

    yield join
    os.setgroups(before)
    _group_of_one.cache_clear()


@pytest.fixture
def volume() -> Iterator[Path]:
    """The pod's volume (the user's ``~``), with NBSCALE_HOME at ``.nbscale`` inside it, not yet created."""
    folder = Path(tempfile.mkdtemp(prefix="nbs-pv-"))
    (folder / "echo.ipynb").write_bytes((NOTEBOOKS / "echo.ipynb").read_bytes())
    yield folder
    if (folder / ".nbscale").is_dir():
        agent.stop(folder / ".nbscale")
    shutil.rmtree(folder, ignore_errors=True)


def _nbscale(volume: Path, *args: str, group: int | None = None) -> subprocess.CompletedProcess[str]:
    """``nbscale`` on the volume; with ``group``, in that group and naming it private, as the pod's user under its fsGroup."""
    env = {**os.environ, "NBSCALE_HOME": str(volume / ".nbscale"), "COLUMNS": "300"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop(PRIVATE_GROUP_SETTING, None)
    if group is not None:
        env[PRIVATE_GROUP_SETTING] = str(group)
    return subprocess.run([NBSCALE, *args], cwd=volume, capture_output=True, text=True, timeout=300, env=env,
                          extra_groups=[group] if group is not None else None)


def _restart_pod(volume: Path, gid: int) -> None:
    """A pod restart: nbscale's daemons end with the old pod, and kubelet applies the fsGroup again."""
    agent.stop(volume / ".nbscale")
    _kubelet_fs_group(volume, gid)


def _succeeds(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_home_kubelet_gave_to_a_group_of_no_one_else_keeps_working(groups: dict[str, int], volume: Path) -> None:
    home, lone = volume / ".nbscale", groups[LONE_GROUP]
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=1"))
    _succeeds(_nbscale(volume, "runs"))
    _restart_pod(volume, lone)
    assert stat.S_IMODE(home.stat().st_mode) == 0o2770 and home.stat().st_gid == lone
    assert len(_succeeds(_nbscale(volume, "runs", group=lone)).strip()) > 0
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=2", group=lone))
    _restart_pod(volume, lone)  # the next start, once more
    listed = _succeeds(_nbscale(volume, "runs", group=lone))
    assert listed.count("echo") >= 2, listed
    assert stat.S_IMODE(home.stat().st_mode) == 0o2770  # nbscale did not fight kubelet over the group's bits


@pytest.mark.parametrize("setting", ["unset", "another-group"])
def test_a_group_not_named_private_shares_even_when_no_one_else_is_in_it(groups: dict[str, int], volume: Path, setting: str) -> None:
    """Fails closed: without the opt-in (or naming another gid), group write is others' write, as before the fsGroup rule."""
    home = volume / ".nbscale"
    _succeeds(_nbscale(volume, "runs"))
    _restart_pod(volume, groups[LONE_GROUP])
    env = {} if setting == "unset" else {PRIVATE_GROUP_SETTING: str(groups[JOVYAN_GROUP])}
    done = subprocess.run([NBSCALE, "runs"], cwd=volume, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "300", **env}, extra_groups=[groups[LONE_GROUP]])
    message = " ".join(done.stderr.split())
    assert done.returncode != 0 and f"lies under {volume}, which other users can write to (mode 2770)" in message, message


def test_a_home_kubelet_gave_to_a_group_with_another_member_is_refused(groups: dict[str, int], volume: Path) -> None:
    home = volume / ".nbscale"
    _succeeds(_nbscale(volume, "run", "echo.ipynb", "-p", "count=1"))
    _restart_pod(volume, groups[SHARED_GROUP])
    for command in (["runs"], ["run", "echo.ipynb", "-p", "count=2"]):
        done = _nbscale(volume, *command, group=groups[SHARED_GROUP])  # named private, but another user is in it
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
def test_one_rule_for_the_home_and_its_folders(groups: dict[str, int], in_group: Callable[[int], None], volume: Path, where: str,
                                               group: str, mode: int, refused: str | None) -> None:
    home = volume / ".nbscale"
    in_group(groups[group])
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


def _pod_volume(owner: tuple[int, int], gid: int) -> tuple[Path, Path]:
    """(a parent to remove afterwards, a volume in it): both the ``owner``'s, the volume given to ``gid`` as kubelet does,
    with a home and its agent folder in it."""
    parent = Path(tempfile.mkdtemp(prefix="nbs-pod-"))
    parent.chmod(0o755)
    os.chown(parent, *owner)  # in the sticky /tmp, the user's own folder (as /home/jovyan's parent is root's in a pod)
    volume = parent / "jovyan"
    volume.mkdir()
    (volume / ".nbscale").mkdir(mode=0o700)
    (volume / ".nbscale" / "agent").mkdir(mode=0o700)
    _kubelet_fs_group(volume, gid)
    for path in (volume, volume / ".nbscale", volume / ".nbscale" / "agent"):
        os.chown(path, owner[0], -1)
    return parent, volume


@pytest.mark.parametrize(("group", "named", "refused"), [(JOVYAN_GROUP, "gid", False), (JOVYAN_GROUP, "name", False),
                                                        (JOVYAN_GROUP, "unset", True), (SHARED_GROUP, "gid", True)],
                         ids=["own-primary-group", "own-primary-group-by-name", "own-primary-group-not-named", "group-of-another"])
def test_the_pod_user_s_own_primary_group_is_a_group_of_one(groups: dict[str, int], other_user, monkeypatch: pytest.MonkeyPatch,
                                                             group: str, named: str, refused: bool) -> None:
    """The docker-stacks case: jovyan's primary group is the fsGroup (users, 100), named private, and no one else is in it."""
    import pwd

    jovyan = pwd.getpwnam(_name(JOVYAN))
    if named != "unset":
        monkeypatch.setenv(PRIVATE_GROUP_SETTING, str(groups[group]) if named == "gid" else _name(group))
    parent, volume = _pod_volume((jovyan.pw_uid, jovyan.pw_gid), groups[group])
    try:
        as_jovyan = type(other_user)(jovyan.pw_uid, jovyan.pw_gid)  # conftest's OtherUser: a forked child running as that user
        if refused:
            with pytest.raises(UnsafeFolder, match=f"lies under {volume}, which other users can write to \\(mode 2775\\)"):
                as_jovyan.run(_check_home, volume / ".nbscale")
        else:
            assert as_jovyan.run(_check_home, volume / ".nbscale") == 0o2770
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def _unused_gid() -> int:
    gid = 4242
    while True:
        try:
            grp.getgrgid(gid)
        except KeyError:
            return gid
        gid += 1


def test_a_group_the_group_database_does_not_know_shares_even_when_named(other_user, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reviewer's case: the caller's own gid has no entry in /etc/group, so its members cannot be seen; a process
    of another user with that gid could swap the home. Refused, though the setting names the gid."""
    gid = _unused_gid()
    monkeypatch.setenv(PRIVATE_GROUP_SETTING, str(gid))
    parent, volume = _pod_volume((other_user.uid, gid), gid)
    try:
        as_caller = type(other_user)(other_user.uid, gid)
        with pytest.raises(UnsafeFolder, match=f"lies under {volume}, which other users can write to \\(mode 2775\\)"):
            as_caller.run(_check_home, volume / ".nbscale")
    finally:
        shutil.rmtree(parent, ignore_errors=True)
