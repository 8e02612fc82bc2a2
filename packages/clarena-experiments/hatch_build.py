"""Ship the repository's Hydra config tree inside the wheel as ``clarena/experiments/configs``.

The tree lives at the repository top level (``../../configs``) in a checkout and at ``configs/``
inside an sdist, so the wheel build looks in both places.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class ConfigTreeHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return  # an editable install reads the repository's configs/ in place (see cli.py)
        root = Path(self.root)
        for candidate in (root / "configs", root.parent.parent / "configs"):
            if (candidate / "entrance.yaml").is_file():
                build_data["force_include"][str(candidate)] = "clarena/experiments/configs"
                return
        raise FileNotFoundError(
            f"no Hydra config tree (configs/entrance.yaml) next to {root} or at the repository "
            f"top level; build clarena-experiments from a full checkout or its sdist."
        )
