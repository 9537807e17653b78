"""Private state on a shared machine: the home folder, files in it, and the daemons' sockets.

JupyterHub without containers (SimpleLocalProcessSpawner, SystemdSpawner) and shared lab servers
put many users on one machine, and anything another user can write into ``NBSCALE_HOME`` can be
turned against its owner: a planted ``agent/`` folder with symlinked pid and log files made root
overwrite files of the attacker's choice, and a planted socket received root's environment. So:

- ``private_home`` refuses a home folder that the current user does not own or that others can
  write to (``UnsafeFolder``, with what to do), creates a missing one 0700 and tightens an own one
  that others may read when it is empty or holds nbscale's files (never a folder such as /etc);
  ``private_folder`` does the same for a folder inside it (``agent/``). Both open the folder with
  ``O_NOFOLLOW`` and check and ``fchmod`` that descriptor, so nothing is changed through a symlink.
  "Others" is one rule, ``shared_bits``: a group counts as others unless ``NBSCALE_PRIVATE_GROUP`` names
  it and it holds the caller alone (a pod's volume under its ``fsGroup``, which kubelet makes
  group-writable at each pod start; the image sets the setting to that gid).
- Files there are opened with ``O_NOFOLLOW`` (and ``O_EXCL`` where they are created), mode 0600,
  and processes nbscale starts under the home run with ``PRIVATE_UMASK``.
- Every daemon socket checks its peer with ``SO_PEERCRED``, on both sides: a server accepts only
  its own user, a client talks only to a server of its own user (``connect_own``, ``is_own_peer``).

The way to the home is checked too, one entry at a time from ``/`` (all the way, not only up to
``~`` as ssh's StrictModes does): every folder above it must be the user's or root's and writable
by no one else, unless it is sticky like ``/tmp`` (and itself the user's or root's), whose entries
on the way must then be the user's or root's too, folders or symlinks: no one else can rename
those. A symlink is followed only when the user or root owns it. Whoever else could change a step could
otherwise put a folder of their choice (the user's own ``~``, ``/etc``) where the home should be.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from .errors import UnsafeFolder

log = logging.getLogger(__name__)

#: The umask of every process nbscale starts under its home: files 0600, folders 0700.
PRIVATE_UMASK = 0o077
FILE_MODE, FOLDER_MODE = 0o600, 0o700
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_home(path: Path) -> Path:
    """``path`` as nbscale's home: created 0700 when missing; refused (UnsafeFolder) when it is not private,
    or when another user could swap it or any folder or symlink on the way to it (``_walk``)."""
    real, missing = _walk(path)
    if missing:
        _make(real, missing)
        real, missing = _walk(path)  # what exists now is checked again: another user may have won a race in a sticky folder
    _check_folder(real, shown=path, what="NBSCALE_HOME", may_tighten=_looks_like_a_home)
    return path


def private_folder(path: Path) -> Path:
    """A folder inside the home (``agent/``, ``runs/<id>``): created 0700, refused like the home when it is not private."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, FOLDER_MODE)
    _check_folder(path, shown=path, what=f"{path.name}/ in NBSCALE_HOME", may_tighten=lambda _fd: True)
    return path


#: What nbscale keeps in a home: an existing folder others may read is tightened only when it is empty or holds one.
_HOME_ENTRIES = frozenset({"runs.db", "mlflow.db", "agent", "runs", "sweeps", "cache"})
_MAX_SYMLINKS = 40  # as the kernel's own limit on a path's symlinks (ELOOP)


def _walk(path: Path) -> tuple[Path, list[str]]:
    """``path`` resolved one entry at a time from ``/``, each checked (``_check_entry``): (the real path of what
    exists, the names still to create). Written here because ``os.path.realpath`` tells nothing of who owns each step."""
    todo = list(reversed(Path(os.getcwd(), path).parts[1:]))
    current, links = Path("/"), 0
    _check_ancestor(current, os.lstat(current), shown=path)
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = current.parent
            continue
        entry = current / name
        try:
            info = os.lstat(entry)
        except FileNotFoundError:
            return current, [name, *reversed(todo)]
        _check_entry(entry, info, os.lstat(current), shown=path, last=not todo)
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_SYMLINKS:
                raise _unsafe(path, f"goes through more than {_MAX_SYMLINKS} symlinks")
            target = Path(os.readlink(entry))
            todo.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
            current = Path("/") if target.is_absolute() else current
            continue
        current = entry
    return current, []


