"""Append clarena's Hydra config tree to every Hydra search path.

Hydra finds this plugin by scanning the ``hydra_plugins`` namespace package. Appended after the
primary config dir, the shipped groups (``backbone/``, ``cl_algorithm/`` ...) are available to
the ``clarena`` command and to a user's own tree, which overrides any shipped file of the same
name. This module imports nothing from clarena (Hydra imports every plugin at start-up): it only
locates the ``clarena.experiments`` package.

The tree is the repository's top-level ``configs/``. A wheel carries it as
``clarena/experiments/configs/`` (hatch ``force-include``); an editable install from a checkout
has no copy and reads the repository's ``configs/`` itself, so an edit there is seen at once.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: The file every clarena config tree holds at its top.
ENTRANCE_FILE = "entrance.yaml"


def package_dir() -> Path:
    """The folder of the ``clarena.experiments`` package (found without importing it)."""
    spec = find_spec("clarena.experiments")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("clarena.experiments is not installed.")
    return Path(spec.origin).resolve().parent


def checkout_config_dir(package: Path) -> Path | None:
    """The top-level ``configs/`` of the repository holding ``package`` when it is the source
    folder of an editable install (``<repo>/packages/clarena-experiments/src/clarena/experiments``);
    else ``None``."""
    if package.parent.parent.parent.name != "clarena-experiments":
        return None
    repository = package.parents[4]
    configs = repository / "configs"
    return configs if (configs / ENTRANCE_FILE).is_file() else None


def shipped_config_dir() -> Path:
    """clarena's config tree: the installed package's ``configs/`` (a wheel), else the
    repository's top-level ``configs/`` (an editable install).

    Raises:
        FileNotFoundError: neither holds ``entrance.yaml`` (a broken install).
    """
    package = package_dir()
    installed = package / "configs"
    if (installed / ENTRANCE_FILE).is_file():
        return installed
    checkout = checkout_config_dir(package)
    if checkout is not None:
        return checkout
    raise FileNotFoundError(
        f"clarena's config tree is missing: neither {installed} nor a checkout's top-level "
        f"configs/ holds {ENTRANCE_FILE}. Reinstall clarena-experiments."
    )


#: The shipped tree, as a Hydra config path (an absolute folder).
SHIPPED_CONFIGS = str(shipped_config_dir())


class ClarenaSearchPathPlugin(SearchPathPlugin):
    """Appends :data:`SHIPPED_CONFIGS` unless the search path already holds it."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        known = {SHIPPED_CONFIGS, f"file://{SHIPPED_CONFIGS}"}
        if not any(element.path in known for element in search_path.get_path()):
            search_path.append(provider="clarena-experiments", path=SHIPPED_CONFIGS)
