"""Every call the Argo executor makes is one the chart's ``nbscale-singleuser`` Role allows.

A whole life of runs (submit, follow, logs while running, cancel with RayJobs, re-attach) goes
through tests/kube_sim (a simulation of the Kubernetes API); the verbs and resources it saw are
checked against the rules of helm/nbscale/templates/rbac/singleuser-role.yaml.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from argo_helpers import argo_executor, submit_run

from workflow_compiler.executors.argo import RUN_ID_LABEL, SINGLEUSER_ROLE

ROLE = Path(__file__).resolve().parents[2] / "helm" / "nbscale" / "templates" / "rbac" / "singleuser-role.yaml"
_PATH = re.compile(r"^/(?:apis/(?P<group>[^/]+)/[^/]+|api/v1)/namespaces/[^/]+/(?P<resource>[^/]+)(?:/(?P<name>[^/]+))?"
                   r"(?:/(?P<sub>[^/]+))?$")


def role_rules() -> set[tuple[str, str, str]]:
    """(group, resource, verb) the Role grants; its template lines are metadata only, so the rules are plain YAML."""
    text = "\n".join(line for line in ROLE.read_text().splitlines() if "{{" not in line)
    role = yaml.safe_load(text)
    return {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def verb_of(method: str, path: str) -> tuple[str, str, str]:
    found = _PATH.match(path)
    assert found, path
    resource = found["resource"] + (f"/{found['sub']}" if found["sub"] else "")
    named = found["name"] is not None
    verb = {"GET": "get" if named else "list", "WATCH": "watch", "POST": "create", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection"}[method]
    return found["group"] or "", resource, verb


def test_the_executor_needs_nothing_the_singleuser_role_does_not_grant(kube_sim, tmp_path):
    assert SINGLEUSER_ROLE == "nbscale-singleuser"  # the chart's name helper: nbscale-<component>
    kube_sim.behaviour.step_seconds = 1.0
    executor = argo_executor(kube_sim, tmp_path)
    followed, streamed = submit_run(executor, pipeline=True), submit_run(executor)
    list(executor.updates(followed.id))
    list(executor.stream_logs(streamed.id))
    kube_sim.behaviour.hold_queue, kube_sim.behaviour.step_seconds = "team-a", 30
    stopped = submit_run(executor)
    executor.wait(stopped.id, timeout=1)
    kube_sim.sim.create("rayjobs", kube_sim.namespace, {"apiVersion": "ray.io/v1", "kind": "RayJob", "spec": {"entrypoint": "x"},
                                                         "metadata": {"name": "sweep-a", "labels": {RUN_ID_LABEL: stopped.id}}})
    executor.cancel(stopped.id, wait=10)
    executor.reattach()

    used = {verb_of(method, path) for method, path in kube_sim.sim.state.requests}
    assert {("argoproj.io", "workflows", "watch"), ("", "pods/log", "get"), ("ray.io", "rayjobs", "delete")} <= used
    assert used <= role_rules(), sorted(used - role_rules())