def _check_entry(entry: Path, info: os.stat_result, parent: os.stat_result, *, shown: Path, last: bool) -> None:
    """One step on the way to the home: in a shared sticky folder (whose owner ``_check_ancestor`` asked to be the caller
    or root) only an entry of the caller's or root's, which only they can rename; a symlink only the caller's or root's;
    a folder above the home only the caller's or root's, and writable by its owner alone."""
    uid, is_link = os.geteuid(), stat.S_ISLNK(info.st_mode)
    sticky_shared = shared_bits(parent) & 0o022 and parent.st_mode & stat.S_ISVTX
    if sticky_shared and info.st_uid not in (uid, 0) and (is_link or not last):
        owner = "a symlink" if is_link else f"which belongs to uid {info.st_uid},"
        raise _unsafe(shown, f"goes through {entry}, {owner} in {entry.parent}, which other users can write to")
    if is_link and info.st_uid not in (uid, 0):
        raise _unsafe(shown, f"goes through the symlink {entry}, which belongs to uid {info.st_uid}")
    if not is_link and not last:
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeFolder(f"NBSCALE_HOME {shown} goes through {entry}, which is not a folder: set NBSCALE_HOME to a folder "
                               f"of your own.", path=str(shown))
        _check_ancestor(entry, info, shown=shown)


def _check_ancestor(folder: Path, info: os.stat_result, *, shown: Path) -> None:
    """A folder above the home: the caller's or root's, and writable by others only when sticky (``shared_bits``)."""
    if info.st_uid not in (os.geteuid(), 0):
        raise _unsafe(shown, f"lies under {folder}, which belongs to uid {info.st_uid}")
    if not info.st_mode & stat.S_ISVTX and shared_bits(info) & 0o022:
        raise _unsafe(shown, f"lies under {folder}, which other users can write to (mode {stat.S_IMODE(info.st_mode):04o}){_group_hint(info)}")


#: The one group whose write bits may count as private: a gid or name, set where a pod's ``fsGroup`` is the user's alone.
PRIVATE_GROUP_SETTING = "NBSCALE_PRIVATE_GROUP"


def shared_bits(info: os.stat_result) -> int:
    """The permission bits of ``info`` that let a user other than the caller in: "other"'s, and the group's unless the
    group is opted in (``PRIVATE_GROUP_SETTING``) and holds the caller alone (``_group_of_one``). Fails closed: a group
    that is not named, or whose members cannot all be seen, shares. Why the opt-in: kubelet makes a pod's volume under
    ``fsGroup`` group-writable at each start, and there the group is the user's alone (``users`` in docker-stacks)."""
    mode = stat.S_IMODE(info.st_mode)
    group = mode & 0o070 if mode & 0o070 and not _is_private_group(info.st_gid) else 0
    return mode & 0o007 | group


def _group_hint(info: os.stat_result) -> str:
    """What to set when only the group may write (a pod's fsGroup): nothing is said when others may write anyway."""
    if info.st_mode & 0o002 or not info.st_mode & 0o020:
        return ""
    return (f" by its group (gid {info.st_gid}), which counts as other users unless {PRIVATE_GROUP_SETTING} names it and "
            f"you alone are in it")


def _is_private_group(gid: int) -> bool:
    """Whether ``gid`` is the group the setting names and it holds the caller alone."""
    named = os.environ.get(PRIVATE_GROUP_SETTING, "").strip()
    return bool(named) and _named_gid(named) == gid and _group_of_one(os.geteuid(), gid)


@functools.cache  # the warning once per process, not at every step of every path
def _named_gid(named: str) -> int | None:
    """The gid a setting names (a number or a group name); None for a name the group database does not know."""
    import grp

    if named.isdigit():
        return int(named)
    try:
        return grp.getgrnam(named).gr_gid
    except KeyError:
        log.warning("%s=%s names no known group: group-writable folders count as shared", PRIVATE_GROUP_SETTING, named)
        return None


@functools.cache  # per (uid, gid) for the process: a 6-level path asks a dozen times, and getpwall() reads every user
def _group_of_one(uid: int, gid: int) -> bool:
    """``gid`` is the caller's own group, the group database knows it, and no other user is a listed or primary member.
    Users the passwd database does not enumerate (LDAP, SSSD) are why the opt-in is needed at all."""
    import grp
    import pwd

    if gid != os.getegid() and gid not in os.getgroups():
        return False
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        return False
    try:
        own_name = {pwd.getpwuid(uid).pw_name}
    except KeyError:
        own_name = set()
    return not listed - own_name and not any(p.pw_gid == gid and p.pw_uid != uid for p in pwd.getpwall())


def _unsafe(shown: Path, problem: str) -> UnsafeFolder:
    return UnsafeFolder(
        f"NBSCALE_HOME {shown} {problem}: another user could put a folder of their choice in its place. "
        f"Set NBSCALE_HOME to a folder of your own whose parents only you and root can change (~/.nbscale, the default, is one).",
        path=str(shown))


def _make(real: Path, missing: list[str]) -> None:
    """Create the missing folders below ``real`` (which ``_walk`` checked): the home 0700, the ones above it 0755."""
    for i, name in enumerate(missing):
        real = real / name
        with contextlib.suppress(FileExistsError):  # made meanwhile: the next walk checks whose it is
            os.mkdir(real, FOLDER_MODE if i == len(missing) - 1 else 0o755)


