"""Datasets: the embedded digits, local file-format sources, task sequences and their typed
specs, DataModules and the flat per-sequence config targets."""

from __future__ import annotations

from clarena.experiments.errors import DatasetNotFoundError
from clarena.experiments.running.data.datamodules import (
    FLAT_TARGETS,
    CLDataModule,
    FlatDataModule,
    MTLDataModule,
    MultiSourceCLDataModule,
    MultiSourceMTLDataModule,
    MultiSourceSTLDataModule,
    PermutedCLDataModule,
    PermutedMTLDataModule,
    PermutedSTLDataModule,
    RotatedCLDataModule,
    RotatedMTLDataModule,
    RotatedSTLDataModule,
    SplitCLDataModule,
    SplitMTLDataModule,
    SplitSTLDataModule,
    STLDataModule,
    dataset_identity,
)
from clarena.experiments.running.data.local_sources import LOCAL_SOURCES, load_local_source
from clarena.experiments.running.data.sequences import (
    MultiSourceSequence,
    PermutedSequence,
    RotatedSequence,
    SplitSequence,
    TaskSequence,
)
from clarena.experiments.running.data.sources import (
    SOURCES,
    ImageSplits,
    load_source,
)
from clarena.experiments.running.data.specs import (
    MultiSourceTasks,
    PermutedTasks,
    RotatedTasks,
    SequenceSpec,
    SourceReading,
    SplitTasks,
)
from clarena.experiments.running.data.transforms import BatchTransform

__all__ = [
    "FLAT_TARGETS",
    "LOCAL_SOURCES",
    "SOURCES",
    "BatchTransform",
    "CLDataModule",
    "DatasetNotFoundError",
    "FlatDataModule",
    "ImageSplits",
    "MTLDataModule",
    "MultiSourceCLDataModule",
    "MultiSourceMTLDataModule",
    "MultiSourceSTLDataModule",
    "MultiSourceSequence",
    "MultiSourceTasks",
    "PermutedCLDataModule",
    "PermutedMTLDataModule",
    "PermutedSTLDataModule",
    "PermutedSequence",
    "PermutedTasks",
    "RotatedCLDataModule",
    "RotatedMTLDataModule",
    "RotatedSTLDataModule",
    "RotatedSequence",
    "RotatedTasks",
    "STLDataModule",
    "SequenceSpec",
    "SourceReading",
    "SplitCLDataModule",
    "SplitMTLDataModule",
    "SplitSTLDataModule",
    "SplitSequence",
    "SplitTasks",
    "TaskSequence",
    "dataset_identity",
    "load_local_source",
    "load_source",
]
