"""Turn user text (user names, notebook paths) into valid Kubernetes names and label values.

A value that is already valid is kept as is. Otherwise it is folded to ASCII, invalid characters
become '-', and a short hash of the original is appended so that two different inputs cannot end
up with the same name. The rules checked are those of ``workflow_compiler.k8s_names``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ..k8s_names import GENERATE_NAME_KEPT, dns1123_label_errors, label_value_errors

#: The labels every compiled object carries (values through ``label_value`` / ``notebook_label``).
LABEL_USER = "nbscale.io/user"
LABEL_NOTEBOOK = "nbscale.io/notebook"
LABEL_KIND = "nbscale.io/kind"
LABEL_PIPELINE = "nbscale.io/pipeline"
LABEL_STEP = "nbscale.io/step"
#: Set by the executor on the Workflow it creates (the compiler does not know the run id).
LABEL_RUN_ID = "nbscale.io/run-id"

_NOT_DNS = re.compile(r"[^a-z0-9]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_HASH_CHARS = 8


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_CHARS]


def dns_label(text: str, *, max_length: int = 63, fallback: str = "x") -> str:
    """``text`` as a DNS-1123 label of at most ``max_length`` characters, unique per input."""
    if len(text) <= max_length and not dns1123_label_errors(text):
        return text
    base = _NOT_DNS.sub("-", _ascii(text).lower()).strip("-") or fallback
    base = base[: max_length - _HASH_CHARS - 1].rstrip("-")
    return f"{base}-{_short_hash(text)}" if base else _short_hash(text)


def dns_prefix(text: str, *, max_length: int, fallback: str) -> str:
    """A readable DNS-1123 fragment of ``text`` (no hash): for ``generateName``, where the server adds randomness."""
    base = _NOT_DNS.sub("-", _ascii(text).lower()).strip("-")[:max_length].rstrip("-")
    return base or fallback


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value (63 characters of ``[A-Za-z0-9_.-]``), unique per input."""
    if not label_value_errors(text):
        return text
    base = _NOT_LABEL.sub("-", _ascii(text)).strip("-_.")
    base = base[: 63 - _HASH_CHARS - 1].rstrip("-_.")
    return f"{base}-{_short_hash(text)}" if base else _short_hash(text)


def notebook_label(path: str) -> str:
    """The label value for a notebook path: folders joined with '.' (``examples.train.ipynb``)."""
    return label_value(path.replace("/", "."))


def generate_name(name: str) -> str:
    """``nbscale-<name>-`` within the length the API server accepts for ``generateName``."""
    prefix = "nbscale-"
    return f"{prefix}{dns_prefix(name, max_length=GENERATE_NAME_KEPT - len(prefix) - 1, fallback='run')}-"


def claim_name(template: str, user: str) -> str:
    """The workspace PersistentVolumeClaim of ``user``: ``template`` with a DNS-safe ``{username}``."""
    return template.format(username=dns_label(user, max_length=63 - len(template.format(username=""))))
