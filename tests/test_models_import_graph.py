"""The modules of cnnkit.models import each other without cycles (module- and function-level)."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnkit

PACKAGE = "cnnkit.models"
MODELS_DIR = Path(cnnkit.__file__).resolve().parent / "models"


def module_names(package_dir: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``package_dir``."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join([package, *parts])] = path
    return names


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The modules in ``known`` that ``module`` imports anywhere in its file (any nesting)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, is_package, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in known:  # ``from pkg import submodule``
                    found.add(submodule)
                elif source in known:  # ``from module import name`` (a package's __init__ too)
                    found.add(source)
    found.discard(module)
    return found


def import_graph(package_dir: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports."""
    names = module_names(package_dir, package)
    known = set(names)
    return {name: imported_modules(name, path, known) for name, path in names.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None when the graph is acyclic."""
    state: dict[str, str] = {}  # "open" while on the DFS stack, then "done"
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_graph_sees_module_and_function_level_imports(tmp_path):
    pkg = _write(
        tmp_path / "pkg",
        {
            "__init__.py": "from pkg import a  # noqa\n",
            "a.py": "from pkg.b import thing\n",
            "b.py": "import os\n\ndef f():\n    from . import c\n    return c\n",
            "c.py": "def g():\n    import pkg.a\n",
            "d.py": "from pkg import name_in_init\n",
        },
    )
    graph = import_graph(pkg, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.c"},
        "pkg.c": {"pkg.a"},
        "pkg.d": {"pkg"},
    }
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]


def test_find_cycle_on_an_acyclic_graph():
    graph = {"x": {"y", "z"}, "y": {"z"}, "z": set(), "w": {"x"}}
    assert find_cycle(graph) is None
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_models_package_has_no_import_cycles():
    graph = import_graph(MODELS_DIR, PACKAGE)
    # The graph is the real one: the family modules do import the registry.
    assert f"{PACKAGE}.registry" in graph[f"{PACKAGE}.torchvision_models"]
    assert f"{PACKAGE}.timm_models" in graph[PACKAGE]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in cnnkit.models: " + " -> ".join(cycle or [])
