"""The import graph reads top-down: no cycles, and the data layer uses only leaf primitives.

Every `import` counts, also those inside functions (a lazy import that closes a loop is still a
loop a reader has to untangle). `from pkg import mod` is an edge to `pkg.mod` when that is a
module; importing a submodule is not counted as an edge to its package's `__init__`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "methods", "datasets")
# what datasets/ may import from the harness: leaf modules that import nothing of the project
PRIMITIVES = {"benchmark.errors", "benchmark.io"}


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                names = [s if s in mods else node.module for s in subs]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                target = resolve(name) if name.split(".")[0] in PACKAGES else None
                if target and target != mod:
                    edges[mod].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    edges = _graph()
    assert len(edges) > 50  # the walk found the packages
    assert _cycles(edges) == []


def test_the_checker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_datasets_use_only_the_harness_primitives() -> None:
    edges = _graph()
    uses = {t for m, ts in edges.items() if m.startswith("datasets") for t in ts
            if not t.startswith("datasets")}
    assert uses <= PRIMITIVES, sorted(uses - PRIMITIVES)
    for prim in PRIMITIVES:  # leaves: importing them never pulls in the harness (io raises
        assert edges[prim] <= PRIMITIVES - {prim}, (prim, edges[prim])  # errors' UserError)
    assert edges["benchmark.errors"] == set()
