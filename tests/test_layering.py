"""The import direction of the package (docs/architecture.md): lower layers never import higher ones,
and no module imports itself back through others. Every module of `llava15/` is covered, no exemptions."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llava15"

# layer of a module -> layers it may import (the package `__init__` is the public API: layer "")
ALLOWED = {
    "config": set(),
    "data": {"config", "data"},
    "model": {"config", "data", "model"},
    "train": {"config", "data", "model", "train"},
    "infer": {"config", "data", "model", "infer"},
    "eval": {"config", "data", "model", "infer", "eval"},
    "demo": {"config", "data", "model", "train", "infer", "eval", "demo"},
    "testing": {"config", "data", "model", "demo"},
    "cli": {"config", "data", "model", "train", "infer", "eval", "demo", "cli", ""},
    "": {"config", "data", "model", "infer", ""},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(path: Path):
    """(imported llava15 module, line) for every import, lazy ones inside functions included;
    `from a.b import c` names the submodule `a.b.c` when there is one, else `a.b`."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in MODULES else node.module), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_every_module_has_a_layer():
    unknown = sorted(m for m in MODULES if _layer(m) not in ALLOWED)
    assert not unknown, f"modules outside every layer of the table: {unknown}"


def test_lower_layers_never_import_higher_ones():
    problems = []
    for name, path in MODULES.items():
        layer = _layer(name)
        for module, line in _imports(path):
            if not module.startswith("llava15"):
                continue
            target = _layer(module)
            if target == "infer" and layer == "eval" and not module.startswith("llava15.infer.engine"):
                problems.append(f"{name}:{line} imports {module} (eval may use only infer.engine)")
            elif target not in ALLOWED[layer]:
                problems.append(f"{name}:{line} imports {module}")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_no_import_circles():
    """Tarjan's strongly connected components over the module import graph (lazy imports included)."""
    graph = {name: sorted({m for m, _ in _imports(path) if m in MODULES and m != name})
             for name, path in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

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
                circles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_library_code_never_imports_testing():
    users = []
    for name, path in MODULES.items():
        if name in ("llava15.testing", "llava15.cli"):
            continue
        for module, line in _imports(path):
            if module == "llava15.testing":
                users.append(f"{name}:{line}")
    assert not users, f"library modules import llava15.testing: {users}"


def test_every_llava15_import_resolves():
    """Lazy imports inside functions run only on their path (a moved module breaks them silently): each
    `from llava15.x import name`, anywhere, must name a module or an attribute that exists."""
    import importlib

    broken = []
    for path in sorted(MODULES.values()):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.split(".")[0] == "llava15"):
                continue
            if node.module not in MODULES:
                broken.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: no module {node.module}")
                continue
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    continue
                if not hasattr(importlib.import_module(node.module), alias.name):
                    broken.append(f"{path.relative_to(PKG.parent)}:{node.lineno}: {node.module} has no {alias.name}")
    assert not broken, "\n".join(broken)
