"""Datasets: the embedded digits, local file-format sources, task sequences, DataModules."""

from __future__ import annotations

from clarena.experiments.data.datamodules import CLDataModule, MTLDataModule, STLDataModule
from clarena.experiments.data.local_sources import LOCAL_SOURCES, load_local_source
from clarena.experiments.data.sequences import (
    MultiSourceSequence,
    PermutedSequence,
    RotatedSequence,
    SplitSequence,
    TaskSequence,
)
from clarena.experiments.data.sources import (
    SOURCES,
    ImageSplits,
    load_source,
)
from clarena.experiments.data.transforms import BatchTransform
from clarena.experiments.errors import DatasetNotFoundError

__all__ = [
    "LOCAL_SOURCES",
    "SOURCES",
    "BatchTransform",
    "CLDataModule",
    "DatasetNotFoundError",
    "ImageSplits",
    "MTLDataModule",
    "MultiSourceSequence",
    "PermutedSequence",
    "RotatedSequence",
    "STLDataModule",
    "SplitSequence",
    "TaskSequence",
    "load_local_source",
    "load_source",
]
