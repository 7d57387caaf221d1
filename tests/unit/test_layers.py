"""Layers: each part of tfpathloader imports only the parts below it, and no two modules cycle.

The import graph is read from the source with ``ast``: every ``import`` and ``from ... import``
anywhere in a module (function-level and ``TYPE_CHECKING`` ones included, relative ones
resolved), so a lazy import cannot hide an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT, run_python

PACKAGE = "tfpathloader"

# NOTE [layers]: bottom to top. Each part of the package (a sub-package or a top-level module;
# "" is tfpathloader/__init__, the lazy public names) -> the parts it may import besides its own
# modules. `order` is pure numpy (DESIGN.md §2).
_BOTTOM = {"_redact", "_version", "_utils", "errors"}
_BELOW_LOAD = _BOTTOM | {"storage", "index", "order", "transforms", "_tf"}
MAY_IMPORT: dict[str, set[str]] = {
    "_redact": set(),
    "_version": set(),
    "_utils": set(),
    "errors": {"_redact"},
    "storage": {"_redact", "errors"},
    "index": _BOTTOM | {"storage"},
    "order": {"errors"},
    "transforms": set(),
    "_tf": _BOTTOM | {"storage", "index"},
    "load": _BELOW_LOAD,
    "tools": _BELOW_LOAD | {"load"},
}
MAY_IMPORT[""] = set(MAY_IMPORT)

# The one cycle left lies inside load/, which issue 22 item 1 rewrites: loader imports both
# backends (function level), they import loader's LoaderBase and LoaderConfig, checks imports
# LoaderConfig. Listed so that any other cycle fails, and so that this test fails once the
# rewrite removes it: delete the entry then.


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute name of a ``from X import ...`` target, relative levels resolved."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the tfpathloader modules it imports (each name resolved to the module defining
    it: ``from .order import spec`` is an edge to ``tfpathloader.order.spec``)."""
    files = {_module_name(p): p for p in Path(ROOT, PACKAGE).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(node, module, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    targets.add(sub if sub in files else source)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def part(module: str) -> str:
    """``tfpathloader.load.decode`` -> ``load``; ``tfpathloader.errors`` -> ``errors``."""
    return module.split(".")[1] if "." in module else ""


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_layer_table_itself_has_no_cycle():
    parts = {k: v for k, v in MAY_IMPORT.items() if k}
    assert strongly_connected(parts) == []


def test_every_module_imports_only_its_own_part_and_the_layers_below():
    graph = import_graph()
    unknown = sorted({part(m) for m in graph} - set(MAY_IMPORT))
    assert not unknown, f"place these parts of the package in MAY_IMPORT: {unknown}"
    breaks = [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if part(target) != part(module) and part(target) not in MAY_IMPORT[part(module)]
    ]
    assert not breaks, "imports against the layers (NOTE [layers]):\n" + "\n".join(breaks)


def test_no_import_cycle_between_modules():
    graph = import_graph()
    cycles = strongly_connected(graph)
    described = [
        " <-> ".join(c)
        + "".join(f"\n    {v} -> {w}" for v in c for w in sorted(graph[v]) if w in c)
        for c in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(described)


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    # A module-level relative import, and one inside a function (storage.read_url's).
    assert "tfpathloader.order.spec" in graph["tfpathloader.order.sampler"]
    assert "tfpathloader.errors" in graph["tfpathloader.storage"]


def test_importing_the_orders_loads_no_framework_and_no_loader():
    result = run_python(
        "import sys\nimport tfpathloader.order as o\n"
        "list(o.GlobalShuffleSampler(10, shuffle='buffer', buffer_size=4))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow')"
        " or m.startswith('tfpathloader.load')))"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"
