"""The manifest dumper: strings read back as written, multi-line text as literal blocks, PyYAML's own dumper untouched."""

from __future__ import annotations

import pytest
import yaml

from workflow_compiler.yaml_dump import dump_yaml, dump_yaml_all


@pytest.mark.parametrize(("value", "written"), [
    ("y", "key: 'y'\n"),  # YAML 1.1 (Go's readers) would read a bare y as true
    ("N", "key: 'N'\n"),
    ("yes", "key: 'yes'\n"),  # PyYAML quotes the long forms itself
    ("plain", "key: plain\n"),
    ("a\nb\n", "key: |\n  a\n  b\n"),
    ("kind: RayJob\nspec: {}\n", "key: |\n  kind: RayJob\n  spec: {}\n"),
])
def test_strings_are_written_so_that_yaml_1_1_reads_them_back(value: str, written: str) -> None:
    text = dump_yaml({"key": value}, sort_keys=False, default_flow_style=False)
    assert text == written
    assert yaml.safe_load(text) == {"key": value}


def test_documents_are_separated_and_read_back() -> None:
    documents = [{"name": "n", "text": "one\ntwo\n"}, {"name": "y"}]
    text = dump_yaml_all(documents, sort_keys=False, default_flow_style=False)
    assert "name: 'n'" in text and "---" in text
    assert list(yaml.safe_load_all(text)) == documents


def test_pyyaml_global_dumper_is_left_alone() -> None:
    dump_yaml({"key": "y"})
    assert yaml.safe_dump({"key": "y"}) == "key: y\n"
