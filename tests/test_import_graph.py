"""The project's modules import one another one way only: no circle, at module or function level.

The graph is built with `ast` from the source, not by importing it. Every `import` and `from ... import`
counts, wherever it stands: an import inside a function is deferred, not gone, and two modules that
import each other that way still form a circle at run time (DESIGN.md, "Nothing reaches back up the
chain"). `if TYPE_CHECKING:` imports count too: a type that must come from a caller is a sign the
pieces sit in the wrong module. An import of a package counts as an import of its `__init__`, and
`from pkg import name` as an import of `pkg.name` when that is a module, else of `pkg`'s `__init__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("workflow_compiler", "notebook_plugin", "hub_extension")

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of a source file under `root` (a package's `__init__` is the package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "node_modules" not in path.parts:
                modules[module_name(path, root)] = path
    return modules


def _base(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The module a relative `from` names, seen from `module`."""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join(parts + ([target] if target else []))


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """`name` or its nearest enclosing project module (`a.b.c` that is a function in `a.b` → `a.b`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, is_package, node.level, node.module) if node.level else node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for target in map(lambda name: _known(name, modules), names) if target)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT) -> Graph:
    """Module → the project modules it imports."""
    modules = project_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycles(graph: Graph) -> list[list[str]]:
    """One circle per strongly connected component with more than one module (Tarjan's algorithm).

    Written here because the test must not need a graph library the project does not otherwise use.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, set(component)) for component in components]


def _circle(graph: Graph, component: set[str]) -> list[str]:
    """A shortest path a → ... → a inside one strongly connected component, to name in the failure."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node] & component):
            if succ == start:
                return paths[node] + [start]
            if succ not in paths:
                paths[succ] = paths[node] + [succ]
                queue.append(succ)
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_project_has_no_import_circle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "modules import each other; move the shared piece down to the module that owns it:\n" + "\n".join(
        " → ".join(cycle) for cycle in cycles
    )


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {"workflow_compiler/__init__.py": "", "workflow_compiler/a.py": "from . import b\n",
             "workflow_compiler/b.py": "def f():\n    from .a import x\n"},
            [["workflow_compiler.a", "workflow_compiler.b", "workflow_compiler.a"]],
            id="function-level-import-counts",
        ),
        pytest.param(
            {"workflow_compiler/__init__.py": "from .sub import thing\n", "workflow_compiler/sub/__init__.py": "",
             "workflow_compiler/sub/thing.py": "import workflow_compiler\n"},
            [["workflow_compiler", "workflow_compiler.sub.thing", "workflow_compiler"]],
            id="package-import-is-its-init",
        ),
        pytest.param(
            {"workflow_compiler/__init__.py": "", "workflow_compiler/sub/__init__.py": "",
             "workflow_compiler/sub/a.py": "from ..top import f\n",
             "workflow_compiler/top.py": "from workflow_compiler.sub.a import g\n"},
            [["workflow_compiler.sub.a", "workflow_compiler.top", "workflow_compiler.sub.a"]],
            id="relative-parent-import",
        ),
        pytest.param(
            {"workflow_compiler/__init__.py": "", "workflow_compiler/a.py": "from . import b\n",
             "workflow_compiler/b.py": "import json\n"},
            [],
            id="one-way-is-fine",
        ),
    ],
)
def test_find_cycles_names_the_circle(tmp_path: Path, files: dict[str, str], expected: list[list[str]]) -> None:
    _write(tmp_path, files)
    for package in PACKAGES[1:]:
        (tmp_path / package).mkdir(exist_ok=True)
    assert find_cycles(import_graph(tmp_path)) == expected
