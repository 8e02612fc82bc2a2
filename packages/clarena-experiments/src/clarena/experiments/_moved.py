"""The module paths of clarena 0.1 keep working after the split into ``running`` and ``runs``.

``clarena.experiments`` has two halves (#24): ``clarena.experiments.running`` (algorithms,
pipelines, data, callbacks, results ...) and ``clarena.experiments.runs`` (run lock, model files,
safe config, resume, sweeps, run log, run dir). Saved model files name their components by the
0.1 paths (``_target_: clarena.experiments.data.CLDataModule``), entry points name
``clarena.experiments.algorithms:HAT``, and users import ``clarena.experiments.run_lock``. A
meta-path finder makes each old name the very module object of its new home (not a copy), so
targets, pickles, ``isinstance`` and ``mock.patch`` paths behave exactly as before.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

#: Modules of the "running experiments" half: ``clarena.experiments.running.<name>``.
RUNNING: tuple[str, ...] = (
    "algorithms",
    "pipelines",
    "data",
    "callbacks",
    "results",
    "batch_norm",
    "divergence",
    "plateau_schedule",
    "loggers",
    "scaleout",
    "quiet",
)

#: Modules of the "managing runs" half: ``clarena.experiments.runs.<name>``.
RUNS: tuple[str, ...] = (
    "run_lock",
    "model_file",
    "safe_config",
    "resume",
    "sweep",
    "run_log",
    "run_dir",
)

_PACKAGE = "clarena.experiments"

#: 0.1 module name -> its home (``clarena.experiments.data`` -> ``...running.data``).
MOVED: dict[str, str] = {
    **{f"{_PACKAGE}.{name}": f"{_PACKAGE}.running.{name}" for name in RUNNING},
    **{f"{_PACKAGE}.{name}": f"{_PACKAGE}.runs.{name}" for name in RUNS},
}


def new_name(name: str) -> str | None:
    """The home of 0.1 module (or dotted target) ``name``, or ``None`` if it did not move."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


def old_name(name: str) -> str:
    """The 0.1 spelling of module (or dotted target) ``name`` (itself if it did not move)."""
    for old, new in MOVED.items():
        if name == new or name.startswith(new + "."):
            return old + name[len(new) :]
    return name


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module of its new home (imported once, under its own name)."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.target)

    def exec_module(self, module: ModuleType) -> None:
        # The import system set the alias spec on the shared module; it keeps its own.
        module.__spec__ = sys.modules[self.target].__spec__ = _SPECS[self.target]


_SPECS: dict[str, importlib.machinery.ModuleSpec | None] = {}


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds each 0.1 module name as the module of its new home (active once split)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        home = new_name(fullname)
        if home is None or not _split():
            return None
        _SPECS[home] = importlib.import_module(home).__spec__
        return importlib.machinery.ModuleSpec(fullname, _Alias(home))


def _split() -> bool:
    return (Path(__file__).parent / "running" / "__init__.py").is_file()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())
