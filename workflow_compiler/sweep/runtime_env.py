"""Trial actors that start on Ray's idle workers instead of new processes.

Tune gives its trainable actors a runtime environment of their own (``PL_DISABLE_FORK=1``, for
PyTorch Lightning). Ray cannot place an actor whose runtime environment is not empty on the
workers it keeps idle (it starts them with ``ray.init``), so every sweep started new worker
processes through its runtime-env agent: 7-8 s on 2 cores before the first trial, against 1-2 s
on the idle workers and ~4 s for plain new ones. ``default_runtime_env()`` empties Tune's
defaults while our trainables are registered, and each trial's sandbox sets ``PL_DISABLE_FORK``
itself (``TRIAL_ENV``), so Lightning notebooks see what Tune would have given them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: Set in every trial's environment, as Tune would have set it in its actors.
TRIAL_ENV = {"PL_DISABLE_FORK": "1"}


@contextmanager
def default_runtime_env() -> Iterator[None]:
    """While active, Tune registers trainables with no environment variables of its own."""
    import importlib

    try:
        defaults = getattr(importlib.import_module("ray.tune.execution.class_cache"), "DEFAULT_ENV_VARS", None)
    except ImportError:
        defaults = None
    if not isinstance(defaults, dict):  # another Ray layout: Tune's defaults stay, actors only start slower
        yield
        return
    saved = dict(defaults)
    defaults.clear()
    try:
        yield
    finally:
        defaults.update(saved)

