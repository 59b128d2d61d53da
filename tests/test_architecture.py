"""Imports point down only: an ast analysis of every ``import`` in the package, lazy ones inside functions included.

The layers (ARCHITECTURE.md), top first; a package may import from its own layer's package and from
any layer below, never from above, and no two packages import each other, directly or in a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import slimgen

PACKAGE = Path(slimgen.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("slimgen", "__main__"),  # the package root: the composition root that registers implementations
    ("cli", "api"),  # api: the Python facade (slimgen.api), beside the command line
    ("pipeline",),
    ("report",),
    ("sample",),
    ("distill",),
    ("prune",),
    ("train",),
    ("evaluate",),
    ("runtime",),
    ("export",),
    ("quantize",),
    ("methods",),  # the registry of methods (slimgen/methods.py), registered into from every layer above
    ("models",),
    ("storage",),
    ("data",),
    ("io",),
    ("errors", "_env"),
]
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _unit(path: Path) -> str:
    """The package (or top-level module) a file belongs to: ``train`` for slimgen/train/loop.py."""
    rel = path.relative_to(PACKAGE)
    if len(rel.parts) == 1:
        return "slimgen" if rel.stem == "__init__" else rel.stem
    return rel.parts[0]


def _targets(node: ast.AST) -> list[str]:
    """Absolute slimgen module names an import statement names (relative imports resolved are not used here)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if node.module == "slimgen":  # from slimgen import train
            return [f"slimgen.{a.name}" for a in node.names]
        return [node.module]
    return []


def import_edges() -> list[tuple[str, str, str, int]]:
    """(importing unit, imported unit, file, line) for every import of another slimgen unit, at any depth."""
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        src = _unit(path)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                raise AssertionError(f"{path}:{node.lineno}: relative import; slimgen uses absolute imports")
            for name in _targets(node):
                parts = name.split(".")
                if parts[0] != "slimgen" or len(parts) == 1:
                    continue
                dst = parts[1]
                if dst != src:
                    edges.append((src, dst, str(path.relative_to(PACKAGE.parent)), node.lineno))
    return edges


def _cycles(edges: list[tuple[str, str, str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, *_ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_unit_has_a_layer() -> None:
    units = {_unit(p) for p in PACKAGE.rglob("*.py")}
    assert units - set(LAYER_OF) == set(), "add new packages to LAYERS (and ARCHITECTURE.md)"


def test_no_import_runs_up_a_layer() -> None:
    upward = [f"{file}:{line}: {src} (layer {LAYER_OF[src]}) imports {dst} (layer {LAYER_OF[dst]})"
              for src, dst, file, line in import_edges() if LAYER_OF[dst] < LAYER_OF[src]]
    assert upward == []


def test_no_package_level_cycle() -> None:
    assert _cycles(import_edges()) == []


def test_the_analysis_sees_lazy_imports_and_cycles() -> None:
    """The checks can fail: a function-level import is an edge, and a circle is reported."""
    tree = ast.parse("def f():\n    from slimgen.cli.app import app\n")
    assert [t for n in ast.walk(tree) for t in _targets(n)] == ["slimgen.cli.app"]
    assert _cycles([("a", "b", "x", 1), ("b", "c", "x", 2), ("c", "a", "x", 3), ("c", "d", "x", 4)]) == [["a", "b", "c"]]
    assert _cycles([("a", "b", "x", 1)]) == []


@pytest.mark.parametrize("name", ["storage", "quantize", "train", "prune"])
def test_the_known_circles_are_gone(name: str) -> None:
    """The circles issue 17 found (storage -> quantize -> models -> storage; quantize <-> train through QAT;
    prune -> distill -> prune through the schedules) stay broken."""
    assert all(name not in c for c in _cycles(import_edges()))
