"""Wheels built from the checkout carry the repository's top-level ``configs/``.

A wheel built from the sdist finds the tree as package data instead (the sdist carries it at
``src/clarena/experiments/configs``), so the force-include is added only where ``../../configs``
exists; an editable wheel gets none (the installed package reads the checkout's ``configs/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        configs = Path(self.root).resolve().parent.parent / "configs"
        if version != "editable" and (configs / "entrance.yaml").is_file():
            build_data["force_include"][str(configs)] = "clarena/experiments/configs"
