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

from clarena.experiments.data.local_sources import LOCAL_SOURCES, load_local_source
from clarena.experiments.data.sequences import (
    MultiSourceSequence,
    PermutedSequence,
    RotatedSequence,
    SplitSequence,
    TaskSequence,
)
from clarena.experiments.data.sources import SOURCE_NUM_CLASSES, ImageSplits, load_source
from clarena.experiments.data.transforms import BatchTransform

#: Values of the ``sequence`` argument.
SEQUENCES: tuple[str, ...] = ("permuted", "split", "rotated", "multi_source")


class _SequenceDataModule(LightningDataModule):
    """Builds the task sequence from flat arguments and makes loaders.

    Args:
        sequence: ``permuted``, ``split``, ``rotated`` or ``multi_source``.
        source: image source: ``digits`` (bundled, float) or one of
            :data:`~clarena.experiments.data.local_sources.LOCAL_SOURCES` (``mnist``,
            ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn``, ``tinyimagenet``), read from
            ``root`` in its published layout and held as uint8.
        root: local directory holding the source's files (nothing is downloaded).
        num_tasks: number of tasks of a permuted or rotated sequence.
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
        sources: the source of each task of a ``multi_source`` sequence, e.g.
            ``[mnist, fashion_mnist, svhn, cifar10]`` (all read from ``root``).
        angles: degrees of each task of a ``rotated`` sequence (default: evenly in [0, 180)).
        mean, std: per-channel normalisation constants applied per batch (default: none).
        crop_padding: random crop with this zero padding, training loaders only (0: off).
        horizontal_flip: random horizontal flip, training loaders only.
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
        sources: Sequence[str] | None = None,
        angles: Sequence[float] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
    ) -> None:
        super().__init__()
        if sequence not in SEQUENCES:
            raise ValueError(
                f"{type(self).__name__}: sequence must be one of {', '.join(SEQUENCES)}; got "
                f"{sequence!r}."
            )
        if sequence in ("permuted", "rotated") and num_tasks is None:
            raise ValueError(f"{type(self).__name__}: a {sequence} sequence needs num_tasks.")
        if sequence == "multi_source" and not sources:
            raise ValueError(
                f"{type(self).__name__}: a multi_source sequence needs sources, e.g. "
                f"[mnist, fashion_mnist, svhn, cifar10]."
            )
        for name in [source] if sequence != "multi_source" else list(sources or []):
            if name not in SOURCE_NUM_CLASSES and name not in LOCAL_SOURCES:
                raise ValueError(
                    f"{type(self).__name__}: unknown source {name!r}; expected one of "
                    f"{', '.join(dict.fromkeys([*SOURCE_NUM_CLASSES, *LOCAL_SOURCES]))}."
                )
        if num_tasks is not None and (
            isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1
        ):
            raise ValueError(
                f"{type(self).__name__}: num_tasks must be a positive integer; got {num_tasks!r}."
            )
        for name, value, least, fix in (
            ("batch_size", batch_size, 1, "samples per training batch, e.g. batch_size=64"),
            ("eval_batch_size", eval_batch_size, 1, "e.g. eval_batch_size=512"),
            ("num_workers", num_workers, 0, "0 loads the data in the main process"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"{type(self).__name__}: {name} must be an integer >= {least} ({fix}); got "
                    f"{value!r}."
                )
        # Checked here, before any file is read, where the class count is known in advance; else
        # when the sequence is loaded (still before training).
        if (
            sequence == "split"
            and class_split is None
            and num_tasks is not None
            and source in SOURCE_NUM_CLASSES
        ):
            class_split = _even_class_split(
                type(self).__name__, SOURCE_NUM_CLASSES[source], num_tasks, classes_per_task
            )
        if (
            sequence == "split"
            and class_split is not None
            and num_tasks is not None
            and len(class_split) != num_tasks
        ):
            raise ValueError(
                f"{type(self).__name__}: num_tasks={num_tasks} but class_split has "
                f"{len(class_split)} groups (one per task). Drop num_tasks or make them agree."
            )
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
            "sources": None if sources is None else list(sources),
            "angles": None if angles is None else list(angles),
        }
        self.eval_transform = BatchTransform(mean=mean, std=std)
        self.train_transform = BatchTransform(
            mean=mean, std=std, crop_padding=crop_padding, horizontal_flip=horizontal_flip
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers

    @cached_property
    def sequence(self) -> TaskSequence:
        """The task sequence (loaded on first use)."""
        arguments = self.sequence_arguments
        if self.sequence_kind == "multi_source":
            return MultiSourceSequence([self._load(name) for name in arguments["sources"]])
        splits = self._load(self.source_arguments["source"])
        if self.sequence_kind == "rotated":
            return RotatedSequence(
                splits, num_tasks=arguments["num_tasks"], angles=arguments["angles"]
            )
        if self.sequence_kind == "permuted":
            return PermutedSequence(
                splits,
                num_tasks=arguments["num_tasks"],
                permutation_seed=arguments["permutation_seed"],
                first_task_identity=arguments["first_task_identity"],
            )
        class_split = arguments["class_split"]
        if class_split is None and arguments["num_tasks"] is not None:
            class_split = _even_class_split(
                type(self).__name__,
                splits.num_classes,
                arguments["num_tasks"],
                arguments["classes_per_task"],
            )
        return SplitSequence(
            splits, class_split=class_split, classes_per_task=arguments["classes_per_task"]
        )

    def _load(self, source: str) -> ImageSplits:
        """``source``'s splits: a local file-format source as uint8, else :func:`load_source`."""
        arguments = {**self.source_arguments, "source": source}
        if source in LOCAL_SOURCES:
            del arguments["test_fraction"]
            return load_local_source(**arguments)
        return load_source(**arguments)

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
            collate_fn=self.train_transform if train else self.eval_transform,
            persistent_workers=self.num_workers > 0,
        )


