"""The package's shape: every module imports, and no module of ferkit/ imports one that imports it back.

Imports are read from the source (``ast``), lazy ones inside functions included, so a cycle is
caught even when Python would not trip over it at import time.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "ferkit"
MODULE_FILES = sorted([*PACKAGE.glob("*.py"), *(PACKAGE / "app").glob("*.py")])


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in MODULE_FILES}


def imported(path: Path) -> set[str]:
    """The ferkit modules that ``path`` imports anywhere in its code (relative imports resolved)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import infer` names a module
    return {m for m in found if m in MODULES and m != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_one_that_imports_it_back():
    graph = {name: imported(path) for name, path in MODULES.items()}
    assert "ferkit.faces" in graph["ferkit.infer"] and "ferkit.weights" in graph["ferkit.faces"]  # the walk works
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", [m for m in MODULES if m not in ("ferkit.__main__", "ferkit.app.main")])
def test_every_module_imports(name):
    if name in ("ferkit.train", "ferkit.export", "ferkit.ensemble", "ferkit.checkpoint", "ferkit.torch_infer"):
        pytest.importorskip("torch")
    importlib.import_module(name)
