"""Append the config tree shipped with clarena-experiments to every Hydra search path.

Hydra finds this plugin by scanning the ``hydra_plugins`` namespace package. Appended after the
primary config dir, the shipped groups (``backbone/``, ``cl_algorithm/`` ...) are available to
the ``clarena`` command and to a user's own tree, which overrides any shipped file of the same
name. This module imports nothing from clarena: Hydra imports every plugin at start-up.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: The shipped tree, as a Hydra config path.
SHIPPED_CONFIGS = "pkg://clarena.experiments.configs"


class ClarenaSearchPathPlugin(SearchPathPlugin):
    """Appends :data:`SHIPPED_CONFIGS` unless the search path already holds it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(element.path == SHIPPED_CONFIGS for element in search_path.get_path()):
            search_path.append(provider="clarena-experiments", path=SHIPPED_CONFIGS)
