"""Test, lint and build sessions for every clarena distribution.

Distributions are discovered under ``packages/``. Sessions:

- ``tests``: every distribution installed together (from its source tree, as a wheel would be),
  then each distribution's own tests, the all-installed integration tests (with the demo
  third-party config distribution integration-tests/third_party_configs installed), the docs
  snippet tests, mypy and the strict docs build, in one venv. Every step runs; the session fails
  at the end naming each step that failed.
- ``kernels``: the slow and compile tests of core, cl, hat and wsn again under torch's
  ``default`` and ``avx2`` CPU kernel sets (``ATEN_CPU_CAPABILITY``).
- ``isolation(core|cl|hat|wsn)``: per distribution, a fresh venv installed with the docs' own
  install line (it and its clarena siblings, with only what they declare): every module imports
  on its own, and core / core+cl show that imports stay light and missing pieces are named.
- ``lint``: ruff. ``build``: wheels and sdists of every distribution, checked for content.
- ``docs``: the strict docs build alone (not a default session: ``tests`` already builds it).

``tests`` and ``kernels`` spread each pytest run over the machine's CPUs (pytest-xdist, one
worker per CPU up to 4, each test file on one worker) and give each worker its share of torch's
threads; the junit reports are written as before. ``-- -n 0`` after the session name runs
serially.

Every session that needs torch shares one install of it, ``.nox/shared-torch`` (torch and what
torch itself requires, nothing else), seen by each venv through a ``.pth`` file: one CUDA build
of torch (5.4 GB with its requirements) on disk instead of one per venv. The venvs never see the
interpreter's global site-packages.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

import nox
from nox.command import CommandFailed
from packaging.requirements import Requirement

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT / "integration-tests"))
import check_install_lines as install_lines  # noqa: E402

PACKAGES = ROOT / "packages"
REPORTS = ROOT / ".nox" / "reports"
#: The one torch install every session's venv sees (see the module docstring).
SHARED_TORCH = ROOT / ".nox" / "shared-torch"
#: Install order respects the dependency direction core <- cl <- {hat, wsn} <- experiments.
ORDER = [
    "clarena-backbones-core",
    "clarena-backbones-cl",
    "clarena-hat",
    "clarena-wsn",
    "clarena-experiments",
]
TEST_REQUIREMENTS = ["pytest>=8"]
#: ``tests`` and ``kernels`` spread each pytest run over the CPUs with pytest-xdist.
PARALLEL_REQUIREMENTS = ["pytest-xdist>=3.5"]
#: pytest-xdist workers per run: one per CPU this process may use, at most 4 (each worker holds
#: its own torch, Lightning and compiled graphs in memory).
WORKERS = min(4, len(os.sched_getaffinity(0)))
#: Packages `nox -s tests` type-checks with mypy (config: [tool.mypy] in pyproject.toml).
TYPED_PACKAGES = ("clarena.backbones", "clarena.cl", "clarena.hat", "clarena.wsn")
#: The strict docs build into site/. Run it with NO_MKDOCS_2_WARNING=1: it hides Material's
#: end-of-life notice for MkDocs 2 (docs/requirements.txt says why we stay on 9.x).
MKDOCS_BUILD = ("mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"))

nox.options.sessions = ["lint", "tests", "kernels", "isolation", "build"]
nox.options.error_on_missing_interpreters = True


def distributions() -> list[str]:
    """Names of the distributions present under packages/, in dependency order."""
    present = {p.parent.name for p in PACKAGES.glob("*/pyproject.toml")}
    unknown = present - set(ORDER)
    if unknown:
        raise RuntimeError(f"noxfile: add {sorted(unknown)} to ORDER in dependency order")
    return [name for name in ORDER if name in present]


def project(name: str) -> dict:
    """The ``[project]`` table of distribution ``name``'s pyproject.toml."""
    return tomllib.loads((PACKAGES / name / "pyproject.toml").read_text())["project"]