def _even_class_split(
    owner: str, total: int, num_tasks: int, classes_per_task: int | None
) -> list[list[int]]:
    """Classes ``0..total-1`` in order, in ``num_tasks`` groups of equal size.

    Raises:
        ValueError: the groups would not hold every class exactly once (``num_tasks`` does not
            divide the classes, or ``classes_per_task * num_tasks != total``).
    """
    valid = [n for n in range(1, total + 1) if total % n == 0]
    if classes_per_task is None:
        if total % num_tasks:
            raise ValueError(
                f"{owner}: num_tasks={num_tasks} does not divide the source's {total} classes "
                f"into equal groups (classes would be dropped); use num_tasks in "
                f"{valid}, or give class_split explicitly."
            )
        classes_per_task = total // num_tasks
    elif classes_per_task * num_tasks != total:
        raise ValueError(
            f"{owner}: num_tasks={num_tasks} x classes_per_task={classes_per_task} covers "
            f"{num_tasks * classes_per_task} of the source's {total} classes; they must cover all "
            f"{total} (num_tasks in {valid}). To use a subset of the classes, list the groups in "
            f"class_split."
        )
    return [
        list(range(start, start + classes_per_task)) for start in range(0, total, classes_per_task)
    ]


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
            defaults to ``task_id`` for a permuted or rotated sequence.
    """

    def __init__(self, task_id: int = 1, **kwargs: Any) -> None:
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
            raise ValueError(
                f"{type(self).__name__}: task_id must be a task of the sequence, an integer >= 1; "
                f"got {task_id!r}."
            )
        sequence = kwargs.get("sequence", "permuted")
        if sequence in ("permuted", "rotated") and kwargs.get("num_tasks") is None:
            kwargs["num_tasks"] = task_id
        super().__init__(**kwargs)
        self.task_id = task_id

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "test"), train=False)
