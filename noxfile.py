"""Test, lint and build sessions for every clarena distribution.

Distributions are discovered under ``packages/``. Sessions:

- ``tests``: every distribution installed together (from its source tree, as a wheel would be),
  then each distribution's own tests, the all-installed integration tests (with the demo
  third-party config distribution integration-tests/third_party_configs installed), the docs
  snippet tests and the strict docs build, in one venv.
- ``isolation(core|cl|hat|wsn)``: per distribution, a fresh venv installed with the docs' own
  install line (it and its clarena siblings, with only what they declare): every module imports
  on its own, and core / core+cl show that imports stay light and missing pieces are named.
- ``lint``: ruff. ``build``: wheels and sdists of every distribution, checked for content.
- ``docs``: the strict docs build alone (not a default session: ``tests`` already builds it).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "integration-tests"))
import check_install_lines as install_lines  # noqa: E402

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
#: Packages `nox -s tests` type-checks with mypy (config: [tool.mypy] in pyproject.toml).
TYPED_PACKAGES = ("clarena.backbones", "clarena.cl", "clarena.hat", "clarena.wsn")

nox.options.sessions = ["lint", "tests", "isolation", "build"]
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
    """All distributions installed together: unit tests of each, integration tests, mypy."""
    names = distributions()
    install_distributions(session, names)
    session.env["MPLBACKEND"] = "Agg"
    for name in names:
        session.run(*pytest_args(session, name, f"packages/{name}/tests"))
    # A third-party distribution adding config groups through its own search-path plugin
    # (integration-tests/third_party_configs); test_third_party_configs.py fails without it.
    session.install(str(ROOT / "integration-tests" / "third_party_configs"))
    session.run(*pytest_args(session, "integration-all", "integration-tests/all_installed"))
    session.run(*pytest_args(session, "docs-snippets", "docs/tests"))
    # Type-check the installed libraries (each ships py.typed); config in pyproject.toml.
    session.install("mypy>=1.10")
    session.run("mypy", *(arg for package in TYPED_PACKAGES for arg in ("-p", package)))
    # The strict docs build needs every distribution importable: build it here rather than pay
    # for another multi-GB environment (``nox -s docs`` builds it alone).
    build_docs(session)


#: Distribution -> (session id, the integration-test folder run in its isolated venv or None).
ISOLATED = {
    "clarena-backbones-core": ("core", "core_only"),
    "clarena-backbones-cl": ("cl", "core_and_cl"),
    "clarena-hat": ("hat", None),
    "clarena-wsn": ("wsn", None),
}


@nox.session(python="3.11")
@nox.parametrize("name", [nox.param(name, id=ident) for name, (ident, _) in ISOLATED.items()])
def isolation(session: nox.Session, name: str) -> None:
    """A fresh venv holding ``name``, installed with the docs' own line for it.

    The line (docs/getting-started.md) brings ``name`` and its clarena siblings with only what
    they declare: every module of ``name`` imports on its own (undeclared dependencies and
    import cycles fail here), and core and core+cl run their integration tests (imports stay
    light, missing pieces are named). clarena-experiments is checked in ``tests``, which holds
    everything.
    """
    session.install(*TEST_REQUIREMENTS)
    session.install(*install_lines.install_line(name))
    session.run("python", str(ROOT / "integration-tests" / "import_each_module.py"), name)
    _, folder = ISOLATED[name]
    if folder:
        session.run(*pytest_args(session, f"isolation-{folder}", f"integration-tests/{folder}"))


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
    session.install("-r", str(ROOT / "docs" / "requirements.txt"))
    # Material's end-of-life notice for MkDocs 2 (docs/requirements.txt says why we stay on 9.x).
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
    # Every install line of README.md and docs/getting-started.md resolves on an empty machine.
    session.run(
        "python",
        str(ROOT / "integration-tests" / "check_install_lines.py"),
        "--wheelhouse",
        str(out),
    )
