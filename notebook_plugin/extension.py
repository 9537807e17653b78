"""The jupyter-server extension: configuration traits, the run store, reconciliation, the URL table."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Dict, Float, Type, Unicode, default

from workflow_compiler.errors import NbscaleError
from workflow_compiler.executors.base import Executor
from workflow_compiler.executors.selection import default_executor_class
from workflow_compiler.store import RunStore

from .handlers import ROUTES
from .service import RunService

API_PREFIX = "nbscale/api"
#: What the extension's former run store is renamed to once its records are in $NBSCALE_HOME/runs.db.
IMPORTED_NAME = "runs.db.imported"


class NbscaleExtension(ExtensionApp):
    """Run notebooks at scale from Jupyter: REST under ``{base_url}/nbscale/api/``."""

    name = "notebook_plugin"
    load_other_extensions = True

    executor_class = Type(
        default_value="workflow_compiler.executors.local.LocalExecutor",
        klass=Executor,
        config=True,
        help="""The executor runs are submitted to: local processes, or Argo on a cluster. Default: Argo
        inside a Kubernetes pod with NBSCALE_CLUSTER_CONFIG set, else local.
        Example: c.NbscaleExtension.executor_class = "workflow_compiler.executors.argo.ArgoExecutor" """,
    )
    executor_options = Dict(
        config=True,
        help="""Keyword options for the executor, e.g. c.NbscaleExtension.executor_options = {"namespace": "ml"}.
        ``root`` (the server's root dir) and ``store`` are always passed.""",
    )
    refresh_interval = Float(
        20.0,
        config=True,
        help="""Seconds between looks at in-flight cluster runs (heartbeats their GPU leases, finishes a
        cancel's Stop with Terminate, notices their end); 0 turns it off.
        Example: c.NbscaleExtension.refresh_interval = 30""",
    )
    run_store_path = Unicode(
        "",
        config=True,
        help="""SQLite file of run records. Default: $NBSCALE_HOME/runs.db (~/.nbscale/runs.db), the file
        the nbscale CLI and the magics use too, so there is one run list.
        Example: c.NbscaleExtension.run_store_path = "/home/me/.nbscale-runs.db" """,
    )

    @default("executor_class")
    def _default_executor_class(self) -> str:
        return default_executor_class()

    def store_path(self) -> Path | None:
        """Where run records live; None for the CLI's own default."""
        return Path(self.run_store_path) if self.run_store_path else None

    def open_store(self) -> RunStore:
        """The run store, with the records of the extension's former store under the Jupyter data dir imported once."""
        store = RunStore(self.store_path())
        former = Path(jupyter_data_dir()) / "nbscale" / "runs.db"
        if former.is_file() and former.resolve() != store.path.resolve():
            count = store.import_records(former)
            former.rename(former.with_name(IMPORTED_NAME))  # once: the next start finds nothing to import
            self.log.warning("nbscale: imported %s run(s) from %s into %s (the one run list of the CLI, the magics and Lab); "
                             "the old file is kept as %s", count, former, store.path, IMPORTED_NAME)
        return store

    def initialize_settings(self) -> None:
        """Open the run store, reconcile runs lost while the server was down, and build the service."""
        assert self.serverapp is not None  # set by jupyter-server before initialize_settings
        root = Path(self.serverapp.root_dir).resolve()
        store = self.open_store()
        lost = store.reconcile()
        if lost:
            self.log.warning("nbscale: %s run(s) lost while the server was down, marked FAILED: %s", len(lost), ", ".join(lost))
        executor_class = cast("type[Executor]", self.executor_class)
        executor = executor_class(store=store, root=str(root), **self.executor_options)
        try:
            attached = executor.reattach()
        except NbscaleError as exc:  # the cluster may be down now; each run re-attaches when it is next asked about
            self.log.warning("nbscale: could not re-attach to in-flight runs: %s", exc.message)
        else:
            if attached:
                self.log.info("nbscale: re-attached to %s in-flight run(s): %s", len(attached), ", ".join(attached))
        if self.refresh_interval > 0 and executor.name == "argo":
            self._start_refresh(executor)
        api_url = url_path_join(self.serverapp.base_url, API_PREFIX)
        self.settings["nbscale_service"] = RunService(executor, root, api_url)
        self.log.info("nbscale: %s executor, runs in %s, notebooks under %s", executor.name or type(executor).__name__,
                      store.path, root)

    def _start_refresh(self, executor: Executor) -> None:
        from tornado.ioloop import PeriodicCallback

        async def refresh() -> None:
            try:
                await asyncio.to_thread(executor.reattach)
            except NbscaleError as exc:
                self.log.warning("nbscale: could not refresh in-flight runs: %s", exc.message)

        self._refresh = PeriodicCallback(refresh, self.refresh_interval * 1000)
        self._refresh.start()

    async def stop_extension(self) -> None:
        """Stop the periodic look at in-flight runs."""
        if getattr(self, "_refresh", None) is not None:
            self._refresh.stop()

    def initialize_handlers(self) -> None:
        """Register the REST routes."""
        # ExtensionApp prepends the server's base_url to these patterns.
        self.handlers.extend((url_path_join("/", API_PREFIX, path), handler) for path, handler in ROUTES)