def _looks_like_a_home(fd: int) -> bool:
    """Whether an existing folder others may read is nbscale's to tighten: empty, or holding what nbscale keeps there."""
    names = set(os.listdir(fd))
    return not names or bool(names & _HOME_ENTRIES)


def _check_folder(path: Path, *, shown: Path, what: str, may_tighten: Callable[[int], bool]) -> None:
    """``path`` is a folder of this user's that no one else can write to, opened without following a symlink;
    one others may only read is made 0700 when ``may_tighten`` agrees, else refused."""
    uid = os.geteuid()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        raise _not_private(shown, what, "is not a folder (a symlink or a file took its place)") from None
    try:
        info = os.fstat(fd)
        if info.st_uid != uid:
            raise _not_private(shown, what, f"belongs to uid {info.st_uid}, not to you (uid {uid})")
        mode, shared = stat.S_IMODE(info.st_mode), shared_bits(info)
        if shared & 0o022:
            raise _not_private(shown, what, f"can be written by other users (mode {mode:04o}){_group_hint(info)}", remedy=(
                f"If only you have written there (an older nbscale, a umask of 002), run `chmod 700 {shown}`; otherwise remove it"))
        if shared:  # ours and not writable by others: only reading is left to close
            if not may_tighten(fd):  # a folder of the user's that is no home (/etc to root) keeps its mode
                kept = ", ".join(sorted(os.listdir(fd))[:3])
                raise UnsafeFolder(f"{what} {shown} is readable by other users (mode {mode:04o}) and holds files nbscale did not make "
                                   f"({kept}): run `chmod 700 {shown}` if it is meant as nbscale's home, or set NBSCALE_HOME to a "
                                   f"folder of your own; nbscale creates it private (0700).", path=str(shown))
            log.info("making %s private (mode %04o -> 0700)", shown, mode)
            os.fchmod(fd, FOLDER_MODE)
    finally:
        os.close(fd)


def _not_private(shown: Path, what: str, problem: str, *, remedy: str = "Remove it") -> UnsafeFolder:
    return UnsafeFolder(
        f"{what} {shown} {problem}: another user could plant files there that nbscale would trust. "
        f"{remedy} (after checking what is inside) or set NBSCALE_HOME to a folder of your own; nbscale creates it private (0700).", path=str(shown))


def open_private(path: Path, flags: int, *, create_new: bool = False) -> int:
    """``os.open`` of a file mode 0600 that never follows a symlink; ``create_new`` adds ``O_EXCL``."""
    flags |= _NOFOLLOW | (os.O_CREAT | os.O_EXCL if create_new else 0)
    return os.open(path, flags, FILE_MODE)


def append_private(path: Path) -> IO[bytes]:
    """``path`` opened to append bytes (a log), created 0600, never through a symlink."""
    return os.fdopen(open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab")


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, mode 0600, through a new temporary file and a rename (no symlink followed)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = open_private(tmp, os.O_WRONLY, create_new=True)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def touch_private(path: Path) -> None:
    """Create ``path`` empty and 0600 unless it exists (a database SQLite then fills with the same mode)."""
    with contextlib.suppress(FileExistsError):
        os.close(open_private(path, os.O_WRONLY, create_new=True))


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """This process's umask is ``PRIVATE_UMASK`` inside the block (what it creates, and what it starts)."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


# -- daemon sockets ----------------------------------------------------------------------------

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a connected Unix socket, as the kernel saw it."""
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return pid, uid


def is_own_peer(sock: socket.socket) -> bool:
    """Whether the other end of ``sock`` runs as this process's user."""
    return peer_credentials(sock)[1] == os.geteuid()


class ForeignPeer(ConnectionRefusedError):
    """The socket is served by another user's process: nothing is sent to it."""


def connect_own(path: str | os.PathLike[str], *, timeout: float | None = None) -> socket.socket:
    """A Unix socket connected to ``path`` whose server runs as this user; ForeignPeer (an OSError) otherwise."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
        _pid, uid = peer_credentials(sock)
    except OSError:
        sock.close()
        raise
    if uid != os.geteuid():
        sock.close()
        log.warning("not talking to %s: its server runs as uid %s, not as this user", path, uid)
        raise ForeignPeer(f"{path} is served by uid {uid}, not by this user")
    return sock


def accept_own(server: socket.socket) -> socket.socket:
    """The next connection to ``server`` from this user; another user's is closed unheard. Raises what ``accept`` raises."""
    while True:
        conn, _ = server.accept()
        if is_own_peer(conn):
            return conn
        log.warning("refused a connection from uid %s", peer_credentials(conn)[1])
        conn.close()