def test_extras(name: str) -> list[str]:
    """The ``test`` extra of distribution ``name`` (its test-only requirements)."""
    return project(name).get("optional-dependencies", {}).get("test", [])


def torch_requirement() -> str:
    """The torch requirement the distributions declare (they must agree on one)."""
    found = {
        requirement
        for name in distributions()
        for requirement in project(name)["dependencies"]
        if Requirement(requirement).name == "torch"
    }
    if len(found) != 1:
        raise RuntimeError(f"noxfile: the distributions declare torch differently: {found}")
    return found.pop()


def use_shared_torch(session: nox.Session) -> None:
    """Let ``session``'s venv import the shared torch install, installing it on first use.

    ``pip install --target`` resolves from nothing, so the folder holds torch and its own
    requirements only. A ``.pth`` file appends it to the venv's ``sys.path`` after the venv's
    own site-packages: pip then counts torch as installed, and a requirement the venv installs
    itself still wins.
    """
    requirement = torch_requirement()
    stamp = SHARED_TORCH / ".requirement"
    if not (stamp.exists() and stamp.read_text() == requirement):
        shutil.rmtree(SHARED_TORCH, ignore_errors=True)
        session.run_install(
            "python", "-m", "pip", "install", "--target", str(SHARED_TORCH), requirement
        )
        stamp.write_text(requirement)
    purelib = session.run_install(
        "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", silent=True
    )
    (Path(str(purelib).strip()) / "clarena_shared_torch.pth").write_text(
        f"import site; site.addsitedir({str(SHARED_TORCH)!r})\n"
    )


def inductor_cache(session: nox.Session, capability: str) -> Path:
    """An Inductor cache folder inside ``session``'s venv for kernels of ``capability``."""
    return Path(session.virtualenv.location) / f"inductor-cache-{capability}"


class Steps:
    """Runs a session's test steps to the end; :meth:`finish` fails naming every failed step.

    nox stops a session at its first failing command, which would hide the results of every
    package after it.
    """

    def __init__(self, session: nox.Session) -> None:
        self.session = session
        self.failed: list[str] = []

    def run(self, label: str, *args: str) -> None:
        """Run ``args`` in the session; record ``label`` when it fails."""
        try:
            self.session.run(*args)
        except CommandFailed:
            self.failed.append(label)

    def finish(self) -> None:
        """Fail the session when a step failed, naming them all."""
        if self.failed:
            self.session.error(f"{len(self.failed)} step(s) failed: {', '.join(self.failed)}")


def pytest_args(session: nox.Session, report: str, *paths: str) -> list[str]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    return ["pytest", f"--junitxml={REPORTS / report}.xml", *paths, *session.posargs]


def parallel_pytest_args(session: nox.Session, report: str, *paths: str) -> list[str]:
    """:func:`pytest_args` spread over :data:`WORKERS` pytest-xdist workers.

    ``--dist loadfile`` keeps each test file on one worker, so a module-scoped fixture (a
    trained run several tests read) is built once. ``nox -s tests -- -n 0`` runs serially.
    """
    report_args = pytest_args(session, report, *paths)
    return [report_args[0], "-n", str(WORKERS), "--dist", "loadfile", *report_args[1:]]


