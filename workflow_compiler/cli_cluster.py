"""Cluster-side commands: ``nbscale cluster kueue`` (Kueue objects for teams) and ``nbscale compile --show-env``.

Kept apart from ``cli.py`` so that it takes two lines there: ``add_cluster_commands(sub)`` and
``add_show_env_option(compile_parser)``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_cluster_commands(sub: Any) -> None:
    """``nbscale cluster ...``: what an administrator generates for the cluster."""
    cluster = sub.add_parser("cluster", help="generate cluster objects (Kueue queues for teams)")
    commands = cluster.add_subparsers(dest="cluster_command", required=True, parser_class=type(cluster))
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
    from .podenv import capture_pod_environment, describe_pod_environment

    cluster = load_cluster_config()
    sys.stdout.write(describe_pod_environment(capture_pod_environment(cluster), cluster))
    return 0
