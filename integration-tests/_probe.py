"""Run a Python snippet in a fresh interpreter of the current environment and return its stdout.

The integration tests check import side effects, which only a fresh interpreter shows: the
pytest process itself has already imported whatever its plugins need.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run_fresh(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"snippet failed:\n{result.stderr}"
    return result.stdout
