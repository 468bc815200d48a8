"""The package's shape: no import cycle between its modules, and no module over 400 lines.

Imports are read from the source (every `import` statement, including those inside functions; not
those under `if TYPE_CHECKING:`, which never run), so a cycle hidden in a function-level import is
found without running anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "netshrink"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str | None:
    """The module an imported name lives in: the longest prefix that is a module of the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, (ast.Name, ast.Attribute))
            and getattr(test, "id", getattr(test, "attr", "")) == "TYPE_CHECKING"
        ):
            skipped |= {id(inner) for inner in ast.walk(node)}
    return skipped


def imported_modules(module: str) -> set[str]:
    """The package modules `module` imports, anywhere in its source."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {resolve(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found |= {resolve(f"{base}.{alias.name}") for alias in node.names}
    return {name for name in found if name and name != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as a path that ends where it starts, or [] when there is none."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return stack[stack.index(successor) :] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        state[node] = "done"
        stack.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_the_import_reader_sees_function_level_and_relative_imports():
    graph = {module: imported_modules(module) for module in MODULES}
    assert "netshrink.format.container" in graph["netshrink.decoding"]
    assert "netshrink.zoo.protocols" in graph["netshrink.identity"]  # imported inside a method
    assert "netshrink.report.html" in graph["netshrink.api.outputs"]  # imported inside a function
    assert "netshrink.report.html" not in graph["netshrink.cli"]  # only under TYPE_CHECKING, or not at all
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph = {module: imported_modules(module) for module in MODULES}
    cycle = find_cycle(graph)
    assert not cycle, " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_are_short(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(PACKAGE.parent)} has {lines} lines (at most {MAX_LINES})"
