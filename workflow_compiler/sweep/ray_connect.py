"""How a sweep's driver gets its Ray: ``RAY_ADDRESS``, this machine's warm Ray head, or a Ray of its own.

``ensure_ray()`` connects; ``release_warm_ray()`` ends the connection to the warm head (and its
lease) when this process made it. The head itself is ``ray_head.py``.
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import shutil
import signal
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from . import ray_head

log = logging.getLogger(__name__)


def ensure_ray() -> None:
    """Connect to Ray: as initialised already, ``RAY_ADDRESS`` when set, else this machine's warm
    Ray head (``ray_head.py``), else a Ray of this process's own."""
    if not os.environ.get("RAY_ADDRESS"):
        # The embedded default is one machine: Ray's single-node mode (its default on macOS) binds
        # every process to 127.0.0.1 instead of the first network interface. Read when ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if ray.is_initialized():
        return
    with _sigterm_handler_kept():
        _connect()


@contextmanager
def _sigterm_handler_kept() -> Iterator[None]:
    """``ray.init`` replaces the SIGTERM handler with one that exits: a caller's own (the sweep's, which
    stops every trial and marks them KILLED) is put back once connected. Without one, Ray's stays."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def _connect() -> None:
    import ray

    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if not os.environ.get("RAY_ADDRESS"):
        _keep_to_loopback()
    if ray_head.wanted() and _join_warm_head(kwargs):
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if address.startswith("127.0.0.1:"):  # a loopback-only head: this driver is on that node
            kwargs["_node_ip_address"] = "127.0.0.1"
        ray.init(address=address, **kwargs)
        return
    _start_own_ray(kwargs)


def _keep_to_loopback() -> None:
    """Turn off Ray's multi-node flag in this driver's copy, or log a warning if this Ray has no such flag."""
    import ray
    from ray._private import ray_constants

    # Ray read the variable set above when it was imported, and a caller may have imported it first:
    # this driver's copy of the flag decides the addresses it uses (127.0.0.1, not the first interface's).
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        log.warning("Ray %s has no ray_constants.ENABLE_RAY_CLUSTER: its Ray may bind to the first network interface,"
                    " not 127.0.0.1; check how this Ray version keeps a single-node cluster to loopback", ray.__version__)
        return
    ray_constants.ENABLE_RAY_CLUSTER = False


def _start_own_ray(kwargs: dict[str, Any]) -> None:
    """A Ray of this process's own (``NBSCALE_WARM_RAY=0``, or no warm head to use): it ends with the process.

    Private as the warm head's: token authentication with a fresh token, and its session files in a
    0700 folder of its own (removed at exit), not a shared ``/tmp/ray`` whose folders Ray makes 0777."""
    import ray

    folder = _own_ray_folder()
    _set_ray_auth({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(folder / ray_head.TOKEN_NAME)})
    kwargs = {**kwargs, "_temp_dir": str(folder / "ray")}
    log.info("starting a Ray of this process's own, its session files in %s", folder)
    gpus = os.environ.get("NBSCALE_LOCAL_GPUS")  # declare logical GPUs on a machine Ray cannot inspect
    # address="local" starts our own Ray: a bare ray.init() would join whatever cluster a stale
    # /tmp/ray/ray_current_cluster names, and hang if that cluster is gone.
    for attempt in range(3):
        try:
            # ray.init's hint says int, but Ray keeps resources as floats; float() keeps accepting "2.0" and "0.5"
            with _embedded_site():
                ray.init(address="local", include_dashboard=False, num_gpus=float(gpus) if gpus else None, **kwargs)  # type: ignore[arg-type]
            return
        except Exception as exc:  # Ray gives its raylet a fixed 30 s to register; a loaded machine can miss it
            if "timed out during startup" not in str(exc) or attempt == 2:
                raise
            log.warning("local Ray did not start in time (%s); trying again", exc)
            ray.shutdown()


def _own_ray_folder() -> Path:
    """A new 0700 folder of this user's with a fresh 0600 token in it, removed when the process exits."""
    from ..private_files import write_private

    folder = ray_head.private_temp_dir()
    write_private(folder / ray_head.TOKEN_NAME, secrets.token_hex(32).encode())
    atexit.register(_remove_own_ray, folder)
    return folder


def _remove_own_ray(folder: Path) -> None:
    """At exit: stop this process's Ray (Ray's own exit handler runs after ours), then remove its folder."""
    import ray

    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


#: This process's lease on the warm Ray head while it is connected to it, and Ray's auth settings
#: from before (``release_warm_ray``).
_LEASE: tuple[ray_head.Lease, dict[str, str | None]] | None = None


def _join_warm_head(kwargs: dict[str, Any]) -> bool:
    """Connect to the warm head of this ``NBSCALE_HOME``; False when there is none to use.

    A head whose Ray has just died (before its daemon noticed) refuses the connection: it is
    stopped and another one started, once."""
    global _LEASE
    import ray

    from ..store import nbscale_home

    home = nbscale_home()
    for _ in range(2):
        lease = ray_head.lease(home)
        if lease is None:
            return False
        previous = _set_ray_auth({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": lease.token_path})
        try:
            ray.init(address=lease.address, _node_ip_address="127.0.0.1", **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever Ray raised, a Ray of our own still serves the sweep
            log.warning("the warm Ray head at %s did not answer (%s): replacing it", lease.address, exc)
            lease.release()
            ray.shutdown()
            _set_ray_auth(previous)
            ray_head.stop(home)
            continue
        _LEASE = (lease, previous)
        return True
    return False


def _set_ray_auth(values: dict[str, str | None]) -> dict[str, str | None]:
    """Ray's token settings in this process (None: unset), read again by Ray; returns the previous ones.

    Ray reads them once into its config and token cache, perhaps when a caller imported it: both
    are reloaded as Ray's own authentication tests do, the config first."""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    previous = _apply_environ(values)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    return previous


def release_warm_ray() -> None:
    """Disconnect from the warm head if this process leased it: its idle time starts (a no-op otherwise)."""
    global _LEASE
    if _LEASE is None:
        return
    import ray

    lease, previous = _LEASE
    _LEASE = None
    ray.shutdown()
    lease.release()
    _set_ray_auth(previous)


@contextmanager
def scoped_environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment while the block runs; what was there before afterwards."""
    previous = _apply_environ(dict(values))
    try:
        yield
    finally:
        _apply_environ(previous)


def _apply_environ(values: dict[str, str | None]) -> dict[str, str | None]:
    """Set ``values`` in this process's environment (None: unset); returns what was there before."""
    previous = {name: os.environ.get(name) for name in values}
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return previous


def _embedded_site() -> AbstractContextManager[None]:
    """While a Ray of this process's own starts, its processes get ``ray_head.embedded_ray_environ``."""
    return scoped_environ(ray_head.embedded_ray_environ(os.environ))


def joined_warm_head() -> bool:
    """Whether this process is connected to the warm head through a lease of its own."""
    return _LEASE is not None
