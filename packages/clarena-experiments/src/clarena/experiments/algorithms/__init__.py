"""Lightning algorithms: continual (Finetuning, Independent, HAT, AdaHAT, FG-AdaHAT, WSN), MTL, STL."""

from __future__ import annotations

from clarena.experiments.algorithms.base import CLAlgorithm, CLConfigError
from clarena.experiments.algorithms.fg_adahat import FGAdaHAT
from clarena.experiments.algorithms.finetuning import Finetuning
from clarena.experiments.algorithms.hat import HAT, AdaHAT
from clarena.experiments.algorithms.independent import Independent
from clarena.experiments.algorithms.joint import JointLearning, SingleLearning
from clarena.experiments.algorithms.wsn import WSN

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
