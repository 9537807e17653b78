"""Environment capture: reading the user's pod through the real kubernetes client, and what is never copied.

The pods under ``pods/`` have the shape KubeSpawner creates (``jupyter-<user>``, ``claim-<user>``, the
``kube-api-access-*`` token volume, the hub's variables) with secrets planted in env and envFrom.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from json_service import JsonService
from recorded_pods import recorded_pod, serve_claim, serve_pod

from workflow_compiler import cli
from workflow_compiler.cli_cluster import describe_pod_environment
from workflow_compiler.cluster import ClusterConfig
from workflow_compiler.errors import ExecutionError
from workflow_compiler.podenv import capture_pod_environment, env_refusal, pod_environment_from, pod_identity


def in_pod(tmp_path: Path, pod: dict[str, Any]) -> tuple[dict[str, str], Path]:
    """The environment and namespace file a process inside ``pod`` sees."""
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text(pod["metadata"]["namespace"] + "\n")
    return {"HOSTNAME": pod["metadata"]["name"]}, namespace_file


def serve_alice(tmp_path: Path, kube_sim: Any, home: str = "ReadWriteMany") -> tuple[dict[str, Any], dict[str, str], Path]:
    """Put alice's pod and claims into the Kubernetes simulation; (pod, environ, namespace file) as seen from inside it."""
    pod = recorded_pod("jupyter-alice")
    serve_pod(kube_sim.sim, pod)
    serve_claim(kube_sim.sim, "jhub", "claim-alice", [home])
    serve_claim(kube_sim.sim, "jhub", "datasets", ["ReadOnlyMany"])
    return (pod, *in_pod(tmp_path, pod))


def test_capture_reads_the_pod_and_its_claims_once(tmp_path: Path, kube_sim: Any) -> None:
    _, environ, namespace_file = serve_alice(tmp_path, kube_sim)
    env = capture_pod_environment(ClusterConfig(), api_client=kube_sim.api_client(), environ=environ, namespace_file=namespace_file)
    assert env is not None
    assert kube_sim.sim.state.requests == [("GET", "/api/v1/namespaces/jhub/pods/jupyter-alice"),
                                ("GET", "/api/v1/namespaces/jhub/persistentvolumeclaims/claim-alice"),
                                ("GET", "/api/v1/namespaces/jhub/persistentvolumeclaims/datasets")]
    assert env.claim_access_modes == {"claim-alice": ["ReadWriteMany"], "datasets": ["ReadOnlyMany"]}
    assert (env.pod, env.namespace, env.node_name) == ("jupyter-alice", "jhub", "gke-jhub-user-pool-7c9d-x2lq")
    assert (env.image, env.image_pull_policy, env.image_pull_secrets) == (
        "registry.example.com/ds/singleuser:2026.11", "IfNotPresent", ["regcred"])
    assert env.working_dir == "/home/jovyan"
    assert env.pod_security_context == {"fsGroup": 100}
    assert env.container_security_context == {"runAsUser": 1000, "runAsGroup": 100}
    assert env.user_service_account == "default"


