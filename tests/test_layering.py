"""The import direction of the package (see docs/interfaces.md): lower layers never import higher ones."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llava15"

# layer of a module -> layers it may import
ALLOWED = {
    "config": set(),
    "data": {"config", "data"},
    "model": {"config", "data", "model"},
    "train": {"config", "data", "model", "train"},
    "infer": {"config", "data", "model", "infer"},
    "eval": {"config", "data", "model", "infer", "eval"},
    "testing": {"config", "data", "model"},
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno


def test_lower_layers_never_import_higher_ones():
    problems = []
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG.parent).with_suffix("")
        layer = _layer(".".join(rel.parts))
        if layer not in ALLOWED:
            continue  # cli, demo, __init__: top level, may import anything
        for module, line in _imports(path):
            if not module.startswith("llava15."):
                continue
            target = _layer(module)
            if target == "infer" and layer == "eval" and not module.startswith("llava15.infer.engine"):
                problems.append(f"{rel}:{line} imports {module} (eval may use only infer.engine)")
            elif target not in ALLOWED[layer]:
                problems.append(f"{rel}:{line} imports {module}")
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_library_code_never_imports_testing():
    users = []
    for path in PKG.rglob("*.py"):
        rel = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        if rel in ("llava15.testing", "llava15.demo", "llava15.cli") or rel.startswith("llava15.demo"):
            continue
        for module, line in _imports(path):
            if module == "llava15.testing":
                users.append(f"{rel}:{line}")
    assert not users, f"library modules import llava15.testing: {users}"
