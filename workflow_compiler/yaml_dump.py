"""YAML that Argo, kubectl and Helm read back as written: the one dumper for manifests and chart values.

PyYAML's safe dumper has no option for either rule below, so ``ManifestDumper`` adds them to its
own copy of the string representer (never to PyYAML's global one, which other code shares):

- a string with a line break is written as a literal block (``|``), so an embedded manifest (a
  sweep's RayJob) reads as YAML a reviewer can diff rather than one escaped line;
- ``y``, ``Y``, ``n`` and ``N`` are quoted: YAML 1.1, which Go's YAML readers follow, reads them
  bare as booleans, and PyYAML writes them bare.

The compiler emitted exactly this while it was built on hera, which sets the same rules on PyYAML
for the whole process; the golden files hold the output to it.
"""

from __future__ import annotations

from typing import Any

import yaml

_YAML11_BOOLEANS = frozenset({"y", "Y", "n", "N"})
_STR = "tag:yaml.org,2002:str"
#: A ``width`` that never folds a line: a folded JSON argument is harder to read and to diff.
NO_WRAP = 2**31 - 1


class ManifestDumper(yaml.SafeDumper):
    """A SafeDumper whose strings read back as the same strings, with multi-line text as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar(_STR, data, style="|")
    if data in _YAML11_BOOLEANS:
        return dumper.represent_scalar(_STR, data, style="'")
    return dumper.represent_scalar(_STR, data)


ManifestDumper.add_representer(str, _represent_str)


def dump_yaml(data: Any, **options: Any) -> str:
    """``data`` as YAML through ``ManifestDumper``; ``options`` as for ``yaml.safe_dump``."""
    return yaml.dump(data, Dumper=ManifestDumper, **options)


def dump_yaml_all(documents: list[Any], **options: Any) -> str:
    """``documents`` as multi-document YAML through ``ManifestDumper``; ``options`` as for ``yaml.safe_dump_all``."""
    return yaml.dump_all(documents, Dumper=ManifestDumper, **options)
