"""The shape of the code (../shared/DESIGN.md): imports flow downward with no circle, and
modules and functions fit on a screen.

The import graph is read with ast from every import statement of mtkit/, at any depth
(the imports inside functions too: a lazy import is still an edge). No torch needed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mtkit"
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module and package of mtkit/."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(encoding="utf-8")) for name, path in MODULES.items()}


def _known(name: str) -> str | None:
    """The mtkit module `name` is, or is in (mtkit.train.data.load_run_data -> mtkit.train.data)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The mtkit modules one import statement of `module` reaches."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the package that holds `module`
        package = module.split(".")
        if MODULES[module].name != "__init__.py":
            package.pop()
        package = package[: len(package) - node.level + 1]
        base = ".".join(package + ([base] if base else []))
    # `from mtkit.train import distributed` imports a module; `from mtkit.io import x`, a name.
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
        for alias in node.names
    ]


def import_graph() -> dict[str, set[str]]:
    """Module -> the mtkit modules it imports anywhere in its file."""
    graph = {}
    for module, tree in TREES.items():
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, node):
                    if target.split(".")[0] == "mtkit" and (found := _known(target)):
                        edges.add(found)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _unit(module: str) -> str:
    """The stage or shared module a module belongs to: mtkit.train.loop -> mtkit.train."""
    return ".".join(module.split(".")[:2])


def _imports_of(unit: str, graph: dict[str, set[str]]) -> set[str]:
    """Every module that modules of `unit` import."""
    return {t for m, targets in graph.items() if _unit(m) == unit for t in targets}


def test_the_graph_reads_lazy_and_relative_imports():
    """The graph holds what the test relies on: a lazy import inside a function is an edge,
    a package's module imported by name is that module, and a cycle is found."""
    graph = import_graph()
    assert "mtkit.train.setup" in graph["mtkit.train"]  # lazy, inside train()
    assert "mtkit.errors" in graph["mtkit.translate.stream"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, f"import cycles between modules: {found}"


def test_no_import_cycle_between_stages():
    """Folded to stages and shared modules (mtkit.train, mtkit.translate, mtkit.search ...):
    still no circle. The package's own __init__ (the version) stands below everything."""
    graph = import_graph()
    folded: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module != "mtkit":
            edges = folded.setdefault(_unit(module), set())
            edges |= {_unit(t) for t in targets if t != "mtkit" and _unit(t) != _unit(module)}
    found = cycles(folded)
    assert not found, f"import cycles between stages: {found}"


def test_stages_import_downward():
    graph = import_graph()
    above_models = ("mtkit.train", "mtkit.translate", "mtkit.interop", "mtkit.cli")
    wrong = sorted(t for t in _imports_of("mtkit.models", graph) if _unit(t) in above_models)
    assert not wrong, f"mtkit.models imports {wrong}"
    wrong = sorted(t for t in _imports_of("mtkit.train", graph) if _unit(t) == "mtkit.translate")
    assert not wrong, f"mtkit.train imports {wrong}"
    wrong = sorted(t for t in _imports_of("mtkit.translate", graph) if _unit(t) == "mtkit.train")
    assert not wrong, f"mtkit.translate imports {wrong}"


def test_modules_fit():
    long = {
        name: n
        for name, path in MODULES.items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_fit_on_a_screen():
    long = sorted(
        f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree in TREES.items()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    )
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