def run_in_parallel(session: nox.Session) -> None:
    """Give each of the :data:`WORKERS` test processes its share of the CPUs.

    Without this every worker's torch starts one intra-op thread per CPU (and Inductor a pool of
    compile processes per CPU): workers x CPUs threads contend for the CPUs and the run is slower
    than a serial one. Tests that set their own thread count still do.
    """
    threads = str(max(1, len(os.sched_getaffinity(0)) // WORKERS))
    session.env["OMP_NUM_THREADS"] = threads
    session.env["TORCHINDUCTOR_COMPILE_THREADS"] = threads


def install_distributions(session: nox.Session, names: list[str]) -> None:
    use_shared_torch(session)
    requirements = {r for name in names for r in test_extras(name)}
    requirements |= set(TEST_REQUIREMENTS) | set(PARALLEL_REQUIREMENTS)
    session.install(*sorted(requirements), *(str(PACKAGES / name) for name in names))


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """All distributions installed together: unit tests of each, integration tests, mypy.

    Every step runs even when an earlier one failed; the session then fails naming them all.
    """
    names = distributions()
    install_distributions(session, names)
    # A third-party distribution adding config groups through its own search-path plugin
    # (integration-tests/third_party_configs); test_third_party_configs.py fails without it.
    session.install(str(ROOT / "integration-tests" / "third_party_configs"))
    session.install("mypy>=1.10", "-r", str(ROOT / "docs" / "requirements.txt"))
    session.env["MPLBACKEND"] = "Agg"
    # Inductor's own cache: kernels another process cached under another ATEN_CPU_CAPABILITY in
    # the shared default one (/tmp/torchinductor_<user>) abort or compute wrong values here.
    session.env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache(session, "native"))
    run_in_parallel(session)
    steps = Steps(session)
    for name in names:
        steps.run(name, *parallel_pytest_args(session, name, f"packages/{name}/tests"))
    steps.run(
        "integration-tests/all_installed",
        *parallel_pytest_args(session, "integration-all", "integration-tests/all_installed"),
    )
    steps.run("docs/tests", *parallel_pytest_args(session, "docs-snippets", "docs/tests"))
    # Type-check the installed libraries (each ships py.typed); config in pyproject.toml.
    steps.run("mypy", "mypy", *(arg for package in TYPED_PACKAGES for arg in ("-p", package)))
    # The strict docs build needs every distribution importable: build it here rather than pay
    # for another environment (``nox -s docs`` builds it alone).
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    steps.run("docs build", *MKDOCS_BUILD)
    steps.finish()


#: The distributions whose slow and compile tests ``kernels`` reruns under other kernel sets.
KERNEL_CHECKED = [
    "clarena-backbones-core",
    "clarena-backbones-cl",
    "clarena-hat",
    "clarena-wsn",
]


@nox.session(python="3.11")
def kernels(session: nox.Session) -> None:
    """Slow and compile tests of core, cl, hat and wsn under the ``default`` and ``avx2`` kernels.

    ``ATEN_CPU_CAPABILITY`` picks the vector kernels torch runs on a CPU, so results that only
    hold on the developer's vector unit fail here, on one machine (``tests`` runs the machine's
    own kernel set). Under ``default``, Inductor's generated C++ does not compile
    (``CppCompileError: 'at::vec' has not been declared``, a torch limitation): there the tests
    marked ``inductor`` are deselected and the eager and ``aot_eager`` ones run; ``avx2`` runs
    them all, with an Inductor cache of their own. Extra pytest arguments
    (``nox -s kernels -- -x``) reach every run.
    """
    install_distributions(session, KERNEL_CHECKED)
    run_in_parallel(session)
    steps = Steps(session)
    for capability in ("default", "avx2"):
        session.env["ATEN_CPU_CAPABILITY"] = capability
        # Inductor's on-disk cache is not keyed by the capability: a kernel cached under another
        # one (this machine's own, from ``tests``) aborts the process or computes wrong values
        # (seen with avx2 and avx512). Each capability compiles into its own cache.
        session.env["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache(session, capability))
        also = " and not inductor" if capability == "default" else ""
        # Every slow test, then the compile tests that are not slow (the slow ones ran first).
        for part, marks, tests in (
            ("slow", f"slow{also}", "tests"),
            ("compile", f"not slow{also}", "tests/test_compile.py"),
        ):
            report = f"kernels-{capability}-{part}"
            paths = [f"packages/{name}/{tests}" for name in KERNEL_CHECKED]
            steps.run(report, *parallel_pytest_args(session, report, "-m", marks, *paths))
    steps.finish()


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
    use_shared_torch(session)
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
    session.install("-r", str(ROOT / "docs" / "requirements.txt"))
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run(*MKDOCS_BUILD)


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
