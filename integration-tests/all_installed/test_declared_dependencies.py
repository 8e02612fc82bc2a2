"""Each distribution declares what its source imports, and uses only its siblings' public API.

The source of every distribution under ``packages/`` is parsed (``ast``), not imported, so this
also covers modules that import lazily (inside a function). An import at module level needs a
``dependencies`` entry; one inside a function (an optional feature) may come from an extra.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2] / "packages"
DISTRIBUTIONS = sorted(p.parent.name for p in PACKAGES.glob("*/pyproject.toml"))

#: Import names whose distribution is named differently.
DISTRIBUTION_OF = {
    "yaml": "pyyaml",
    "sklearn": "scikit-learn",
    "typing_extensions": "typing-extensions",
    "hydra": "hydra-core",
    "lightning": "lightning",
    "PIL": "pillow",
}


#: Modules that exist for an extra (a test suite to subclass) and may import it at module level.
EXTRA_MODULES = {"clarena/backbones/testing.py": "test"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return normalise(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0])


def declared(distribution: str) -> tuple[set[str], set[str]]:
    """(``dependencies``, every extra's requirements) of ``distribution``, normalised names."""
    project = tomllib.loads((PACKAGES / distribution / "pyproject.toml").read_text())["project"]
    required = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        requirement_name(r)
        for group in project.get("optional-dependencies", {}).values()
        for r in group
    }
    return required, extras


def imports(distribution: str) -> list[tuple[Path, int, str, bool]]:
    """(file, line, imported module, at module level) for every import of the distribution."""
    found = []
    for path in sorted((PACKAGES / distribution / "src").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        top_level = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                found.append((path, node.lineno, name, id(node) in top_level))
    return found


def own_top_level(distribution: str) -> set[str]:
    return {p.name for p in (PACKAGES / distribution / "src").iterdir() if p.is_dir()}


def package_of(distribution: str) -> str:
    """``clarena.<name>``, the package a distribution owns."""
    (package,) = (p for p in (PACKAGES / distribution / "src" / "clarena").iterdir() if p.is_dir())
    return f"clarena.{package.name}"


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_third_party_imports_are_declared(distribution: str) -> None:
    required, extras = declared(distribution)
    own = own_top_level(distribution)
    src = PACKAGES / distribution / "src"
    missing = []
    for path, line, name, module_level in imports(distribution):
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in own or top == "__future__":
            continue
        needed = normalise(DISTRIBUTION_OF.get(top, top))
        optional = not module_level or path.relative_to(src).as_posix() in EXTRA_MODULES
        if needed in required or (optional and needed in extras):
            continue
        where = f"{path.relative_to(PACKAGES)}:{line}"
        missing.append(f"{where} imports {top} ({needed} not declared)")
    assert not missing, f"{distribution} imports undeclared distributions:\n" + "\n".join(
        sorted(set(missing))
    )


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_siblings_are_declared_and_used_through_public_modules(distribution: str) -> None:
    required, _ = declared(distribution)
    packages = {package_of(d): d for d in DISTRIBUTIONS}
    mine = package_of(distribution)
    problems = []
    for path, line, name, _ in imports(distribution):
        parts = name.split(".")
        if parts[0] != "clarena" or len(parts) < 2 or ".".join(parts[:2]) == mine:
            continue
        sibling = packages[".".join(parts[:2])]
        where = f"{path.relative_to(PACKAGES)}:{line}"
        if normalise(sibling) not in required:
            problems.append(f"{where} imports {parts[0]}.{parts[1]}, but {sibling} is not declared")
        private = [part for part in parts[2:] if part.startswith("_") and part != "__version__"]
        if private:
            problems.append(f"{where} imports {name}: private to {sibling}")
    assert not problems, "\n".join(problems)
