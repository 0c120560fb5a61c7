"""edgevit's modules import each other one way, and only at module top: zero import circles in the whole package.

Read from the source (no import runs), so a new circle or a function-local ``from edgevit...`` import that would
hide one fails here in well under a second. Lazy is the point only where ``LAZY`` says (ruff's PLC0415 has the same
per-file ignores): the CLI, whose start-up must not import torch.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["edgevit"]
LAZY = {"edgevit.cli", "edgevit.cli.pipeline", "edgevit.cli.tools"}


def _modules() -> dict[str, Path]:
    files = []
    for entry in PACKAGES:
        path = ROOT / entry
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    out = {}
    for f in files:
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _edgevit_imports(tree: ast.Module) -> list[tuple[ast.stmt, list[str]]]:
    """Each ``import edgevit...`` / ``from edgevit... import x`` with the modules it may load."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgevit"):
            found.append((node, [node.module] + [f"{node.module}.{a.name}" for a in node.names]))
        elif isinstance(node, ast.Import) and any(a.name.startswith("edgevit") for a in node.names):
            found.append((node, [a.name for a in node.names if a.name.startswith("edgevit")]))
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the scanned modules its imports run (a package's ``__init__`` included)."""
    graph = {}
    for name, path in modules.items():
        deps = set()
        for _, targets in _edgevit_imports(ast.parse(path.read_text())):
            for target in targets:
                parts = target.split(".")
                for i in range(2, len(parts) + 1):  # importing a.b.c runs a.b's __init__ too
                    dep = ".".join(parts[:i])
                    if dep in modules and dep != name and not name.startswith(dep + "."):
                        deps.add(dep)
        graph[name] = deps
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_scan_finds_the_modules_and_their_imports():
    graph = _graph(_modules())
    assert {"edgevit.models._factory", "edgevit.models._prune", "edgevit.data.constants", "edgevit.prune"} <= set(graph)
    assert "edgevit.models._prune" in graph["edgevit.prune"]  # the pruning tool uses the zoo, not the other way
    assert "edgevit.data.constants" in graph["edgevit.models.deit"]


def test_cycle_finder_reports_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles():
    assert _cycles(_graph(_modules())) == []


@pytest.mark.parametrize("name", sorted(set(_modules()) - LAZY))
def test_edgevit_imports_sit_at_module_top(name):
    tree = ast.parse(_modules()[name].read_text())
    top = {id(node) for node in tree.body}
    hidden = [node.lineno for node, _ in _edgevit_imports(tree) if id(node) not in top]
    assert hidden == [], f"{name}: function-local edgevit imports at lines {hidden}; import at the top"
