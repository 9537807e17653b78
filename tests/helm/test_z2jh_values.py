"""helm/nbscale/examples/z2jh-values.yaml: valid for z2jh, and consistent with the nbscale chart."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from hub_extension import ADMIN_SCOPE, SERVICE_NAME, USE_SCOPE
from tests.helm.chart import manifests
from tests.helm.z2jh_values import deep_merge, load_example, z2jh_defaults, z2jh_schema


def _z2jh_errors(values: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(z2jh_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(deep_merge(z2jh_defaults(), values))]


def test_example_passes_z2jh_schema_after_merging_over_its_defaults() -> None:
    assert _z2jh_errors(load_example()) == []


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (["singleuser", "serviceAccount"], "nbscale-singleuser"),  # z2jh says serviceAccountName
        (["singleuser", "image", "tags"], "0.1.0"),
        (["hub", "config", "jupyterhub"], {}),  # traitlets classes start with a capital
    ],
)
def test_the_schema_check_catches_a_misspelt_key(path: list[str], bad: Any) -> None:
    values = load_example()
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = bad
    assert _z2jh_errors(values)


def _chart_objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in manifests({})}


def test_example_points_at_what_the_chart_creates() -> None:
    example, objects = load_example(), _chart_objects()
    service = objects[("Service", "nbscale-quotas")]
    port = service["spec"]["ports"][0]["port"]
    assert example["hub"]["services"][SERVICE_NAME]["url"] == f"http://nbscale-quotas:{port}"
    singleuser = example["singleuser"]
    assert singleuser["extraEnv"]["NBSCALE_QUOTA_URL"] == f"http://nbscale-quotas:{port}/services/{SERVICE_NAME}/"
    assert ("ServiceAccount", singleuser["serviceAccountName"]) in objects
    binding = objects[("RoleBinding", "nbscale-singleuser")]
    assert binding["roleRef"]["name"] == "nbscale-singleuser" and binding["subjects"][0]["name"] == singleuser["serviceAccountName"]
    mounts = {m["name"]: m["mountPath"] for m in singleuser["storage"]["extraVolumeMounts"].values()}
    for volume in singleuser["storage"]["extraVolumes"].values():
        configmap = objects[("ConfigMap", volume["configMap"]["name"])]
        (filename,) = configmap["data"]
        assert f"{mounts[volume['name']]}/{filename}" in (singleuser["extraEnv"]["NBSCALE_CLUSTER_CONFIG"], singleuser["extraEnv"]["NBSCALE_POOLS"])


def test_the_token_secret_is_the_one_z2jh_writes() -> None:
    """z2jh keeps each hub.services entry's token in its Secret 'hub' as hub.services.<key>.apiToken."""
    deployment = _chart_objects()[("Deployment", "nbscale-quotas")]
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    (key,) = load_example()["hub"]["services"]
    assert (ref["name"], ref["key"]) == ("hub", f"hub.services.{key}.apiToken")
    assert "apiToken" not in load_example()["hub"]["services"][key] and "api_token" not in load_example()["hub"]["services"][key]


def test_single_user_egress_reaches_the_quota_pods() -> None:
    quota_labels = _chart_objects()[("Deployment", "nbscale-quotas")]["spec"]["template"]["metadata"]["labels"]
    port = _chart_objects()[("Service", "nbscale-quotas")]["spec"]["ports"][0]["port"]
    rules = load_example()["singleuser"]["networkPolicy"]["egress"]
    assert any(
        all(quota_labels.get(k) == v for k, v in peer.get("podSelector", {}).get("matchLabels", {}).items())
        and peer.get("podSelector") and {"port": port, "protocol": "TCP"} in rule["ports"]
        for rule in rules for peer in rule["to"]
    )


def test_roles_grant_the_service_scopes() -> None:
    roles = load_example()["hub"]["loadRoles"]
    custom = load_example()["hub"]["config"]["JupyterHub"]["custom_scopes"]
    assert set(custom) == {USE_SCOPE, ADMIN_SCOPE}
    assert {f"access:services!service={SERVICE_NAME}", USE_SCOPE} <= set(roles["nbscale-quota-user"]["scopes"])
    assert ADMIN_SCOPE in roles["nbscale-quota-admin"]["scopes"]


def test_example_makes_the_single_user_server_submit_to_argo() -> None:
    """Without it the server extension keeps its local executor: runs would execute inside the user's pod."""
    from traitlets.config import Config

    from notebook_plugin.extension import NbscaleExtension
    from workflow_compiler.executors.argo import ArgoExecutor

    files = load_example()["singleuser"].get("extraFiles", {}).values()
    configs = [f["data"] for f in files if f["mountPath"].startswith("/etc/jupyter/jupyter_server_config.d/")]
    assert len(configs) == 1, configs
    assert NbscaleExtension(config=Config(configs[0])).executor_class is ArgoExecutor


def test_the_single_user_pod_gives_its_volume_to_the_fs_group_only_on_a_root_mismatch() -> None:
    """KubeSpawner merges pod_security_context over ``{fsGroup: fs_gid}``; the result must be a valid pod securityContext."""
    import kubernetes_validate

    from tests.helm.chart import KUBE_VERSION

    values = deep_merge(z2jh_defaults(), load_example())
    context = {"fsGroup": values["singleuser"]["fsGid"], **values["hub"]["config"]["KubeSpawner"]["pod_security_context"]}
    assert context == {"fsGroup": 100, "fsGroupChangePolicy": "OnRootMismatch"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "jupyter-jovyan"},
           "spec": {"securityContext": context, "containers": [{"name": "notebook", "image": "nbscale/singleuser:0.1.0"}]}}
    kubernetes_validate.validate(pod, KUBE_VERSION, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):  # the check would catch a misspelt policy
        kubernetes_validate.validate({**pod, "spec": {**pod["spec"], "securityContext": {**context, "fsGroupChangePolicyy": "x"}}},
                                     KUBE_VERSION, strict=True)
