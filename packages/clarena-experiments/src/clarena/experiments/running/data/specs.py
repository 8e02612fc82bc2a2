"""What a task sequence is, as typed objects: one class per sequence with only its own arguments.

A spec says which source(s) to read, how (:class:`SourceReading`: root, size, splits) and how to
turn them into tasks. :meth:`SequenceSpec.build` reads the files and returns the
:class:`~clarena.experiments.data.sequences.TaskSequence`; the constructor checks everything that
can be checked before a file is read.

- :class:`PermutedTasks`: ``source``, ``num_tasks``, ``permutation_seed``, ``first_task_identity``.
- :class:`SplitTasks`: ``source``, ``class_split`` or ``classes_per_task`` or ``num_tasks``.
- :class:`RotatedTasks`: ``source``, ``num_tasks``, ``angles``.
- :class:`MultiSourceTasks`: ``sources``.

A DataModule composes one spec with its loader settings
(:class:`~clarena.experiments.data.datamodules.CLDataModule`), and the flat config targets
(``PermutedCLDataModule`` ...) build both from one flat argument list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from clarena.experiments.running.data.local_sources import LOCAL_SOURCES, load_local_source
from clarena.experiments.running.data.sequences import (
    MultiSourceSequence,
    PermutedSequence,
    RotatedSequence,
    SplitSequence,
    TaskSequence,
)
from clarena.experiments.running.data.sources import SOURCE_NUM_CLASSES, ImageSplits, load_source

#: Every source name a spec may read.
KNOWN_SOURCES: tuple[str, ...] = tuple(dict.fromkeys([*SOURCE_NUM_CLASSES, *LOCAL_SOURCES]))


def _check_source(owner: str, name: str) -> None:
    if name not in KNOWN_SOURCES:
        raise ValueError(
            f"{owner}: unknown source {name!r}; expected one of {', '.join(KNOWN_SOURCES)}."
        )


def _check_num_tasks(owner: str, num_tasks: object) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"{owner}: num_tasks must be a positive integer; got {num_tasks!r}.")


@dataclass(frozen=True, kw_only=True)
class SourceReading:
    """How a spec reads its source(s).

    Args:
        root: local directory holding the source's files (nothing is downloaded); the bundled
            ``digits`` need none.
        image_size: side of the square images (``digits`` default 28, others their own size).
        channels: image channels (3 repeats a grey source, for ResNets).
        val_fraction: share of training images held out for validation.
        test_fraction: share of the digits held out for testing.
        split_seed: seed of the train / validation / test split.
    """

    root: str | None = None
    image_size: int | None = None
    channels: int | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0

    def load(self, source: str) -> ImageSplits:
        """``source``'s splits: a local file-format source as uint8, else the bundled digits."""
        arguments: dict[str, Any] = {
            "root": self.root,
            "image_size": self.image_size,
            "channels": self.channels,
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
        }
        if source in LOCAL_SOURCES:
            return load_local_source(source, **arguments)
        return load_source(source, test_fraction=self.test_fraction, **arguments)


@dataclass(frozen=True, kw_only=True)
class SequenceSpec(SourceReading, ABC):
    """A task sequence before its files are read (a sequence kind plus its own arguments)."""

    #: The sequence's name in flat configs (``sequence: permuted``) and messages.
    kind: ClassVar[str]

    @abstractmethod
    def source_names(self) -> list[str]:
        """The sources the sequence reads (one name for single-source sequences)."""

    @abstractmethod
    def build(self) -> TaskSequence:
        """Read the source(s) and return the task sequence."""

    @classmethod
    def argument_names(cls) -> list[str]:
        """The spec's own and reading arguments, in declaration order."""
        return [field.name for field in fields(cls)]


@dataclass(frozen=True, kw_only=True)
class PermutedTasks(SequenceSpec):
    """Permuted tasks: task ``t`` permutes every image's pixels with a fixed permutation.

    Args:
        source: the image source (``digits``, ``mnist``, ``fashion_mnist``, ...).
        num_tasks: number of tasks.
        permutation_seed: seed of the permutations (task ``t`` uses ``permutation_seed + t``).
        first_task_identity: keep task 1's images unpermuted.
    """

    kind: ClassVar[str] = "permuted"
    source: str = "digits"
    num_tasks: int
    permutation_seed: int = 0
    first_task_identity: bool = True

    def __post_init__(self) -> None:
        _check_source(type(self).__name__, self.source)
        _check_num_tasks(type(self).__name__, self.num_tasks)

    def source_names(self) -> list[str]:
        return [self.source]

    def build(self) -> TaskSequence:
        return PermutedSequence(
            self.load(self.source),
            num_tasks=self.num_tasks,
            permutation_seed=self.permutation_seed,
            first_task_identity=self.first_task_identity,
        )


