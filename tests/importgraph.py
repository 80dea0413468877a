"""The package's import graph, read from the source (nothing imported): which project modules each
module imports, anywhere in it, and what importing one loads. Shared by test_imports and test_dvc_yaml."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted name: file} of every module of the `pipeline` package."""
    return {module_name(p, root): p for p in sorted((root / "pipeline").rglob("*.py"))}


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules a file imports anywhere in it (module level or inside a function, but
    for a module's lazy `__getattr__`).
    `from pipeline.x import y` counts as importing pipeline.x.y when y is a module, else pipeline.x."""
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    # A package's module-level __getattr__ imports only when its attribute is asked for
    # (`from pipeline import Classifier`): not when a stage imports the package.
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "pipeline"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pipeline":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """{module: the project modules it names in an import}."""
    known = modules(root)
    return {name: imported(path, known) - {name} for name, path in known.items()}


def loaded(name: str, edges: dict[str, set[str]]) -> set[str]:
    """Every project module that importing `name` may load: what it imports, transitively, and the
    packages above each of them (importing pipeline.models.registry runs pipeline/models/__init__.py)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += edges.get(current, ())
    return seen


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None: depth-first search; grey nodes are on the current path."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "grey"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "grey":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "black"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None
