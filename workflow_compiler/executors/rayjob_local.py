"""The local meaning of an Argo ``resource`` template that creates a KubeRay ``RayJob``.

On a cluster, KubeRay starts a Ray cluster, runs the RayJob's ``entrypoint`` on its head with the
``runtimeEnvYAML`` environment variables, and reports Ray's job status in ``status.jobStatus``;
Argo judges that object with the template's ``successCondition``/``failureCondition``. Locally
the entrypoint runs as a process of this machine (its Ray is a local one, or ``RAY_ADDRESS``) and
its exit code becomes the job status Ray would report (0 SUCCEEDED, else FAILED; STOPPED when
cancelled), which the template's own conditions then judge.

The entrypoint is split with ``shlex`` and started without a shell: nbscale's compiler writes a
plain command line, and one that needs a shell (``$VAR``, pipes, ``;``) is refused rather than
half-interpreted. The pod environment of the head (cluster MLflow URI, ``NBSCALE_HOME`` on the
workspace) describes the cluster and is not applied: locally the driver uses this machine's store
and state folder, as ``nbscale sweep`` does. Argo and KubeRay are not available as libraries that
could do this, hence this module.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import ExecutionError

_OPERATORS = set("();<>|&")
_VALUE = re.compile(r"[A-Za-z0-9_.\-]*")  # a label value, as Kubernetes selectors take
_REQUIREMENT = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_.\-/]+)\s*(?:(==|=|!=|>|<|\bin\b|\bnotin\b)\s*(.*?))?\s*$")


@dataclass(frozen=True)
class LocalJob:
    """What running a RayJob here takes: the command, its extra environment, the head's mounts."""

    argv: list[str]
    env: dict[str, str]
    working_dir: str | None = None
    volumes: list[dict[str, Any]] = field(default_factory=list)
    volume_mounts: list[dict[str, Any]] = field(default_factory=list)


def local_job(resource: dict[str, Any]) -> LocalJob:
    """Read a ``resource`` template (already substituted) that creates a RayJob; refuse anything else."""
    if resource.get("action") != "create":
        raise ExecutionError(f"the local executor runs resource templates with action 'create' only, not {resource.get('action')!r}.")
    try:
        manifest = yaml.safe_load(resource.get("manifest") or "")
    except yaml.YAMLError as exc:
        raise ExecutionError(f"the resource manifest is not valid YAML: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != "RayJob" or not str(manifest.get("apiVersion", "")).startswith("ray.io/"):
        what = f"{manifest.get('apiVersion')} {manifest.get('kind')}" if isinstance(manifest, dict) else type(manifest).__name__
        raise ExecutionError(f"the local executor can create a ray.io RayJob (by running its entrypoint), not {what}.")
    spec = manifest.get("spec") or {}
    head = (((spec.get("rayClusterSpec") or {}).get("headGroupSpec") or {}).get("template") or {}).get("spec") or {}
    container = (head.get("containers") or [{}])[0]
    return LocalJob(argv=entrypoint_argv(str(spec.get("entrypoint") or "")), env=runtime_env_vars(spec.get("runtimeEnvYAML")),
                    working_dir=container.get("workingDir"), volumes=list(head.get("volumes") or []),
                    volume_mounts=list(container.get("volumeMounts") or []))


def entrypoint_argv(entrypoint: str) -> list[str]:
    """The entrypoint as an argument list; an entrypoint that needs a shell is an error."""
    if not entrypoint.strip():
        raise ExecutionError("the RayJob has no entrypoint to run.")
    if "$" in entrypoint or "`" in entrypoint:
        raise ExecutionError("the RayJob's entrypoint expands variables or commands ($, `); the local executor runs plain command lines only.")
    lexer = shlex.shlex(entrypoint, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        argv = list(lexer)
    except ValueError as exc:
        raise ExecutionError(f"the RayJob's entrypoint cannot be split into arguments: {exc}") from None
    if any(token and set(token) <= _OPERATORS for token in argv):
        raise ExecutionError("the RayJob's entrypoint uses shell operators (; | & < > ( )); the local executor runs plain command lines only.")
    return argv


def runtime_env_vars(text: Any) -> dict[str, str]:
    """``env_vars`` of ``runtimeEnvYAML``; other runtime-env fields (pip, working_dir, ...) are refused."""
    if not text:
        return {}
    try:
        runtime_env = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExecutionError(f"runtimeEnvYAML is not valid YAML: {exc}") from None
    if not isinstance(runtime_env, dict):
        raise ExecutionError("runtimeEnvYAML must be a mapping.")
    unsupported = sorted(set(runtime_env) - {"env_vars"})
    if unsupported:
        raise ExecutionError(f"the local executor supports runtimeEnvYAML env_vars only, not {', '.join(unsupported)}.")
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
        raise ExecutionError("runtimeEnvYAML env_vars must map names to strings.")
    return {str(k): v for k, v in env_vars.items()}


def job_status(returncode: int | None, stopped: bool) -> dict[str, Any]:
    """The RayJob status KubeRay would report for an entrypoint that ended this way."""
    if stopped:
        return {"jobStatus": "STOPPED", "jobDeploymentStatus": "Complete"}
    if returncode == 0:
        return {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}
    return {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed"}


def resource_phase(resource: dict[str, Any], obj: dict[str, Any]) -> tuple[str, str]:
    """Succeeded/Failed for a finished resource, judged as Argo does: the failure condition first."""
    failure, success = resource.get("failureCondition"), resource.get("successCondition")
    if failure and condition_holds(failure, obj):
        return "Failed", f"failureCondition {failure!r} holds ({_summary(obj)})"
    if success is None or condition_holds(success, obj):
        return "Succeeded", ""
    return "Failed", f"the RayJob ended ({_summary(obj)}) and successCondition {success!r} does not hold"


def condition_holds(condition: str, obj: dict[str, Any]) -> bool:
    """Argo's condition syntax (Kubernetes label selectors over any field): requirements joined by ',' all hold."""
    return all(_requirement_holds(part, obj) for part in _split_requirements(condition))


def _split_requirements(condition: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in condition:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [p for p in [*parts, current] if p.strip()]


def _requirement_holds(text: str, obj: dict[str, Any]) -> bool:
    match = _REQUIREMENT.match(text)
    if not match:
        raise ExecutionError(f"cannot read the condition {text.strip()!r} (expected e.g. 'status.jobStatus == SUCCEEDED').")
    negated, key, op, raw = match.groups()
    value = _lookup(obj, key)
    if op is None:
        return (value is None) if negated else (value is not None)
    if op in ("in", "notin"):
        if not (raw.startswith("(") and raw.endswith(")")):
            raise ExecutionError(f"the condition {text.strip()!r} needs a list in parentheses after {op}.")
        found = value is not None and _text(value) in {v.strip() for v in raw[1:-1].split(",")}
        return found if op == "in" else not found
    if not _VALUE.fullmatch(raw):
        raise ExecutionError(f"cannot read the condition {text.strip()!r}: {raw!r} is not a value like SUCCEEDED or 0.")
    if op in (">", "<"):
        try:
            return value is not None and (float(value) > float(raw) if op == ">" else float(value) < float(raw))
        except ValueError:
            return False
    equal = value is not None and _text(value) == raw
    return not equal if op == "!=" else equal


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _summary(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    return ", ".join(f"{k}={v}" for k, v in status.items())
