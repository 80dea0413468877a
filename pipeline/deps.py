"""dvc.yaml's code dependencies, derived from the imports: `python -m pipeline.deps`.

Each stage of dvc.yaml must list every project file its module runs, so that a change to any of them
reruns the stage, and no other, so that nothing else does. The import graph already says which files
those are: read from the source (nothing is imported), each module's `import pipeline...` and
`from pipeline... import ...` statements, anywhere in it, followed transitively, with the package
`__init__.py` files above each module (Python runs them on the way), but for those that run no code
(a docstring, and at most a lazy module `__getattr__`, which no stage asks for).

    python -m pipeline.deps            # rewrites the code lines of each stage's deps in dvc.yaml
    python -m pipeline.deps --check    # changes nothing; exit status 1 and the diff when dvc.yaml is stale

Only the `- pipeline/...` lines of a stage's `deps:` change; the data it reads (`${paths...}`), the
comments and everything else in dvc.yaml stay as written. tests/test_dvc_yaml.py fails, with this
command in its message, when dvc.yaml and the imports disagree.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import re
import sys
from pathlib import Path

from pipeline.common import atomic

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    """{dotted name: file} of every module of the `pipeline` package."""
    return {module_name(p, root): p for p in sorted((root / "pipeline").rglob("*.py"))}


def _without_lazy_getattr(tree: ast.Module) -> ast.Module:
    """A package's module-level __getattr__ imports only when its attribute is asked for
    (`from pipeline import Classifier`): not when a stage imports the package."""
    tree.body = [n for n in tree.body if not (isinstance(n, ast.FunctionDef) and n.name == "__getattr__")]
    return tree


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules a file imports anywhere in it (module level or inside a function, but
    for a module's lazy `__getattr__`).
    `from pipeline.x import y` counts as importing pipeline.x.y when y is a module, else pipeline.x."""
    found = set()
    for node in ast.walk(_without_lazy_getattr(ast.parse(path.read_text(), str(path)))):
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


def runs_code(path: Path) -> bool:
    """False for a file that holds only a docstring (and at most a lazy __getattr__): importing it
    defines nothing a stage uses, so editing it (its docstring) need rerun nothing."""
    body = _without_lazy_getattr(ast.parse(path.read_text(), str(path))).body
    docstring = len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    return not (docstring or not body)


def stage_files(stage: str, root: Path = ROOT, project: tuple | None = None) -> list[str]:
    """The files `python -m pipeline.<stage>` runs, relative to `root`: its own module first, then
    the rest in path order. `project`: read(root), if already read."""
    known, edges, quiet = project or read(root)
    own = f"pipeline.{stage}"
    if own not in known:
        raise SystemExit(f"error: dvc.yaml has a stage {stage!r} but pipeline/{stage}.py does not exist")
    files = {known[m] for m in loaded(own, edges) - {own} if m in known and m not in quiet}
    return [known[own].relative_to(root).as_posix(), *sorted(p.relative_to(root).as_posix() for p in files)]


def read(root: Path = ROOT) -> tuple[dict[str, Path], dict[str, set[str]], set[str]]:
    """(the modules, the import graph, the modules that run no code) of the package under `root`."""
    known = modules(root)
    return known, graph(root), {name for name, path in known.items() if not runs_code(path)}


STAGE = re.compile(r"^  (\w+):\s*$")  # a stage's name, under `stages:`
DEPS = re.compile(r"^    deps:\s*$")
CODE = re.compile(r"^      - pipeline/\S*\s*$")  # one code line of a deps list (no comment on it)
ITEM = re.compile(r"^      - ")


def render(text: str, root: Path = ROOT) -> str:
    """dvc.yaml's `text` with each stage's `- pipeline/...` deps lines replaced by the derived ones,
    where the first of them stood (after the stage's data deps when it had none)."""
    out: list[str] = []
    project = read(root)  # once: every stage's files come from the same reading
    section = stage = None
    in_deps = placed = False

    def place() -> bool:
        if not placed:
            out.extend(f"      - {f}" for f in stage_files(stage, root, project))
        return True

    for line in text.splitlines():
        if re.match(r"^[^\s#]", line):
            section, stage, in_deps = line.split(":")[0], None, False
        elif section == "stages" and (m := STAGE.match(line)):
            stage, in_deps, placed = m.group(1), False, False
        elif stage and DEPS.match(line):
            in_deps = True
        elif in_deps and not ITEM.match(line):
            placed, in_deps = place(), False  # a deps list without code lines: the code after its data
        if in_deps and CODE.match(line):
            placed = place()  # where the first code line stood; the others dropped
            continue
        out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.deps", description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=ROOT / "dvc.yaml", help="the pipeline file (default: dvc.yaml)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit status 1 and the diff if stale")
    args = parser.parse_args(argv)
    text = args.file.read_text()
    derived = render(text, args.file.resolve().parent)
    if derived == text:
        print(f"deps: {args.file.name} lists every file each stage imports, and nothing else")
        return 0
    diff = "".join(difflib.unified_diff(text.splitlines(True), derived.splitlines(True), str(args.file), "derived"))
    if args.check:
        print(diff + f"deps: {args.file.name} is stale: run python -m pipeline.deps", file=sys.stderr)
        return 1
    atomic.write_text(args.file, derived)
    print(diff + f"deps: {args.file.name} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