@dataclass(frozen=True, kw_only=True)
class RotatedTasks(SequenceSpec):
    """Rotated tasks (domain-incremental): task ``t`` rotates every image by a fixed angle.

    Args:
        source: the image source.
        num_tasks: number of tasks.
        angles: degrees of each task (default: evenly in ``[0, 180)``, task 1 unrotated).
    """

    kind: ClassVar[str] = "rotated"
    source: str = "digits"
    num_tasks: int
    angles: Sequence[float] | None = None

    def __post_init__(self) -> None:
        _check_source(type(self).__name__, self.source)
        _check_num_tasks(type(self).__name__, self.num_tasks)

    def source_names(self) -> list[str]:
        return [self.source]

    def build(self) -> TaskSequence:
        angles = None if self.angles is None else list(self.angles)
        return RotatedSequence(self.load(self.source), num_tasks=self.num_tasks, angles=angles)


@dataclass(frozen=True, kw_only=True)
class SplitTasks(SequenceSpec):
    """Split tasks: each task holds a disjoint group of the source's classes.

    Args:
        source: the image source.
        class_split: the source classes of each task, e.g. ``[[0, 1], [2, 3]]``.
        classes_per_task: group size when ``class_split`` is not given.
        num_tasks: number of equal groups when ``class_split`` is not given (with
            ``classes_per_task``, the two must cover every class); with ``class_split``, its
            group count.
    """

    kind: ClassVar[str] = "split"
    source: str = "digits"
    class_split: Sequence[Sequence[int]] | None = None
    classes_per_task: int | None = None
    num_tasks: int | None = None

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_source(owner, self.source)
        if self.num_tasks is not None:
            _check_num_tasks(owner, self.num_tasks)
        # Checked here, before any file is read, where the class count is known in advance;
        # else when the sequence is built (still before training).
        if self.class_split is None and self.num_tasks is not None:
            total = SOURCE_NUM_CLASSES.get(self.source)
            if total is not None:
                split = even_class_split(owner, total, self.num_tasks, self.classes_per_task)
                object.__setattr__(self, "class_split", split)
        if (
            self.class_split is not None
            and self.num_tasks is not None
            and len(self.class_split) != self.num_tasks
        ):
            raise ValueError(
                f"{owner}: num_tasks={self.num_tasks} but class_split has "
                f"{len(self.class_split)} groups (one per task). Drop num_tasks or make them agree."
            )

    def source_names(self) -> list[str]:
        return [self.source]

    def build(self) -> TaskSequence:
        splits = self.load(self.source)
        class_split = self.class_split
        if class_split is None and self.num_tasks is not None:
            class_split = even_class_split(
                type(self).__name__, splits.num_classes, self.num_tasks, self.classes_per_task
            )
        return SplitSequence(
            splits, class_split=class_split, classes_per_task=self.classes_per_task
        )


@dataclass(frozen=True, kw_only=True)
class MultiSourceTasks(SequenceSpec):
    """One source per task, all its classes (e.g. MNIST, Fashion-MNIST, SVHN, CIFAR-10).

    Args:
        sources: each task's source, task 1 first, all read from ``root``; they must share one
            image shape (set ``image_size`` and ``channels``).
    """

    kind: ClassVar[str] = "multi_source"
    sources: Sequence[str]

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if not self.sources or isinstance(self.sources, str):
            raise ValueError(
                f"{owner}: a multi_source sequence needs sources, e.g. "
                f"[mnist, fashion_mnist, svhn, cifar10]."
            )
        for name in self.sources:
            _check_source(owner, name)
        object.__setattr__(self, "sources", list(self.sources))

    def source_names(self) -> list[str]:
        return list(self.sources)

    def build(self) -> TaskSequence:
        return MultiSourceSequence([self.load(name) for name in self.sources])


#: Sequence kind (the flat configs' ``sequence`` value) -> its spec class.
SPECS: dict[str, type[SequenceSpec]] = {
    spec.kind: spec for spec in (PermutedTasks, SplitTasks, RotatedTasks, MultiSourceTasks)
}

#: Arguments of the 0.1 flat form ``CLDataModule(sequence=..., ...)`` that describe the sequence.
FLAT_SEQUENCE_ARGUMENTS: tuple[str, ...] = (
    "source",
    "root",
    "num_tasks",
    "class_split",
    "classes_per_task",
    "permutation_seed",
    "first_task_identity",
    "image_size",
    "channels",
    "val_fraction",
    "test_fraction",
    "split_seed",
    "sources",
    "angles",
)


def spec_from_flat(owner: str, sequence: str, arguments: Mapping[str, Any]) -> SequenceSpec:
    """The spec of the 0.1 flat form: ``sequence`` names the kind; arguments it does not take
    (the flat form accepted every sequence's arguments) are ignored, as they were.

    Raises:
        ValueError: an unknown ``sequence``, or what the spec refuses.
    """
    if sequence not in SPECS:
        raise ValueError(f"{owner}: sequence must be one of {', '.join(SPECS)}; got {sequence!r}.")
    spec = SPECS[sequence]
    own = set(spec.argument_names())
    chosen = {name: value for name, value in arguments.items() if name in own}
    if spec in (PermutedTasks, RotatedTasks) and chosen.get("num_tasks") is None:
        raise ValueError(f"{owner}: a {sequence} sequence needs num_tasks.")
    if spec is MultiSourceTasks and not chosen.get("sources"):
        raise ValueError(
            f"{owner}: a multi_source sequence needs sources, e.g. "
            f"[mnist, fashion_mnist, svhn, cifar10]."
        )
    return spec(**chosen)


def even_class_split(
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
