"""Lightning algorithms: continual (Finetuning, Independent, HAT, AdaHAT, FG-AdaHAT, WSN), MTL, STL.

Each algorithm loads on first access, so importing the base (or one algorithm) imports no mask
method's package. They are registered in the ``clarena.algorithms`` entry-point group (see
:mod:`clarena.experiments.algorithms.registry`), where other distributions add theirs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clarena.experiments.running.algorithms.base import CLAlgorithm, CLConfigError

if TYPE_CHECKING:
    from clarena.experiments.running.algorithms.fg_adahat import FGAdaHAT
    from clarena.experiments.running.algorithms.finetuning import Finetuning
    from clarena.experiments.running.algorithms.hat import HAT, AdaHAT
    from clarena.experiments.running.algorithms.independent import Independent
    from clarena.experiments.running.algorithms.joint import JointLearning, SingleLearning
    from clarena.experiments.running.algorithms.wsn import WSN

#: Each algorithm's module in this package.
_MODULES = {
    "Finetuning": "finetuning",
    "Independent": "independent",
    "HAT": "hat",
    "AdaHAT": "hat",
    "FGAdaHAT": "fg_adahat",
    "WSN": "wsn",
    "JointLearning": "joint",
    "SingleLearning": "joint",
}

__all__ = [
    "HAT",
    "WSN",
    "AdaHAT",
    "CLAlgorithm",
    "CLConfigError",
    "FGAdaHAT",
    "Finetuning",
    "Independent",
    "JointLearning",
    "SingleLearning",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    algorithm = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = algorithm
    return algorithm
