"""The install lines the README and docs/getting-started.md print, and the docs toolchain pin."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "integration-tests"))
import check_install_lines  # noqa: E402


def test_every_piece_has_a_checkout_line_naming_its_siblings() -> None:
    lines = check_install_lines.documented_lines()
    assert set(lines) == {"checkout", "wheelhouse", "readme"}
    for distribution, needs in check_install_lines._NEEDS.items():
        if distribution == "clarena-experiments":
            continue  # installed through requirements-all.txt
        arguments = check_install_lines.install_line(distribution)
        assert [Path(a).name for a in arguments] == needs


def test_a_sibling_alone_does_not_resolve_from_a_checkout() -> None:
    # What the docs used to print: the checker must refuse it, as pip does on a fresh machine.
    with pytest.raises(SystemExit, match="clarena-backbones-core"):
        check_install_lines.resolve(["./packages/clarena-backbones-cl"], wheelhouse=None)


def test_readme_preview_and_nox_install_the_same_docs_requirements() -> None:
    readme = (ROOT / "README.md").read_text()
    noxfile = (ROOT / "noxfile.py").read_text()
    assert "pip install -r docs/requirements.txt" in readme
    assert re.search(
        r'session\.install\("-r", str\(ROOT / "docs" / "requirements\.txt"\)\)', noxfile
    )
    requirements = (ROOT / "docs" / "requirements.txt").read_text()
    names = {
        re.split(r"[<>=!~ ]", line, maxsplit=1)[0]
        for line in requirements.splitlines()
        if line.strip() and not line.startswith("#")
    }
    # ruff formats the API pages' signatures; without it mkdocstrings warns on every page.
    assert names == {"mkdocs-material", "mkdocstrings-python", "ruff"}
