"""Import every module of a distribution on its own, each in a fresh interpreter state.

Usage: ``python integration-tests/import_each_module.py [--json] DISTRIBUTION...`` (the nox
``isolation`` sessions run it in a venv holding only that distribution and what it declares).
A module that imports only when something else was imported first (an import cycle) fails here.

Each module is imported in a child forked from an interpreter that has imported nothing of
clarena, only the heavy third-party packages that are installed (torch, Lightning, Hydra ...):
a clarena import cycle shows exactly as in ``python -c "import <module>"``, without paying for
torch's import once per module.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import traceback
from pathlib import Path

PACKAGES = Path(__file__).resolve().parents[1] / "packages"
#: Imported once before forking, when installed; none of them imports clarena.
_PRELOAD = ("torch", "timm", "torchvision", "lightning", "hydra", "omegaconf", "torchmetrics")


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


def _import_in_child(module: str) -> str | None:
    """Import ``module`` in a forked child; its error's last line, or None when it imports."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        status = 0
        try:
            importlib.import_module(module)
        except BaseException:
            status = 1
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
        os.close(write)
        os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return None if status == 0 else message or f"exit status {status}"


def import_errors(distributions: list[str]) -> dict[str, str | None]:
    """Map every module of ``distributions`` to its import error (None: it imports alone)."""
    assert not any(name.startswith("clarena") for name in sys.modules), "not a fresh interpreter"
    for name in _PRELOAD:
        # Not installed in this venv: each child then imports what it needs itself.
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    return {module: _import_in_child(module) for d in distributions for module in modules(d)}


def main() -> int:
    as_json = sys.argv[1:2] == ["--json"]
    errors = import_errors(sys.argv[2:] if as_json else sys.argv[1:])
    if as_json:
        print(json.dumps(errors))
    else:
        for module, error in errors.items():
            print(f"{'FAIL' if error else 'ok  '} {module}" + (f": {error}" if error else ""))
    return 1 if any(errors.values()) and not as_json else 0


if __name__ == "__main__":
    sys.exit(main())
