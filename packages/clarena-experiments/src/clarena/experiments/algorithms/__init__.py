"""Lightning algorithms: continual (Finetuning, Independent, HAT, AdaHAT, WSN), MTL and STL."""

from __future__ import annotations

from clarena.experiments.algorithms.base import CLAlgorithm, CLConfigError
from clarena.experiments.algorithms.finetuning import Finetuning
from clarena.experiments.algorithms.independent import Independent
from clarena.experiments.algorithms.joint import JointLearning, SingleLearning

__all__ = [
    "CLAlgorithm",
    "CLConfigError",
    "Finetuning",
    "Independent",
    "JointLearning",
    "SingleLearning",
]
