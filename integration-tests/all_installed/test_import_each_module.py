"""Every module of every distribution imports on its own, in a fresh interpreter state."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from import_each_module import PACKAGES, modules

HERE = Path(__file__).resolve().parents[1]

DISTRIBUTIONS = sorted(p.parent.name for p in PACKAGES.glob("*/pyproject.toml"))


@functools.cache
def _errors() -> dict[str, str | None]:
    # A fresh interpreter: this pytest process has imported clarena already.
    output = subprocess.run(
        [sys.executable, str(HERE / "import_each_module.py"), "--json", *DISTRIBUTIONS],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output)


@pytest.mark.parametrize("module", [m for d in DISTRIBUTIONS for m in modules(d)])
def test_module_imports_on_its_own(module: str) -> None:
    error = _errors()[module]
    assert error is None, f"import {module}: {error}"
