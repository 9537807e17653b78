"""Kubernetes naming rules: object names, label keys and values, as the API server checks them.

Each function returns a list of problems (empty when the value is valid), so callers can report
all of them at once. The compiler uses the same rules to sanitise what it emits; the validator
uses them to check ObjectMeta, which CRD schemas leave opaque.
"""

from __future__ import annotations

import re

DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253
LABEL_VALUE_MAX = 63
QUALIFIED_NAME_MAX = 63
#: The API server appends 5 random characters to ``generateName`` and keeps names within 63.
GENERATE_NAME_KEPT = 58

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def dns1123_label_errors(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1123 label (namespaces, container and port names)."""
    problems = []
    if len(value) > DNS1123_LABEL_MAX:
        problems.append(f"must be at most {DNS1123_LABEL_MAX} characters")
    if not _DNS1123_LABEL.fullmatch(value):
        problems.append(
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit"
            " (for example 'my-name')"
        )
    return problems


def dns1123_subdomain_errors(value: str, *, prefix: bool = False) -> list[str]:
    """Problems with ``value`` as an RFC 1123 subdomain (the name of most objects).

    With ``prefix=True`` the value is a ``generateName``: a trailing '-' is allowed, because the
    server appends random characters to it.
    """
    checked = (
        value[:-1] + "a" if prefix and len(value) > 1 and value.endswith("-") else value
    )
    problems = []
    if len(checked) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be at most {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(checked):
        problems.append(
            "must be lowercase letters, digits, '-' and '.', starting and ending with a letter or"
            " digit (for example 'train-model' or 'train.v2')"
        )
    return problems


def qualified_name_errors(value: str) -> list[str]:
    """Problems with ``value`` as a label or annotation key: ``[dns-subdomain/]name``."""
    prefix, sep, name = value.rpartition("/")
    problems = []
    if sep:
        if not prefix:
            problems.append("prefix before '/' must not be empty")
        else:
            problems.extend(f"prefix {p}" for p in dns1123_subdomain_errors(prefix))
    if not name:
        problems.append("name part must not be empty")
        return problems
    if len(name) > QUALIFIED_NAME_MAX:
        problems.append(f"name part must be at most {QUALIFIED_NAME_MAX} characters")
    if not _QUALIFIED_NAME_PART.fullmatch(name):
        problems.append(
            "name part must be letters, digits, '-', '_' and '.', starting and ending with a"
            " letter or digit (for example 'nbscale.io/run-id')"
        )
    return problems


def label_value_errors(value: str) -> list[str]:
    """Problems with ``value`` as a label value (may be empty)."""
    problems = []
    if len(value) > LABEL_VALUE_MAX:
        problems.append(f"must be at most {LABEL_VALUE_MAX} characters")
    if not _LABEL_VALUE.fullmatch(value):
        problems.append(
            "must be empty, or letters, digits, '-', '_' and '.', starting and ending with a"
            " letter or digit"
        )
    return problems
