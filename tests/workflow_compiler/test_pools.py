"""GPU pool configuration: the built-in default, YAML overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from workflow_compiler.errors import CompileError
from workflow_compiler.pools import load_pools


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBSCALE_POOLS", raising=False)


def test_builtin_pools() -> None:
    pools = load_pools()
    assert sorted(pools.pools) == ["a100", "a10g", "gpu", "h100", "t4"]
    assert pools.resolve(None, 0) is None
    assert pools.resolve(None, 1) == pools.pools["gpu"]
    assert pools.resolve("t4", 0).node_selector == {"nvidia.com/gpu.product": "Tesla-T4"}
    assert all(p.gpu_resource == "nvidia.com/gpu" for p in pools.pools.values())


def test_argument_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file, arg_file = tmp_path / "env.yaml", tmp_path / "arg.yaml"
    env_file.write_text("pools: {env: {}}\n", encoding="utf-8")
    arg_file.write_text("pools: {arg: {gpu_resource: amd.com/gpu}}\n", encoding="utf-8")
    monkeypatch.setenv("NBSCALE_POOLS", str(env_file))
    assert list(load_pools().pools) == ["env"]
    assert load_pools(arg_file).get("arg").gpu_resource == "amd.com/gpu"
    assert load_pools(arg_file).resolve(None, 1) is None  # no default pool: GPU limits only


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist; fix \\$NBSCALE_POOLS"),
    ("pools: [a, b", "cannot be read as YAML"),
    ("- a\n- b\n", "must hold a mapping, not list"),
    ("pools: {a100: {node_selector: {gpu: 'A 100'}}}", "node selector 'gpu': value"),
    ("pools: {a100: {tolerations: [{key: k, operator: Exists, value: v}]}}", "operator Exists must not have a value"),
    ("pools: {a100: {tolerations: [{key: k, effect: Sometimes}]}}", "pools.a100.tolerations.0.effect"),
    ("pools: {a100: {gpu_resource: gpu}}", "not an extended resource name"),
    ("pools: {A100: {}}", "pool name 'A100'"),
    ("pools: {a100: {}}\ndefault_pool: h100\n", "default_pool 'h100' is not one of the pools: a100"),
    ("pools: {a100: {nodeSelector: {a: b}}}", "pools.a100.nodeSelector: Extra inputs are not permitted"),
])
def test_bad_pool_files_are_compile_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "pools.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CompileError, match=message):
        load_pools(path)