def test_capture_from_the_environment_variables(tmp_path: Path, kube_sim: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """HOSTNAME and NBSCALE_POD_NAMESPACE_FILE, as a process in the pod sees them."""
    pod = recorded_pod("jupyter-bob")
    serve_pod(kube_sim.sim, pod)
    serve_claim(kube_sim.sim, "jhub", "claim-bob", ["ReadWriteOnce"])
    environ, namespace_file = in_pod(tmp_path, pod)
    monkeypatch.setenv("HOSTNAME", environ["HOSTNAME"])
    monkeypatch.setenv("NBSCALE_POD_NAMESPACE_FILE", str(namespace_file))
    env = capture_pod_environment(ClusterConfig(), api_client=kube_sim.api_client())
    assert env is not None and env.claim_access_modes == {"claim-bob": ["ReadWriteOnce"]}


@pytest.mark.parametrize(("hostname", "namespace"), [(None, "jhub"), ("jupyter-alice", None), ("", "jhub"), ("jupyter-alice", "")])
def test_outside_a_pod_nothing_is_captured(tmp_path: Path, kube_sim: Any, hostname: str | None, namespace: str | None) -> None:
    environ = {"HOSTNAME": hostname} if hostname is not None else {}
    namespace_file = tmp_path / "namespace"
    if namespace is not None:
        namespace_file.write_text(namespace)
    assert pod_identity(environ, namespace_file) is None
    assert capture_pod_environment(ClusterConfig(), api_client=kube_sim.api_client(), environ=environ,
                                   namespace_file=namespace_file) is None
    assert kube_sim.sim.state.requests == []


def test_the_cluster_config_can_turn_capture_off(tmp_path: Path, kube_sim: Any) -> None:
    environ, namespace_file = in_pod(tmp_path, recorded_pod("jupyter-alice"))
    assert capture_pod_environment(ClusterConfig(capture_pod_env=False), api_client=kube_sim.api_client(), environ=environ,
                                   namespace_file=namespace_file) is None
    assert kube_sim.sim.state.requests == []


@pytest.mark.parametrize("refused", ["pods", "persistentvolumeclaims"])
def test_a_refused_read_says_which_permission_is_missing(tmp_path: Path, kube_sim: Any, refused: str) -> None:
    pod = recorded_pod("jupyter-alice")
    serve_pod(kube_sim.sim, pod)
    serve_claim(kube_sim.sim, "jhub", "datasets", ["ReadOnlyMany"])
    claim = serve_claim(kube_sim.sim, "jhub", "claim-alice", ["ReadWriteMany"])
    kube_sim.sim.fail("GET", "^" + re.escape(claim if refused != "pods" else "/api/v1/namespaces/jhub/pods/jupyter-alice") + "$",
                      403, message="forbidden by the simulation's RBAC")
    environ, namespace_file = in_pod(tmp_path, pod)
    with pytest.raises(ExecutionError, match=f"403 Forbidden.*'get' on {refused} in jhub.*capture_pod_env: false"):
        capture_pod_environment(ClusterConfig(), api_client=kube_sim.api_client(), environ=environ, namespace_file=namespace_file)


def test_the_token_volume_and_the_hub_credentials_stay_behind() -> None:
    env = pod_environment_from(recorded_pod("jupyter-alice"))
    assert [v["name"] for v in env.volumes] == ["volume-alice", "shared-datasets", "dshm"]
    assert [m["name"] for m in env.volume_mounts] == ["volume-alice", "shared-datasets", "dshm"]
    kept = [e["name"] for e in env.env]
    assert kept == ["JUPYTERHUB_ACTIVITY_URL", "JUPYTERHUB_ADMIN_ACCESS", "JUPYTERHUB_API_URL", "JUPYTERHUB_BASE_URL",
                    "JUPYTERHUB_CLIENT_ID", "JUPYTERHUB_HOST", "JUPYTERHUB_SERVER_NAME", "JUPYTERHUB_SERVICE_PREFIX",
                    "JUPYTERHUB_SERVICE_URL", "JUPYTERHUB_USER", "JUPYTER_IMAGE", "JUPYTER_IMAGE_SPEC", "MLFLOW_TRACKING_URI",
                    "NBSCALE_QUOTA_URL", "WAREHOUSE_DSN", "TEAM", "MY_POD_IP"]
    # references stay references: the secret's value is never read
    assert {"name": "WAREHOUSE_DSN", "valueFrom": {"secretKeyRef": {"name": "warehouse-db", "key": "dsn", "optional": True}}} in env.env
    assert env.env_from == [{"secretRef": {"name": "alice-cloud-credentials"}}, {"configMapRef": {"name": "team-settings"}, "prefix": "TEAM_"}]
    assert "volume kube-api-access-x7k2p: the service account token; steps use the cluster config's account" in env.left_out
    assert "env DATABASE_URL: value holds a user:password@ URL" in env.left_out
    assert "env MEM_LIMIT: describes the notebook pod's resources, not the step's" in env.left_out


def test_any_projected_token_volume_stays_behind_whatever_its_name() -> None:
    env = pod_environment_from(recorded_pod("jupyter-bob"))
    assert [v["name"] for v in env.volumes] == ["home"]
    assert [m["mountPath"] for m in env.volume_mounts] == ["/home/jovyan"]
    assert [e["name"] for e in env.env] == ["JUPYTERHUB_USER", "NBSCALE_WORKFLOW_NAME"]


def test_env_allow_copies_a_variable_by_name() -> None:
    env = pod_environment_from(recorded_pod("jupyter-alice"), allow=frozenset({"WANDB_API_KEY", "DB_PASSWORD"}))
    names = [e["name"] for e in env.env]
    assert "WANDB_API_KEY" in names and "DB_PASSWORD" in names and "JUPYTERHUB_API_TOKEN" not in names


@pytest.mark.parametrize(("entry", "reason"), [
    ({"name": "JUPYTERHUB_API_TOKEN", "value": "x"}, "the hub's credential"),
    ({"name": "JPY_API_TOKEN", "value": "x"}, "the hub's credential"),
    ({"name": "JUPYTERHUB_OAUTH_CALLBACK_URL", "value": "/user/a/oauth_callback"}, "the hub's credential"),
    ({"name": "my_token", "value": "x"}, "name contains TOKEN"),
    ({"name": "CLIENT_SECRET", "value": "x"}, "name contains SECRET"),
    ({"name": "PGPASSWORD", "value": "x"}, "name contains PASSWORD"),
    ({"name": "SSH_KEY_PATH", "value": "/home/jovyan/.ssh/id"}, "name contains KEY"),
    ({"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}, "name contains PASSWORD"),
    ({"name": "DATABASE_URL", "value": "postgres://u:pw@host/db"}, "value holds a user:password@ URL"),
    ({"name": "PIP_INDEX_URL", "value": "https://:tok@pypi.example/simple"}, "value holds a user:password@ URL"),
    ({"name": "GH", "value": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}, "value looks like an access token"),
    ({"name": "SLACK", "value": "xoxb-123456789012-abcdefghij"}, "value looks like an access token"),
    ({"name": "CPU_LIMIT", "value": "2"}, "describes the notebook pod's resources, not the step's"),
    ({"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"}, None),
    ({"name": "PROXY", "value": "http://user@proxy:3128"}, None),
    ({"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}, None),
])
def test_env_rules(entry: dict[str, Any], reason: str | None) -> None:
    assert env_refusal(entry) == reason


def test_show_env_redacts_and_explains(tmp_path: Path, kube_sim: Any) -> None:
    pod, environ, namespace_file = serve_alice(tmp_path, kube_sim, "ReadWriteOnce")
    cluster = ClusterConfig(service_account="nbscale-runner")
    text = describe_pod_environment(capture_pod_environment(cluster, api_client=kube_sim.api_client(), environ=environ,
                                                            namespace_file=namespace_file), cluster)
    assert "service account: nbscale-runner (not the notebook's default)" in text
    assert "volume volume-alice: claim claim-alice (ReadWriteOnce) at /home/jovyan" in text
    assert "env WAREHOUSE_DSN=<from secret warehouse-db/dsn>" in text
    assert "envFrom <all keys of secret alice-cloud-credentials>" in text
    assert "left out: env AWS_SECRET_ACCESS_KEY: name contains SECRET" in text
    for container in pod["spec"]["containers"]:
        for entry in container["env"]:
            if env_refusal(entry) is not None and entry.get("value"):
                assert entry["value"] not in text


def test_show_env_outside_a_pod(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)
    monkeypatch.setenv("NBSCALE_POD_NAMESPACE_FILE", str(tmp_path / "absent"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["compile", "--show-env"])
    assert exited.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("Nothing captured (not running in a Kubernetes pod): steps use the image nbscale/singleuser:0.1.0")
    assert "workspace claim claim-" in out and "{username}" not in out


@pytest.mark.parametrize(("spec_queue", "quota_answers", "expected"), [
    (None, True, {"hub_queue": "vision"}),
    (None, False, {}),  # the quota service cannot be reached: no queue, the run still compiles
    ("nlp", True, {}),  # the spec names its queue: the quota service is not asked
])
def test_submission_to_argo_captures_the_pod_and_the_hub_queue(tmp_path: Path, kube_sim: Any, monkeypatch: pytest.MonkeyPatch,
                                                               spec_queue: str | None, quota_answers: bool,
                                                               expected: dict[str, Any]) -> None:
    from hub_extension import SERVICE_HEADER
    from workflow_compiler.spec import RunSpec
    from workflow_compiler.submit import cluster_inputs

    pod, environ, namespace_file = serve_alice(tmp_path, kube_sim)
    me = {"enabled": True, "user": "alice", "groups": ["vision", "all-users"], "limits": {"sources": {"max_gpus": "group:vision"}}}
    # the quota service, or (without its header) something else at its URL
    quota = JsonService(lambda method, path, body: (200, me) if path == "/quota/api/v1/me" else (404, {"message": "no"}),
                        headers={SERVICE_HEADER: "1"} if quota_answers else {})
    monkeypatch.delenv("NBSCALE_CLUSTER_CONFIG", raising=False)
    for key, value in {**environ, "NBSCALE_POD_NAMESPACE_FILE": str(namespace_file), "NBSCALE_QUOTA_URL": f"{quota.url}/quota/",
                       "JUPYTERHUB_API_TOKEN": "t0k3n", "JUPYTERHUB_API_URL": "http://hub:8081/hub/api"}.items():
        monkeypatch.setenv(key, value)
    with quota:
        inputs = cluster_inputs(RunSpec(notebook="a.ipynb", user="alice", queue=spec_queue), api_client=kube_sim.api_client())
    assert inputs.pop("pod_env") == pod_environment_from(pod, claim_access_modes={"claim-alice": ["ReadWriteMany"],
                                                                                   "datasets": ["ReadOnlyMany"]})
    assert inputs == expected
    assert ([(m, path) for m, path, _ in quota.seen] == [("GET", "/quota/api/v1/me")]) == (spec_queue is None)
