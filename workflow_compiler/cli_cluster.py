"""Cluster-side commands: ``nbscale cluster kueue`` (Kueue objects for teams) and ``nbscale compile --show-env``.

Kept apart from ``cli.py`` so that it takes two lines there: ``add_cluster_commands(sub)`` and
``add_show_env_option(compile_parser)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .cluster import ClusterConfig
    from .podenv import PodEnvironment


def add_cluster_commands(sub: Any) -> None:
    """``nbscale cluster ...``: what an administrator generates for the cluster."""
    cluster = sub.add_parser("cluster", help="generate cluster objects (Kueue queues for teams)")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, parser_class=type(cluster), metavar="{kueue}")
    p = commands.add_parser("kueue", help="Kueue ResourceFlavors, ClusterQueues and LocalQueues from a teams file and the GPU pools")
    p.add_argument("--teams", required=True, metavar="FILE", help="teams YAML (see examples/kueue-teams.yaml)")
    p.add_argument("--pools", metavar="FILE", help="GPU pools YAML (default: $NBSCALE_POOLS, else the built-in pools)")
    p.add_argument("--format", dest="fmt", choices=["manifests", "helm-values"], default="manifests",
                   help="manifests (kubectl apply -f -) or the kueue: block of the nbscale Helm chart's values")
    p.set_defaults(handler=cmd_cluster_kueue)


def cmd_cluster_kueue(args: argparse.Namespace) -> int:
    """Print the Kueue objects (or Helm values) for the teams file."""
    from .kueue import load_teams, render_kueue
    from .pools import load_pools

    sys.stdout.write(render_kueue(load_teams(args.teams), load_pools(args.pools), args.fmt))
    return 0


class _ShowEnv(argparse.Action):
    """``--show-env`` prints the captured environment and exits, like ``--help``: no notebook needed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.exit(cmd_show_env(namespace))


def add_show_env_option(compile_parser: argparse.ArgumentParser) -> None:
    """``nbscale compile --show-env``."""
    compile_parser.add_argument("--show-env", nargs=0, action=_ShowEnv,
                                help="print what would be copied from this pod into the steps (secrets redacted), then stop")


def cmd_show_env(args: argparse.Namespace) -> int:
    """Print the environment a cluster run would take from this pod, with secret values redacted."""
    from .cluster import load_cluster_config
    from .podenv import capture_pod_environment

    cluster = load_cluster_config()
    sys.stdout.write(describe_pod_environment(capture_pod_environment(cluster), cluster))
    return 0


def describe_pod_environment(env: PodEnvironment | None, cluster: ClusterConfig) -> str:
    """What ``--show-env`` prints: what is copied (references shown as references), what is left out and why."""
    if env is None:
        why = "capture_pod_env is false in the cluster config" if not cluster.capture_pod_env else "not running in a Kubernetes pod"
        from .compiler.naming import claim_name
        from .spec import current_user

        claim = claim_name(cluster.workspace_claim_template, current_user())
        return (f"Nothing captured ({why}): steps use the image {cluster.default_image} and the workspace claim {claim} "
                f"mounted at {cluster.workspace_mount}.\n")
    lines = [f"Captured from pod {env.namespace}/{env.pod}" + (f" on node {env.node_name}" if env.node_name else ""),
             f"  image: {env.image}" + (f" (pull {env.image_pull_policy})" if env.image_pull_policy else ""),
             f"  service account: {cluster.service_account or 'the namespace default'} (not the notebook's "
             f"{env.user_service_account or 'default'})"]
    if env.image_pull_secrets:
        lines.append(f"  image pull secrets: {', '.join(env.image_pull_secrets)}")
    if env.working_dir:
        lines.append(f"  working directory: {env.working_dir}")
    mounts = {m["name"]: m["mountPath"] for m in env.volume_mounts}
    for volume in env.volumes:
        pvc = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        source = f"claim {pvc} ({', '.join(env.claim_access_modes.get(pvc, [])) or 'access modes unknown'})" if pvc \
            else next((k for k in volume if k != "name"), "?")
        lines.append(f"  volume {volume['name']}: {source}" + (f" at {mounts[volume['name']]}" if volume["name"] in mounts else ""))
    lines += [f"  env {e['name']}={_shown(e)}" for e in env.env]
    lines += [f"  envFrom {_reference(e)}" for e in env.env_from]
    security = {**env.pod_security_context, **env.container_security_context}
    if security:
        lines.append("  security: " + ", ".join(f"{k}={v}" for k, v in security.items()))
    lines += [f"  left out: {reason}" for reason in env.left_out]
    return "\n".join(lines) + "\n"


def _shown(entry: dict[str, Any]) -> str:
    if "valueFrom" in entry:
        source = entry["valueFrom"]
        ref = source.get("secretKeyRef") or source.get("configMapKeyRef")
        if ref:
            kind = "secret" if "secretKeyRef" in source else "configMap"
            return f"<from {kind} {ref.get('name')}/{ref.get('key')}>"
        return f"<from {next(iter(source), '?')}>"
    return str(entry.get("value", ""))


def _reference(entry: dict[str, Any]) -> str:
    for key, kind in (("secretRef", "secret"), ("configMapRef", "configMap")):
        if key in entry:
            return f"<all keys of {kind} {entry[key].get('name')}>" + (f" prefixed {entry['prefix']}" if entry.get("prefix") else "")
    return str(entry)
