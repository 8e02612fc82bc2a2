"""Lightning DataModules for continual, multi-task and single-task learning.

All three take the same flat arguments (so a config reads like the dataset it describes) and
build one :class:`~clarena.experiments.data.sequences.TaskSequence`:

- :class:`CLDataModule`: one task at a time (:meth:`CLDataModule.setup_task_id`), test loaders
  for any seen task.
- :class:`MTLDataModule`: every task at once, batches ``(image, label, task_id)``.
- :class:`STLDataModule`: one task of the sequence as a plain classification problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from clarena.experiments.data.sequences import PermutedSequence, SplitSequence, TaskSequence
from clarena.experiments.data.sources import load_source

#: Values of the ``sequence`` argument.
SEQUENCES: tuple[str, ...] = ("permuted", "split")


class _SequenceDataModule(LightningDataModule):
    """Builds the task sequence from flat arguments and makes loaders.

    Args:
        sequence: ``permuted`` or ``split``.
        source: image source (``digits``, ``mnist``, ``cifar10``, ``cifar100``).
        root: local directory of a torchvision source (nothing is downloaded).
        num_tasks: number of tasks of a permuted sequence.
        class_split: classes of each task of a split sequence.
        classes_per_task: group size of a split sequence when ``class_split`` is not given.
        permutation_seed: seed of the permuted sequence's pixel permutations.
        first_task_identity: leave task 1 of a permuted sequence unpermuted.
        image_size: side of the square images (``digits`` default 28, others their own size).
        channels: image channels (3 repeats a grey source, for ResNets).
        val_fraction: share of training images held out for validation.
        test_fraction: share of the digits held out for testing.
        split_seed: seed of the train / validation / test split.
        batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: data loader worker processes.
    """

    def __init__(
        self,
        sequence: str = "permuted",
        source: str = "digits",
        root: str | None = None,
        num_tasks: int | None = None,
        class_split: Sequence[Sequence[int]] | None = None,
        classes_per_task: int | None = None,
        permutation_seed: int = 0,
        first_task_identity: bool = True,
        image_size: int | None = None,
        channels: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if sequence not in SEQUENCES:
            raise ValueError(
                f"{type(self).__name__}: sequence must be one of {', '.join(SEQUENCES)}; got "
                f"{sequence!r}."
            )
        if sequence == "permuted" and num_tasks is None:
            raise ValueError(f"{type(self).__name__}: a permuted sequence needs num_tasks.")
        self.sequence_kind = sequence
        self.source_arguments = {
            "source": source,
            "root": root,
            "image_size": image_size,
            "channels": channels,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "split_seed": split_seed,
        }
        self.sequence_arguments = {
            "num_tasks": num_tasks,
            "class_split": class_split,
            "classes_per_task": classes_per_task,
            "permutation_seed": permutation_seed,
            "first_task_identity": first_task_identity,
        }
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers

    @cached_property
    def sequence(self) -> TaskSequence:
        """The task sequence (loaded on first use)."""
        splits = load_source(**self.source_arguments)
        arguments = self.sequence_arguments
        if self.sequence_kind == "permuted":
            return PermutedSequence(
                splits,
                num_tasks=arguments["num_tasks"],
                permutation_seed=arguments["permutation_seed"],
                first_task_identity=arguments["first_task_identity"],
            )
        if arguments["num_tasks"] is not None and arguments["class_split"] is None:
            per_task = arguments["classes_per_task"]
            if per_task is None:
                per_task = splits.num_classes // arguments["num_tasks"]
            groups = [
                list(range(start, start + per_task))
                for start in range(0, per_task * arguments["num_tasks"], per_task)
            ]
            return SplitSequence(splits, class_split=groups)
        return SplitSequence(
            splits,
            class_split=arguments["class_split"],
            classes_per_task=arguments["classes_per_task"],
        )

    @property
    def num_tasks(self) -> int:
        """Number of tasks in the sequence."""
        return self.sequence.num_tasks

    def num_classes(self, task_id: int) -> int:
        """Number of classes of ``task_id``."""
        return self.sequence.num_classes(task_id)

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        batch_size = self.batch_size if train else self.eval_batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=train,
            # A last training batch of one sample would stop batch norm ("Expected more than 1
            # value per channel"); it is dropped. Evaluation keeps every sample.
            drop_last=train and len(dataset) % batch_size == 1,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class CLDataModule(_SequenceDataModule):
    """Continual-learning data: the current task's loaders, test loaders for any task.

    Arguments as for the shared base (see the module docstring). Call :meth:`setup_task_id`
    before fitting each task.
    """

    #: The task served by the train / validation loaders (set by :meth:`setup_task_id`).
    task_id: int | None = None

    def setup_task_id(self, task_id: int) -> None:
        """Make ``task_id`` the task served by :meth:`train_dataloader` / :meth:`val_dataloader`."""
        self.task_id = self.sequence.check_task_id(task_id)

    def _current(self) -> int:
        if self.task_id is None:
            raise RuntimeError("CLDataModule: call setup_task_id(task_id) before asking for data.")
        return self.task_id

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self._current(), "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self._current(), "val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self.task_dataloader(self._current(), "test")

    def task_dataloader(self, task_id: int, split: str) -> DataLoader:
        """Loader of ``task_id``'s ``split`` (shuffled for ``train`` only)."""
        return self._loader(self.sequence.dataset(task_id, split), train=split == "train")


class MTLDataModule(_SequenceDataModule):
    """Multi-task data: every task at once; batches are ``(image, label, task_id)``.

    Arguments as for the shared base (see the module docstring).
    """

    def _joint(self, split: str) -> ConcatDataset:
        parts = []
        for task_id in self.sequence.task_ids:
            images, labels = self.sequence.dataset(task_id, split).tensors
            parts.append(
                TensorDataset(images, labels, torch.full_like(labels, task_id, dtype=torch.int64))
            )
        return ConcatDataset(parts)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._joint("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._joint("val"), train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self.task_dataloader(task_id, "test") for task_id in self.sequence.task_ids]

    def task_dataloader(self, task_id: int, split: str) -> DataLoader:
        """Loader of ``task_id``'s ``split`` alone, as ``(image, label)`` batches."""
        return self._loader(self.sequence.dataset(task_id, split), train=split == "train")


class STLDataModule(_SequenceDataModule):
    """Single-task data: task ``task_id`` of the sequence as one classification problem.

    Args:
        task_id: the task to learn (default 1: with a permuted sequence, the plain images).
        **kwargs: the shared base's arguments (see the module docstring); ``num_tasks``
            defaults to ``task_id`` for a permuted sequence.
    """

    def __init__(self, task_id: int = 1, **kwargs: Any) -> None:
        if kwargs.get("sequence", "permuted") == "permuted" and kwargs.get("num_tasks") is None:
            kwargs["num_tasks"] = task_id
        super().__init__(**kwargs)
        self.task_id = task_id

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "test"), train=False)
