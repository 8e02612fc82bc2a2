"""Finetuning: train the shared backbone on each task in turn, nothing against forgetting."""

from __future__ import annotations

from clarena.experiments.running.algorithms.base import CLAlgorithm


class Finetuning(CLAlgorithm):
    """The lower-bound baseline: every task simply continues training the same backbone.

    Arguments as for :class:`~clarena.experiments.algorithms.base.CLAlgorithm`.
    """
