"""Test, lint and build sessions for every clarena distribution.

Distributions are discovered under ``packages/``. Sessions:

- ``tests``: every distribution installed together (from its source tree, as a wheel would be),
  then each distribution's own tests, the all-installed integration tests, the docs snippet
  tests and the strict docs build, in one venv.
- ``isolation``: fresh venvs holding only ``core`` or ``core+cl``, proving that each piece
  installs and imports alone and that missing pieces are named in errors.
- ``isolation_imports``: per distribution, a fresh venv with it and only what it declares (plus
  pytest, for core's ``clarena.backbones.testing``); every module imports on its own.
- ``lint``: ruff. ``build``: wheels and sdists of every distribution, checked for content.
- ``docs``: the strict docs build alone (not a default session: ``tests`` already builds it).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
PACKAGES = ROOT / "packages"
REPORTS = ROOT / ".nox" / "reports"
#: Install order respects the dependency direction core <- cl <- {hat, wsn} <- experiments.
ORDER = [
    "clarena-backbones-core",
    "clarena-backbones-cl",
    "clarena-hat",
    "clarena-wsn",
    "clarena-experiments",
]
TEST_REQUIREMENTS = ["pytest>=8"]

nox.options.sessions = ["lint", "tests", "isolation", "isolation_imports", "build"]
nox.options.error_on_missing_interpreters = True


def distributions() -> list[str]:
    """Names of the distributions present under packages/, in dependency order."""
    present = {p.parent.name for p in PACKAGES.glob("*/pyproject.toml")}
    unknown = present - set(ORDER)
    if unknown:
        raise RuntimeError(f"noxfile: add {sorted(unknown)} to ORDER in dependency order")
    return [name for name in ORDER if name in present]


def test_extras(name: str) -> list[str]:
    """The ``test`` extra of distribution ``name`` (its test-only requirements)."""
    project = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]
    return project.get("optional-dependencies", {}).get("test", [])


def pytest_args(session: nox.Session, report: str, *paths: str) -> list[str]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    return ["pytest", f"--junitxml={REPORTS / report}.xml", *paths, *session.posargs]


def install_distributions(session: nox.Session, names: list[str]) -> None:
    requirements = sorted({r for name in names for r in test_extras(name)} | set(TEST_REQUIREMENTS))
    session.install(*requirements, *(str(PACKAGES / name) for name in names))


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """All distributions installed together: unit tests of each, then integration tests."""
    names = distributions()
    install_distributions(session, names)
    session.env["MPLBACKEND"] = "Agg"
    for name in names:
        session.run(*pytest_args(session, name, f"packages/{name}/tests"))
    session.run(*pytest_args(session, "integration-all", "integration-tests/all_installed"))
    session.run(*pytest_args(session, "docs-snippets", "docs/tests"))
    # The strict docs build needs every distribution importable: build it here rather than pay
    # for another multi-GB environment (``nox -s docs`` builds it alone).
    build_docs(session)


@nox.session(python="3.11")
@nox.parametrize(
    "stack",
    [
        nox.param(["clarena-backbones-core"], id="core"),
        nox.param(["clarena-backbones-core", "clarena-backbones-cl"], id="core+cl"),
    ],
)
def isolation(session: nox.Session, stack: list[str]) -> None:
    """A fresh venv with only ``stack`` installed: imports stay light, missing pieces are named."""
    session.install(*TEST_REQUIREMENTS, *(str(PACKAGES / name) for name in stack))
    folder = "core_only" if len(stack) == 1 else "core_and_cl"
    session.run(*pytest_args(session, f"isolation-{folder}", f"integration-tests/{folder}"))


def clarena_stack(name: str) -> list[str]:
    """``name`` and every clarena distribution it depends on (transitively), in install order."""
    project = tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]
    needed = {name}
    for requirement in project.get("dependencies", []):
        dependency = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
        if dependency in ORDER:
            needed.update(clarena_stack(dependency))
    return [n for n in ORDER if n in needed]


@nox.session(python="3.11")
@nox.parametrize("name", ORDER)
def isolation_imports(session: nox.Session, name: str) -> None:
    """A fresh venv with ``name``, its clarena siblings and only what they declare: every module
    of ``name`` imports on its own (undeclared dependencies and import cycles fail here)."""
    session.install(*TEST_REQUIREMENTS, *(str(PACKAGES / n) for n in clarena_stack(name)))
    session.run("python", str(ROOT / "integration-tests" / "import_each_module.py"), name)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode: any warning (broken link, reference) fails."""
    install_distributions(session, distributions())
    build_docs(session)


def build_docs(session: nox.Session) -> None:
    """Install the docs toolchain into ``session`` and build the site strictly into site/."""
    session.install("mkdocs-material>=9.5", "mkdocstrings-python>=1.10", "ruff>=0.6")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build every wheel and sdist; check the namespace and shipped configs."""
    session.install("build>=1.0")
    out = ROOT / "dist"
    for name in distributions():
        session.run("python", "-m", "build", "--outdir", str(out), str(PACKAGES / name))
    session.run("python", str(ROOT / "integration-tests" / "check_wheels.py"), str(out))
