"""The sweep's log file: Ray Tune's own messages go there, not to the driver's console.

Tune logs every failed trial with its full Ray traceback (~35 lines each) at ERROR. The console
shows a short summary instead (the error column of the results table); the tracebacks stay in
``sweeps/<id>/driver.log`` for whoever needs them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: In a sweep's folder: what Ray Tune logged while the sweep ran.
DRIVER_LOG = "driver.log"
_TUNE_LOGGER = "ray.tune"


@contextmanager
def tune_logs_to(path: Path) -> Iterator[None]:
    """While the block runs, ``ray.tune``'s records go to ``path`` (appended) and not to Ray's console handler."""
    logger = logging.getLogger(_TUNE_LOGGER)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)
        handler.close()


@contextmanager
def logger_level(name: str, level: int) -> Iterator[None]:
    """While the block runs, logger ``name`` passes records of ``level`` and above only (a chatty library's INFO or retries)."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
