"""The jupyter-server extension: configuration traits, the run store, reconciliation, the URL table."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from jupyter_core.paths import jupyter_data_dir
from jupyter_server.extension.application import ExtensionApp
from jupyter_server.utils import url_path_join
from traitlets import Dict, Type, Unicode

from workflow_compiler.executors.base import Executor
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
        help="""The executor runs are submitted to: local processes now, Argo on a cluster.
        Example: c.NbscaleExtension.executor_class = "workflow_compiler.executors.argo.ArgoExecutor" """,
    )
    executor_options = Dict(
        config=True,
        help="""Keyword options for the executor, e.g. c.NbscaleExtension.executor_options = {"namespace": "ml"}.
        ``root`` (the server's root dir) and ``store`` are always passed.""",
    )
    run_store_path = Unicode(
        "",
        config=True,
        help="""SQLite file of run records. Default: $NBSCALE_HOME/runs.db (~/.nbscale/runs.db), the file
        the nbscale CLI and the magics use too, so there is one run list.
        Example: c.NbscaleExtension.run_store_path = "/home/me/.nbscale-runs.db" """,
    )

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
        api_url = url_path_join(self.serverapp.base_url, API_PREFIX)
        self.settings["nbscale_service"] = RunService(executor, root, api_url)
        self.log.info("nbscale: %s executor, runs in %s, notebooks under %s", executor.name or type(executor).__name__,
                      store.path, root)

    def initialize_handlers(self) -> None:
        """Register the REST routes."""
        # ExtensionApp prepends the server's base_url to these patterns.
        self.handlers.extend((url_path_join("/", API_PREFIX, path), handler) for path, handler in ROUTES)

