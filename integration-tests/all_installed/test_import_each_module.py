"""Every module of every distribution imports on its own, in a fresh interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from import_each_module import PACKAGES, import_error, modules

DISTRIBUTIONS = sorted(p.parent.name for p in PACKAGES.glob("*/pyproject.toml"))


@pytest.mark.parametrize("module", [m for d in DISTRIBUTIONS for m in modules(d)])
def test_module_imports_on_its_own(module: str) -> None:
    error = import_error(module)
    assert error is None, f"import {module}: {error}"
