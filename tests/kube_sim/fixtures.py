"""Pytest fixtures for the Kubernetes simulation: one API server and controller per session."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when a test asks for the simulation, not by every session
    from .controller import ArgoSimController, SimBehaviour
    from .server import KubeSim

NAMESPACE = "nbscale-sim"


@dataclass
class SimCluster:
    """The running simulation: API server, controller, namespace and a kubeconfig that points at it."""

    sim: KubeSim
    controller: ArgoSimController
    kubeconfig: Path
    namespace: str = NAMESPACE

    @property
    def behaviour(self) -> SimBehaviour:
        """How the simulated controller runs the next workflows."""
        return self.controller.behaviour

    def api_client(self) -> Any:
        """A real ``kubernetes.client.ApiClient`` talking to the simulation."""
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.sim.url
        configuration.retries = 0
        return client.ApiClient(configuration)

    def workflows(self) -> list[dict[str, Any]]:
        """The workflows the simulation holds."""
        return self.sim.list("workflows", self.namespace)


def write_kubeconfig(path: Path, url: str, namespace: str) -> Path:
    """A kubeconfig whose current context is the simulation (a bearer token, no TLS: 127.0.0.1 only)."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: sim
  cluster: {{server: "{url}"}}
users:
- name: sim
  user: {{token: sim-token}}
contexts:
- name: sim
  context: {{cluster: sim, user: sim, namespace: {namespace}}}
current-context: sim
""", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def kube_sim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """The simulated API server and Argo controller, started once per session."""
    from .controller import ArgoSimController
    from .server import KubeSim

    sim = KubeSim().start()
    controller = ArgoSimController(sim).start()
    kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", sim.url, NAMESPACE)
    yield SimCluster(sim, controller, kubeconfig)
    controller.stop()
    sim.stop()


@pytest.fixture
def kube_sim(kube_sim_session: SimCluster) -> Iterator[SimCluster]:
    """The simulation, emptied and with the default behaviour, for one test."""
    kube_sim_session.controller.reset()
    kube_sim_session.sim.reset()
    yield kube_sim_session
    kube_sim_session.sim.end_watches()
