"""Private state on a shared machine: the home folder, files in it, and the daemons' sockets.

JupyterHub without containers (SimpleLocalProcessSpawner, SystemdSpawner) and shared lab servers
put many users on one machine, and anything another user can write into ``NBSCALE_HOME`` can be
turned against its owner: a planted ``agent/`` folder with symlinked pid and log files made root
overwrite files of the attacker's choice, and a planted socket received root's environment. So:

- ``private_home`` refuses a home folder that the current user does not own or that others can
  write to (``UnsafeFolder``, with what to do), creates a missing one 0700 and tightens an own one
  that others may read; ``private_folder`` does the same for a folder inside it (``agent/``).
- Files there are opened with ``O_NOFOLLOW`` (and ``O_EXCL`` where they are created), mode 0600,
  and processes nbscale starts under the home run with ``PRIVATE_UMASK``.
- Every daemon socket checks its peer with ``SO_PEERCRED``, on both sides: a server accepts only
  its own user, a client talks only to a server of its own user (``connect_own``, ``is_own_peer``).

The folders above the home are not checked: a home under another user's writable folder is
refused because that user could have created it, and ``/tmp``'s sticky bit keeps others from
renaming a folder they do not own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import UnsafeFolder

log = logging.getLogger(__name__)

#: The umask of every process nbscale starts under its home: files 0600, folders 0700.
PRIVATE_UMASK = 0o077
FILE_MODE, FOLDER_MODE = 0o600, 0o700
_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_home(path: Path) -> Path:
    """``path`` as nbscale's home: created 0700 when missing; refused (UnsafeFolder) when it is not private."""
    return _private(path, what="NBSCALE_HOME", follow=True)


def private_folder(path: Path) -> Path:
    """A folder inside the home (``agent/``, ``runs/<id>``): created 0700, refused like the home when it is not private."""
    return _private(path, what=f"{path.name}/ in NBSCALE_HOME", follow=False)


def _private(path: Path, *, what: str, follow: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, FOLDER_MODE)
    info = os.stat(path) if follow else os.lstat(path)  # a home may be a symlink the user made; a folder inside it may not
    uid = os.geteuid()
    problem, remedy = None, "Remove it"
    if not stat.S_ISDIR(info.st_mode):
        problem = "is not a folder (a symlink or a file took its place)"
    elif info.st_uid != uid:
        problem = f"belongs to uid {info.st_uid}, not to you (uid {uid})"
    elif info.st_mode & 0o022:
        problem = f"can be written by other users (mode {stat.S_IMODE(info.st_mode):04o})"
        remedy = f"If only you have written there (an older nbscale, a umask of 002), run `chmod 700 {path}`; otherwise remove it"
    if problem:
        raise UnsafeFolder(
            f"{what} {path} {problem}: another user could plant files there that nbscale would trust. "
            f"{remedy} (after checking what is inside) or set NBSCALE_HOME to a folder of your own; "
            f"nbscale creates it private (0700).", path=str(path))
    if stat.S_IMODE(info.st_mode) & 0o077:  # ours and not writable by others: only reading is left to close
        log.info("making %s private (mode %04o -> 0700)", path, stat.S_IMODE(info.st_mode))
        os.chmod(path, FOLDER_MODE)
    return path


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
