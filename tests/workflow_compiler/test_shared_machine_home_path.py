"""The path to NBSCALE_HOME on a shared machine: symlinks and folders another user controls (issue 18's follow-up).

Another local user who can change any folder on the way to the home, or who owns a symlink on it,
can point the home at a folder of the victim's: nbscale then made that folder 0700 and wrote its
database into it. Every test here runs the real ``nbscale runs`` against real folders; the other
user's part is played by ``nbscale-attacker`` (conftest's ``other_user``, root only).
"""

from __future__ import annotations

import grp  # noqa: F401 - imported here: the child running as the user cannot read the interpreter's modules under /root
import os
import pwd  # noqa: F401 - as grp
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from workflow_compiler.store import RunStore

NBSCALE = str(Path(sys.executable).parent / "nbscale")
WHAT_TO_DO = "et NBSCALE_HOME to a folder of your own"  # "Set ..." or "... or set ..."


@pytest.fixture
def shared(shared_tmp: Path) -> Path:
    """A folder every user may create things in, sticky like /tmp."""
    return shared_tmp


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder of the caller's that is not meant as a home: readable by all, with a file of its own."""
    folder = tmp_path / "victim"
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "notes.txt").write_text("mine\n")
    return folder


def _nbscale_runs(home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NBSCALE, "runs"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NBSCALE_HOME": str(home), "COLUMNS": "400"})


def _symlink_in_the_shared_folder(shared: Path, victim: Path, other: Any) -> tuple[Path, str]:
    other.run(os.symlink, victim, shared / "home")
    return shared / "home", f"goes through {shared / 'home'}, a symlink in {shared}, which other users can write to"


def _folder_of_the_other_user(shared: Path, victim: Path, other: Any) -> tuple[Path, str]:
    parent = _own_folder_given_to(victim.parent / "p", other)
    return parent / "home", f"lies under {parent}, which belongs to uid {other.uid}"


def _own_folder_given_to(folder: Path, other: Any) -> Path:
    """A folder (0755) the other user owns, in one of the caller's: outside any sticky folder."""
    folder.mkdir(mode=0o755)
    os.chown(folder, other.uid, other.gid)
    return folder


def _symlink_of_the_other_user(shared: Path, victim: Path, other: Any) -> tuple[Path, str]:
    link = victim.parent / "link"
    link.symlink_to(victim)
    os.lchown(link, other.uid, other.gid)
    return link, f"goes through the symlink {link}, which belongs to uid {other.uid}"


def _other_user_s_folder_in_the_shared_folder(shared: Path, victim: Path, other: Any) -> tuple[Path, str]:
    other.run(os.mkdir, shared / "q", 0o777)
    return shared / "q" / "home", f"goes through {shared / 'q'}, which belongs to uid {other.uid}, in {shared}"


def _root_s_folder_in_the_other_user_s_sticky_folder(shared: Path, victim: Path, other: Any) -> tuple[Path, str]:
    """A sticky folder's owner may rename every entry in it, root's too."""
    theirs = _own_folder_given_to(victim.parent / "theirs", other)
    theirs.chmod(0o1777)
    (theirs / "users").mkdir(mode=0o755)
    return theirs / "users" / "home", f"lies under {theirs}, which belongs to uid {other.uid}"


@pytest.mark.parametrize("plant", [_symlink_in_the_shared_folder, _folder_of_the_other_user, _symlink_of_the_other_user,
                                   _other_user_s_folder_in_the_shared_folder, _root_s_folder_in_the_other_user_s_sticky_folder],
                         ids=["symlink-in-sticky-folder", "under-other-users-folder", "other-users-symlink",
                              "other-users-folder-in-sticky-folder", "in-other-users-sticky-folder"])
def test_a_home_reached_through_another_user_s_symlink_or_folder_is_refused(other_user, shared: Path, victim: Path,
                                                                            plant: Callable[..., tuple[Path, str]]) -> None:
    home, problem = plant(shared, victim, other_user)
    done = _nbscale_runs(home)
    message = " ".join(done.stderr.split())
    assert done.returncode != 0 and f"NBSCALE_HOME {home} {problem}" in message, message
    assert WHAT_TO_DO in message
    assert victim.stat().st_mode & 0o777 == 0o755 and sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
    assert not list(shared.rglob("runs.db"))


def test_a_home_swapped_for_a_symlink_later_is_refused_then(other_user, shared: Path, victim: Path) -> None:
    """The reviewer's second route: the caller's own home under a folder the other user can change, swapped between commands."""
    (shared / "pub").mkdir(mode=0o755)  # the caller's, so the other user can reach p
    parent = _own_folder_given_to(shared / "pub" / "p", other_user)
    os.mkdir(parent / "home", 0o700)  # as if an earlier command had made it

    def swap() -> None:
        os.rename(parent / "home", parent / "old")
        os.symlink(victim, parent / "home")

    other_user.run(swap)
    message = " ".join(_nbscale_runs(parent / "home").stderr.split())
    assert f"lies under {parent}, which belongs to uid {other_user.uid}" in message, message
    assert victim.stat().st_mode & 0o777 == 0o755


def _a_folder_not_meant_as_a_home(tmp_path: Path, gid: int) -> tuple[Path, str]:
    folder = tmp_path / "etc"  # as /etc would be to root
    folder.mkdir()
    folder.chmod(0o755)
    (folder / "passwd").write_text("root:x:0:0\n")
    return folder, f"is readable by other users (mode 0755) and holds files nbscale did not make (passwd): run `chmod 700 {folder}`"


def _group_writable_parent(tmp_path: Path, gid: int) -> tuple[Path, str]:
    (tmp_path / "team").mkdir()
    os.chown(tmp_path / "team", -1, gid)
    (tmp_path / "team").chmod(0o775)
    return tmp_path / "team" / "home", f"lies under {tmp_path / 'team'}, which other users can write to (mode 0775)"


def _world_writable_parent(tmp_path: Path, gid: int) -> tuple[Path, str]:
    (tmp_path / "all").mkdir()
    (tmp_path / "all").chmod(0o777)
    return tmp_path / "all" / "home", f"lies under {tmp_path / 'all'}, which other users can write to (mode 0777)"


@pytest.mark.parametrize("prepare", [_group_writable_parent, _world_writable_parent, _a_folder_not_meant_as_a_home],
                         ids=["parent-writable-by-a-group-of-others", "parent-writable-by-all", "not-a-home"])
def test_an_own_path_that_is_not_safe_is_refused_and_left_as_it_is(other_user, tmp_path: Path,
                                                                     prepare: Callable[[Path, int], tuple[Path, str]]) -> None:
    home, problem = prepare(tmp_path, other_user.gid)
    before = [(p, p.stat().st_mode) for p in tmp_path.rglob("*")]
    done = _nbscale_runs(home)
    message = " ".join(done.stderr.split())
    assert done.returncode != 0 and f"NBSCALE_HOME {home} {problem}" in message, message
    assert [(p, p.stat().st_mode) for p in tmp_path.rglob("*")] == before  # nothing chmodded, nothing created


def _own_symlink_to_a_new_folder(base: Path, shared: Path) -> Path:
    (base / "link").symlink_to(base / "real")
    return base / "link"


def _own_symlink_in_the_shared_folder(base: Path, shared: Path) -> Path:
    """Only its owner (and root, and the sticky folder's owner, root here) can remove or replace it."""
    (shared / "mylink").symlink_to(base / "real")
    return shared / "mylink"


def _own_folder_in_the_shared_folder(base: Path, shared: Path) -> Path:
    return shared / "mine" / "home"


def _directly_in_the_shared_folder(base: Path, shared: Path) -> Path:
    return shared / "home"


def _under_root_s_folder_in_the_shared_folder(base: Path, shared: Path) -> Path:
    """/scratch (1777) -> /scratch/users (root's, 0755) -> /scratch/users/alice (the user's): only root can rename users."""
    return shared / "users" / "alice" / "home"


def _under_a_folder_only_the_caller_s_group_may_write(base: Path, shared: Path) -> Path:
    """A pod's volume under its fsGroup (mode 2775): the user's own group, no one else in it, named private."""
    (base / "volume").mkdir()
    (base / "volume").chmod(0o2775)
    os.environ["NBSCALE_PRIVATE_GROUP"] = str(os.getegid())  # in the child running as the user only
    return base / "volume" / "home"


def _an_older_home_others_may_read(base: Path, shared: Path) -> Path:
    (base / "old").mkdir()
    (base / "old").chmod(0o755)
    (base / "old" / "runs.db").touch()
    return base / "old"


def _prepare_and_list(prepare: Callable[[Path, Path], Path], base: Path, shared: Path) -> tuple[int, bool]:
    """As the user: the case prepared, and its runs listed as ``nbscale runs`` does, in this process (the user cannot run
    the test's interpreter, which lies under root's home); (the home's mode, a runs.db in it)."""
    home = prepare(base, shared)
    os.environ["NBSCALE_HOME"] = str(home)
    RunStore().list()
    real = home.resolve()
    return real.stat().st_mode & 0o777, (real / "runs.db").is_file()


@pytest.mark.parametrize("prepare", [_own_symlink_to_a_new_folder, _own_symlink_in_the_shared_folder, _own_folder_in_the_shared_folder,
                                     _directly_in_the_shared_folder, _under_root_s_folder_in_the_shared_folder,
                                     _under_a_folder_only_the_caller_s_group_may_write, _an_older_home_others_may_read],
                         ids=["own-symlink", "own-symlink-in-sticky-folder", "own-folder-in-sticky-folder", "in-sticky-folder",
                              "under-root-s-folder-in-sticky-folder", "own-group-writable", "older-home"])
def test_own_homes_still_work_and_end_private(other_user, shared: Path, prepare: Callable[[Path, Path], Path]) -> None:
    """As a real user who is not root, for whom root's folders are not their own."""
    base = shared / "base"
    base.mkdir(mode=0o755)
    os.chown(base, other_user.uid, other_user.gid)
    (shared / "users").mkdir(mode=0o755)  # the admin's
    (shared / "users" / "alice").mkdir(mode=0o755)
    os.chown(shared / "users" / "alice", other_user.uid, other_user.gid)
    assert other_user.run(_prepare_and_list, prepare, base, shared) == (0o700, True)
