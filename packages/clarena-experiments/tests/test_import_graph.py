"""clarena.experiments has no import cycle (read from the source with ``ast``).

An edge goes from a module to every clarena.experiments module it imports anywhere: at module
level, inside functions and in ``TYPE_CHECKING`` blocks alike, so a cycle cannot hide in a
deferred import. Importing
``a.b.c`` from outside package ``a.b`` runs ``a/b/__init__.py`` first, so that is an edge too:
``config_checks`` importing ``pipelines.common`` depended on ``pipelines/__init__``, which imports
``pipelines.cl``, which imported ``config_checks`` (the cycle #24 removed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import clarena.experiments

PACKAGE = "clarena.experiments"


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (the ``clarena/experiments`` dir)."""
    found = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join([PACKAGE, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that importing ``name`` imports first (see the module doc)."""
    is_package = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else base)
    edges = set()
    for target in targets:
        parts = target.split(".")
        for end in range(len(parts), 1, -1):
            ancestor = ".".join(parts[:end])
            # A package's own submodules do not re-run the package's __init__ as a dependency.
            if ancestor in known and not (name + ".").startswith(ancestor + "."):
                edges.add(ancestor)
    edges.discard(name)
    return edges


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def graph_of(root: Path) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def test_clarena_experiments_has_no_import_cycle() -> None:
    root = Path(clarena.experiments.__file__).parent
    graph = graph_of(root)
    assert f"{PACKAGE}.config_checks" in graph
    assert cycles(graph) == []


def test_the_check_finds_the_cycle_config_checks_had(tmp_path: Path) -> None:
    """The same check on the layout before #24 reports config_checks <-> pipelines."""
    package = tmp_path / "clarena" / "experiments"
    (package / "pipelines").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "errors.py").write_text("class PipelineConfigError(ValueError): ...\n")
    (package / "config_checks.py").write_text(
        "from clarena.experiments.pipelines.common import PipelineConfigError\n"
    )
    (package / "pipelines" / "__init__.py").write_text(
        "from clarena.experiments.pipelines.cl import run\n"
    )
    (package / "pipelines" / "common.py").write_text(
        "from clarena.experiments.errors import PipelineConfigError\n"
    )
    (package / "pipelines" / "cl.py").write_text(
        "from clarena.experiments import config_checks\n"
        "from clarena.experiments.pipelines.common import PipelineConfigError\n"
        "def run(): ...\n"
    )
    assert cycles(graph_of(package)) == [
        [
            f"{PACKAGE}.config_checks",
            f"{PACKAGE}.pipelines",
            f"{PACKAGE}.pipelines.cl",
        ]
    ]


def test_the_check_sees_imports_inside_functions_and_type_checking_blocks(tmp_path: Path) -> None:
    """A cycle closed by a deferred import (the sources <-> local_sources one #24 removed) counts."""
    package = tmp_path / "clarena" / "experiments"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sources.py").write_text(
        "def load():\n    from clarena.experiments.local_sources import READERS\n"
    )
    (package / "local_sources.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from clarena.experiments.sources import load\n"
    )
    assert cycles(graph_of(package)) == [[f"{PACKAGE}.local_sources", f"{PACKAGE}.sources"]]
