"""Datasets: the embedded digits and torchvision sources, task sequences, Lightning DataModules."""

from __future__ import annotations

from clarena.experiments.data.datamodules import CLDataModule, MTLDataModule, STLDataModule
from clarena.experiments.data.sequences import PermutedSequence, SplitSequence, TaskSequence
from clarena.experiments.data.sources import (
    SOURCES,
    DatasetNotFoundError,
    ImageSplits,
    load_source,
)

__all__ = [
    "SOURCES",
    "CLDataModule",
    "DatasetNotFoundError",
    "ImageSplits",
    "MTLDataModule",
    "PermutedSequence",
    "STLDataModule",
    "SplitSequence",
    "TaskSequence",
    "load_source",
]
