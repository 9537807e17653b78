"""User text becomes valid Kubernetes names and label values, distinct inputs staying distinct."""

from __future__ import annotations

import pytest

from workflow_compiler.compiler.naming import (
    claim_name,
    dns_label,
    generate_name,
    label_value,
    notebook_label,
)
from workflow_compiler.k8s_names import (
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_value_errors,
)

AWKWARD = ["alice", "Alice", "alice@example.com", "josé", "Ève 🚀", "中文", "", "-", "__", "a" * 100, "x." * 40,
           "{{workflow.name}}", "$(id)", "a/b/c.ipynb", "1abc", "a--b", "alice_smith", "alice-smith", "ALICE-SMITH"]


@pytest.mark.parametrize("text", AWKWARD)
def test_outputs_are_valid(text: str) -> None:
    assert label_value_errors(label_value(text)) == []
    assert label_value_errors(notebook_label(text)) == []
    assert dns1123_label_errors(dns_label(text)) == []
    assert dns1123_subdomain_errors(generate_name(text), prefix=True) == []
    assert len(generate_name(text)) <= 58 and generate_name(text).startswith("nbscale-")
    assert dns1123_subdomain_errors(claim_name("claim-{username}", text)) == []
    assert len(claim_name("claim-{username}", text)) <= 63


def test_distinct_inputs_give_distinct_outputs() -> None:
    assert len({label_value(t) for t in AWKWARD}) == len(AWKWARD)
    assert len({dns_label(t) for t in AWKWARD}) == len(AWKWARD)


@pytest.mark.parametrize(("text", "kept_as_label", "kept_as_dns"), [
    ("alice", True, True), ("1abc", True, True), ("alice_smith", True, False), ("Alice", True, False),
    ("alice@example.com", False, False),
])
def test_valid_values_are_kept_and_others_get_a_hash_suffix(text: str, kept_as_label: bool, kept_as_dns: bool) -> None:
    assert (label_value(text) == text) is kept_as_label
    assert (dns_label(text) == text) is kept_as_dns
    if not kept_as_dns:
        assert len(dns_label(text).rpartition("-")[2]) == 8


def test_readable_forms() -> None:
    assert notebook_label("examples/train.ipynb") == "examples.train.ipynb"
    assert generate_name("My Notebook (v2)") == "nbscale-my-notebook-v2-"
    assert generate_name("中文") == "nbscale-run-"
    assert claim_name("claim-{username}", "alice") == "claim-alice"
    assert claim_name("claim-{username}", "alice@example.com").startswith("claim-alice-example-com-")
