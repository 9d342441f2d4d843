"""The house: data flows one way, students -> envs -> teachers -> analysis, and no module imports
itself back through others. The graph is read from the source with ``ast`` (every import
statement, also those inside functions or under ``if TYPE_CHECKING``), so a late import cannot
hide a circle; a package's ``__init__`` counts as its own module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("students", "envs", "teachers", "analysis")
"""lowest first: a module may import its own layer and the ones before it"""
PACKAGES = (*LAYERS, "benchmarks", "experiments")
"""scanned for circles; benchmarks and experiments sit above every layer"""


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the project modules it imports (``from a import b`` names ``a.b`` when b is a
    module of the project, else ``a``)."""
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    package = name.split(".") if is_package else name.split(".")[:-1]
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([base] if base else [])])
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names
                ]
            for target in targets:
                while target and target not in files:  # `import a.b.c` of a non-module: its module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for module, targets in sorted(graph.items()):
        here = rank.get(module.split(".")[0])
        for target in sorted(targets):
            there = rank.get(target.split(".")[0])
            if here is not None and there is not None and there > here:
                bad.append(f"{module} imports {target} (up the layers)")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_no_module_imports_up_the_layers():
    assert layer_violations(import_graph(ROOT, PACKAGES)) == []


def test_the_module_graph_has_no_circles():
    assert cycles(import_graph(ROOT, PACKAGES)) == []


def test_the_graph_sees_known_edges():
    """The scan reads what is there: late imports, ``from pkg import module`` and packages."""
    graph = import_graph(ROOT, PACKAGES)
    assert "teachers.rmd" in graph["teachers.l2t_dlf"]  # `from teachers import rmd`
    assert "teachers.registry" in graph["teachers.base"]  # inside Teacher.load
    assert "envs.process" in graph["envs"]  # a package's __init__
    assert "students.data" in graph["envs.process"]


def plant(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(root, LAYERS)


@pytest.mark.parametrize("late", [False, True])
def test_a_planted_circle_is_found(tmp_path, late):
    """Two modules that import each other, the second import inside a function or not."""
    back = "def f():\n    from envs import a\n" if late else "from envs.a import x\n"
    graph = plant(
        tmp_path,
        {
            "envs/__init__.py": "",
            "envs/a.py": "from envs.b import y\nx = 1\n",
            "envs/b.py": back + "y = 2\n",
            "envs/c.py": "from envs.a import x\n",
        },
    )
    assert cycles(graph) == [["envs.a", "envs.b"]]


def test_a_planted_import_up_the_layers_is_found(tmp_path):
    graph = plant(
        tmp_path,
        {
            "students/__init__.py": "",
            "students/data.py": "def f():\n    from teachers.base import Teacher\n",
            "teachers/__init__.py": "",
            "teachers/base.py": "import students.data\n",
        },
    )
    assert layer_violations(graph) == ["students.data imports teachers.base (up the layers)"]
    assert cycles(graph) == [["students.data", "teachers.base"]]
