"""The shape of `discopop_cli/`: one package per concern, imports pointing one way, no circles.

Each package's `__init__` docstring ends with a `May import:` line naming the packages its modules may import
from; this test reads those lines and the import statements of every module (top level, inside functions and
under TYPE_CHECKING alike) and fails on:

- a module sitting flat in `discopop_cli/` other than `__init__`, `cli` and `__main__`;
- a package without a docstring or without its `May import:` line;
- an import of a package its `May import:` line does not name, or of `discopop_cli.cli` from below it;
- declared layers that themselves form a circle;
- a circle between modules, even inside one package.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "discopop_cli"
FLAT_ALLOWED = {"__init__.py", "cli.py", "__main__.py"}
TOP_LEVEL = {PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.__main__"}


@dataclass
class Layout:
    modules: dict[str, set[str]]  # module -> discopop_cli modules it imports
    layers: dict[str, set[str]]  # package -> packages it may import
    problems: list[str]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.Module, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The discopop_cli modules an AST imports; `from pkg import sub` counts as `pkg.sub` when sub is a module."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def may_import_line(doc: str | None) -> set[str] | None:
    for line in (doc or "").splitlines():
        if line.strip().startswith("May import:"):
            value = line.split(":", 1)[1].strip().rstrip(".")
            if value.startswith("nothing"):
                return set()
            return {item.strip() for item in value.split(",") if item.strip()}
    return None


def read_layout(root: Path) -> Layout:
    problems = []
    for path in sorted(root.glob("*.py")):
        if path.name not in FLAT_ALLOWED:
            problems.append(f"{path.name} sits flat in {root.name}/; move it into the package that owns its concern")
    files = {module_name(root, p): p for p in root.rglob("*.py")}
    known = set(files)
    trees = {name: ast.parse(path.read_text(encoding="utf-8"), str(path)) for name, path in files.items()}
    layers: dict[str, set[str]] = {}
    for init in sorted(root.glob("*/__init__.py")):
        package = init.parent.name
        doc = ast.get_docstring(trees[f"{PACKAGE}.{package}"])
        allowed = may_import_line(doc)
        if allowed is None:
            problems.append(f"{package}/__init__.py has no docstring ending in a `May import:` line")
            allowed = set()
        layers[package] = allowed
    for package in sorted({p.parent.name for p in root.glob("*/*.py")} - set(layers)):
        problems.append(f"{package}/ has no __init__.py saying what it owns and may import")
    modules = {
        name: imported_modules(trees[name], name, files[name].name == "__init__.py", known) - {name} for name in files
    }
    for name, targets in sorted(modules.items()):
        if name in TOP_LEVEL:
            continue
        package = name.split(".")[1]
        for target in sorted(targets):
            if target in TOP_LEVEL:
                problems.append(f"{name} imports {target}: only the command line sits above the packages")
                continue
            other = target.split(".")[1]
            if other != package and other not in layers.get(package, set()):
                problems.append(f"{name} imports {target}, but {package}/ may import only: {_names(layers[package])}")
    for package, allowed in sorted(layers.items()):
        for other in sorted(allowed - set(layers)):
            problems.append(f"{package}/ may import `{other}`, which is not a package")
    for cycle in cycles({p: a & set(layers) for p, a in layers.items()}):
        problems.append("the packages' `May import:` lines form a circle: " + " -> ".join([*cycle, cycle[0]]))
    for cycle in cycles(modules):
        problems.append("import circle: " + " -> ".join([*cycle, cycle[0]]))
    return Layout(modules, layers, problems)


def _names(packages: set[str]) -> str:
    return ", ".join(sorted(packages)) or "nothing"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component with more than one node (Tarjan), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(_circle_through(sorted(component), graph))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _circle_through(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest circle inside the component, from its first member (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component


# --- the project itself ----------------------------------------------------------------------------------


def test_the_package_follows_its_declared_layers(repo_root: Path) -> None:
    layout = read_layout(repo_root / PACKAGE)
    assert layout.problems == []
    # The layering this project promises: core at the bottom, the command line alone on top.
    assert layout.layers["core"] == set()
    assert {"core", "recipes", "data", "losses", "train", "merge", "export", "eval"} <= set(layout.layers)
    assert all("core" in allowed for package, allowed in layout.layers.items() if package != "core")


def test_the_command_line_assembles_every_package_command(repo_root: Path) -> None:
    """Each package defines its commands in its own `cli.py`; `discopop_cli/cli.py` lists them by module path (and
    imports them only when asked), so it imports nothing from the packages but `core`."""
    from discopop_cli.cli import COMMANDS

    defined = {f"{PACKAGE}.{path.parent.name}.cli" for path in (repo_root / PACKAGE).glob("*/cli.py")}
    assert {module for module, _ in COMMANDS.values()} == defined
    assert {"train", "losses", "merge", "export", "chat", "eval", "discover"} <= {m.split(".")[1] for m in defined}
    layout = read_layout(repo_root / PACKAGE)
    assert {target.split(".")[1] for target in layout.modules[f"{PACKAGE}.cli"] if target.count(".") >= 1} == {"core"}


# --- the check fails when it should ------------------------------------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / PACKAGE


GOOD_TREE = {
    "__init__.py": "",
    "cli.py": "from discopop_cli.train import run\n",
    "core/__init__.py": '"""Ground.\n\nMay import: nothing else in discopop_cli.\n"""\n',
    "core/errors.py": "class UserError(Exception): ...\n",
    "data/__init__.py": '"""Data.\n\nMay import: core.\n"""\n',
    "data/load.py": "from discopop_cli.core.errors import UserError\n",
    "train/__init__.py": '"""Train.\n\nMay import: data, core.\n"""\n',
    "train/run.py": "from discopop_cli.data import load\n",
}


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    assert read_layout(write_tree(tmp_path, GOOD_TREE)).problems == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"data/load.py": "def f():\n    from discopop_cli.train.run import x\n"},
            "discopop_cli.data.load imports discopop_cli.train.run, but data/ may import only: core",
        ),
        (
            {"data/load.py": "from discopop_cli.data import other\n", "data/other.py": "from . import load\n"},
            "import circle: discopop_cli.data.load -> discopop_cli.data.other",
        ),
        (
            {"core/errors.py": "from discopop_cli.cli import app\n"},
            "discopop_cli.core.errors imports discopop_cli.cli: only the command line sits above the packages",
        ),
        ({"helpers.py": ""}, "helpers.py sits flat in discopop_cli/"),
        ({"eval/__init__.py": '"""Eval, no layer line."""\n'}, "eval/__init__.py has no docstring ending in a"),
        (
            {"core/__init__.py": '"""Ground.\n\nMay import: train.\n"""\n'},
            "the packages' `May import:` lines form a circle: core -> train -> core",
        ),
    ],
    ids=["upward-import", "module-circle", "core-imports-cli", "flat-module", "no-layer-line", "layer-circle"],
)
def test_a_broken_tree_is_named(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    problems = read_layout(write_tree(tmp_path, {**GOOD_TREE, **change})).problems
    assert any(problem.startswith(expected) for problem in problems), problems
