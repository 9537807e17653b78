"""Files derived from other files, kept in ``$NBSCALE_HOME/cache`` so that the next process skips the work.

The compiled notebook validator (``notebook_schema.py``), the parsed CRD YAML and the vendored CRDs'
digests (``crd_schemas.py``) are slow to derive and the same in every process. One set of rules for
all of them, since a cache file is code or data the next process trusts:

- **Never outside a private home.** The home is not created for a cache (reading a notebook or
  validating a manifest has no side effect); a home that is not the user's alone (``private_home``
  refuses it) is neither read nor written, and the work is simply done again.
- **Private, and never through a link.** The ``cache/`` folder is checked like ``agent/``
  (``private_folder``) before anything is read from it; files are opened with ``O_NOFOLLOW`` and
  written 0600 through a new temporary file and a rename, so a concurrent process never reads half a file.
- **Keyed by all that decides the content.** The caller's key names its inputs (a digest of them, or
  a file's identity from ``file_identity``) and the versions of the tools that derive it; a copy that
  does not load is derived again and replaced.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import NbscaleError
from .private_files import open_private, private_folder, private_home, write_private
from .tracking_uri import nbscale_home

log = logging.getLogger(__name__)

T = TypeVar("T")

#: A file changed less than this long ago may change again within its timestamp's resolution
#: unseen (git's "racy" entries): its identity is not trusted as a key until it is older.
RACY_SECONDS = 2.0


def file_identity(path: Path, info: os.stat_result | None = None) -> bytes | None:
    """What changes whenever ``path``'s content does (device, inode, size, mtime and ctime), or None.

    None when the file was changed in the last ``RACY_SECONDS``: a rewrite within the same
    timestamp tick would keep every field, so such a file is read afresh until it has settled.
    A rename over it (how editors and Jupyter save) gives a new inode; ``utime`` cannot set ctime.
    ``info``: the file's stat when the caller has it (``os.fstat`` of the file it reads).
    """
    info = info or os.stat(path)
    if time.time_ns() - max(info.st_mtime_ns, info.st_ctime_ns) < RACY_SECONDS * 1e9:
        return None
    fields = (os.path.realpath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return "\0".join(map(str, fields)).encode()


def cached_in_home(name: str, key: bytes, make: Callable[[], T], *, dump: Callable[[T], bytes],
                   load: Callable[[bytes], T], suffix: str = "") -> T:
    """``make()``, or what an earlier process cached for ``key`` under ``$NBSCALE_HOME/cache/NAME-…SUFFIX``.

    ``load`` turns the cached bytes back (raising ``ValueError``, ``TypeError`` or ``EOFError`` for a
    copy it cannot use, which is then replaced); ``dump`` writes a fresh result.
    """
    folder = _cache_folder()
    if folder is None:
        return make()
    path = folder / f"{name}-{hashlib.sha256(key).hexdigest()[:20]}{suffix}"
    try:
        return load(_read_private(path))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, EOFError) as exc:
        log.debug("not using the cached %s: %s", path.name, exc)
    value = make()
    try:
        write_private(path, dump(value))
    except OSError as exc:
        log.debug("could not cache %s: %s", path.name, exc)
    return value


def _cache_folder() -> Path | None:
    """``$NBSCALE_HOME/cache`` when the home exists and both are private; None (no cache) otherwise."""
    home = nbscale_home()
    try:
        if not home.is_dir():
            return None
        return private_folder(private_home(home) / "cache")
    except (NbscaleError, OSError) as exc:  # a home that is not private is neither read nor written
        log.debug("not caching in %s: %s", home, exc)
        return None


def _read_private(path: Path) -> bytes:
    with os.fdopen(open_private(path, os.O_RDONLY), "rb") as handle:
        return handle.read()
