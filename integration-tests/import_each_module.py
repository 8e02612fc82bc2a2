"""Import every module of a distribution on its own, each in a fresh interpreter.

Usage: ``python integration-tests/import_each_module.py DISTRIBUTION...`` (run by the nox
``isolation_imports`` session in a venv holding only that distribution and what it declares).
A module that imports only when something else was imported first (an import cycle) fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1] / "packages"


def modules(distribution: str) -> list[str]:
    """Every module of ``distribution``, found by walking its ``src/`` tree."""
    src = PACKAGES / distribution / "src"
    found = []
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append(".".join(parts))
    return found


def import_error(module: str) -> str | None:
    """The stderr of ``python -c "import <module>"``, or None when it imports."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    return None if result.returncode == 0 else result.stderr.strip().splitlines()[-1]


def main() -> int:
    failures = []
    for distribution in sys.argv[1:]:
        for module in modules(distribution):
            error = import_error(module)
            print(f"{'FAIL' if error else 'ok  '} {module}" + (f": {error}" if error else ""))
            if error:
                failures.append(module)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
