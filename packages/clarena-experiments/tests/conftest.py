"""Shared helpers: run the ``clarena`` command in-process with a temporary output dir."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from clarena.experiments import cli


@pytest.fixture
def run_clarena(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Run ``clarena experiment=<name> <overrides>`` in-process; returns the run's output dir.

    The working dir is a fresh temporary dir (so no ``./configs`` is found and the shipped tree
    is used), every run writes under ``tmp_path/<name>``.
    """
    monkeypatch.chdir(tmp_path)

    def run(experiment: str, *overrides: str, output: str | None = None) -> Path:
        run_dir = tmp_path / (output or experiment)
        cli.main([f"experiment={experiment}", f"output_dir={run_dir}", *overrides])
        return run_dir

    return run
