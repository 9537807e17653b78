"""Executors: where compiled workflows run (``local`` on this machine, ``argo`` on a cluster)."""

from .base import Executor, executors, get_executor, new_run_id

__all__ = ["Executor", "executors", "get_executor", "new_run_id"]
