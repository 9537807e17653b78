"""Where a run came from: who, which notebook (path and content hash), which commit, workflow and image."""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import subprocess
from pathlib import Path

from ..stepconfig import StepConfig

log = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def git_commit(folder: Path) -> str | None:
    """The commit checked out in the git repository holding ``folder``, or None outside one."""
    try:
        done = subprocess.run(["git", "-C", str(folder), "rev-parse", "--verify", "-q", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None  # no git here: not an error, the tag is just left out
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) in (40, 64) else None


def current_user(config: StepConfig) -> str:
    """The user the compiler named, else the account running the step."""
    if config.user:
        return config.user
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def run_tags(config: StepConfig, *, notebook: str, sha256: str, commit: str | None) -> dict[str, str]:
    """The tags of a step's MLflow run; the config's extra tags cannot override these."""
    user = current_user(config)
    if config.notebook_sha256 and config.notebook_sha256 != sha256:
        log.warning("%s changed since it was compiled (sha256 %s, compiled %s)", notebook, sha256, config.notebook_sha256)
    tags = {
        **config.tags,
        "mlflow.user": user,
        "mlflow.source.name": notebook,
        "mlflow.source.type": "NOTEBOOK",
        "nbscale.kind": "step",
        "nbscale.user": user,
        "nbscale.notebook": notebook,
        "nbscale.notebook_sha256": sha256,
        "nbscale.notebook_sha256_compiled": config.notebook_sha256,
        "nbscale.step": config.step or "",
        "nbscale.image": config.image or os.environ.get("NBSCALE_IMAGE", ""),
        "nbscale.workflow": os.environ.get("NBSCALE_WORKFLOW_NAME", ""),
    }
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["nbscale.git_commit"] = commit
    return {k: v for k, v in tags.items() if v}
