"""Putting a rewritten file's old times back, as a test of "same size and mtime, new content" means it."""

from __future__ import annotations

import os
import time
from pathlib import Path


def restore_old_times(path: Path, before: os.stat_result) -> None:
    """Give ``path`` its atime and mtime of ``before`` again, once its ctime differs from ``before``'s.

    ``utime`` cannot set ctime: each call sets it to now. A rewrite microseconds after the first
    write moves ctime on kernels with fine file timestamps (6.13 and later), but may not on older
    ones, whose file times advance one clock tick (1-10 ms) at a time; so this retries (after a
    pause) until ctime has moved, as it has for any real save a moment later.
    """
    deadline = time.monotonic() + 5
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    while os.stat(path).st_ctime_ns == before.st_ctime_ns and time.monotonic() < deadline:
        time.sleep(0.05)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_mtime_ns, after.st_ctime_ns != before.st_ctime_ns) == (before.st_mtime_ns, True)
