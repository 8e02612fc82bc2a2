"""Append this distribution's config tree to every Hydra search path.

Hydra imports every module under the ``hydra_plugins`` namespace at start-up and calls each
``SearchPathPlugin``; appending puts these files after the primary config dir and clarena's
shipped tree, so they add new options (``backbone=demo_mlp``) and never replace clarena's.
"""

from __future__ import annotations

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: This distribution's config tree, as a Hydra config path.
DEMO_CONFIGS = "pkg://clarena_demo_configs/conf"


class ClarenaDemoConfigsSearchPathPlugin(SearchPathPlugin):
    """Appends :data:`DEMO_CONFIGS` unless the search path already holds it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(element.path == DEMO_CONFIGS for element in search_path.get_path()):
            search_path.append(provider="clarena-demo-configs", path=DEMO_CONFIGS)
