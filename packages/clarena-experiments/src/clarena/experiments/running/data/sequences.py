"""Task sequences over image sources: permuted, split, rotated and multi-source.

Tasks are numbered from 1. Each task has its own classes, labelled ``0..num_classes(t)-1``
(the class-incremental offset is the algorithm's business, not the data's).

- :class:`PermutedSequence`: every task has all classes of the source; task ``t`` applies one
  fixed pixel permutation to every image (task 1 keeps the images as they are by default).
- :class:`SplitSequence`: the classes are split into disjoint groups, one group per task.
- :class:`RotatedSequence`: every task has all classes; task ``t`` rotates every image by a
  fixed angle (domain-incremental).
- :class:`MultiSourceSequence`: one source per task, all its classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from clarena.experiments.running.data.sources import ImageSplits

#: Dataset splits a sequence serves.
SPLITS: tuple[str, ...] = ("train", "val", "test")


class TaskSequence(ABC):
    """A sequence of classification tasks over one image source.

    Args:
        splits: the source's images and labels.
        num_tasks: number of tasks.
    """

    def __init__(self, splits: ImageSplits, num_tasks: int) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"num_tasks must be a positive integer; got {num_tasks!r}.")
        self.splits = splits
        self.num_tasks = num_tasks

    @property
    def task_ids(self) -> list[int]:
        """``[1, ..., num_tasks]``."""
        return list(range(1, self.num_tasks + 1))

    def check_task_id(self, task_id: int) -> int:
        """Return ``task_id`` if the sequence has it, else raise ``ValueError``."""
        if task_id not in self.task_ids:
            raise ValueError(
                f"{type(self).__name__} has tasks 1..{self.num_tasks}; got task {task_id!r}."
            )
        return task_id

    @abstractmethod
    def num_classes(self, task_id: int) -> int:
        """Number of classes of ``task_id``."""

    @abstractmethod
    def _task_tensors(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Turn source ``images (N, C, H, W)`` and ``labels (N,)`` into the task's tensors."""

    def dataset(self, task_id: int, split: str) -> TensorDataset:
        """The ``(image, label)`` dataset of ``task_id``'s ``split`` (``train``/``val``/``test``)."""
        self.check_task_id(task_id)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
        images = getattr(self.splits, f"{split}_images")
        labels = getattr(self.splits, f"{split}_labels")
        return self._task_dataset(task_id, images, labels)

    def _task_dataset(self, task_id: int, images: Tensor, labels: Tensor) -> TensorDataset:
        """The task's dataset from source ``images (N, C, H, W)`` and ``labels (N,)``."""
        return TensorDataset(*self._task_tensors(task_id, images, labels))


class RowsDataset(TensorDataset):
    """``(images[rows[i]], labels[i])`` pairs that share the source's images (no copy).

    Args:
        images: the source's images ``(N, C, H, W)``.
        rows: the rows of ``images`` in the dataset ``(M,)``.
        labels: the task's labels ``(M,)``.

    :attr:`tensors` gathers ``(images[rows], labels)`` when asked (a copy, for joint datasets).
    """

    def __init__(self, images: Tensor, rows: Tensor, labels: Tensor) -> None:
        self.images, self.rows, self.labels = images, rows, labels

    @property
    def tensors(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        return self.images[self.rows], self.labels

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[self.rows[index]], self.labels[index]

    def __len__(self) -> int:
        return len(self.rows)


class PermutedSequence(TaskSequence):
    """Permuted tasks: task ``t`` permutes the pixels of every image with a fixed permutation.

    Args:
        splits: the source's images and labels.
        num_tasks: number of tasks.
        permutation_seed: seed of the permutations (task ``t`` uses ``permutation_seed + t``).
        first_task_identity: keep task 1's images unpermuted.
    """

    def __init__(
        self,
        splits: ImageSplits,
        num_tasks: int,
        permutation_seed: int = 0,
        first_task_identity: bool = True,
    ) -> None:
        super().__init__(splits, num_tasks)
        height, width = splits.train_images.shape[-2:]
        self.permutations: dict[int, Tensor] = {}
        for task_id in self.task_ids:
            if task_id == 1 and first_task_identity:
                permutation = torch.arange(height * width)
            else:
                generator = torch.Generator().manual_seed(permutation_seed + task_id)
                permutation = torch.randperm(height * width, generator=generator)
            self.permutations[task_id] = permutation

    def num_classes(self, task_id: int) -> int:
        self.check_task_id(task_id)
        return self.splits.num_classes

    def _task_tensors(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        flat = images.flatten(2)[:, :, self.permutations[task_id]]
        return flat.reshape(images.shape), labels


class SplitSequence(TaskSequence):
    """Split tasks: each task holds a disjoint group of the source's classes.

    Args:
        splits: the source's images and labels.
        class_split: the source classes of each task, e.g. ``[[0, 1], [2, 3]]``; ``None`` splits
            the classes in order into groups of ``classes_per_task``.
        classes_per_task: group size used when ``class_split`` is ``None``.
    """

    def __init__(
        self,
        splits: ImageSplits,
        class_split: Sequence[Sequence[int]] | None = None,
        classes_per_task: int | None = None,
    ) -> None:
        total = splits.num_classes
        if class_split is None:
            if classes_per_task is None or total % classes_per_task:
                raise ValueError(
                    f"Split sequence: give class_split (a list of class lists) or a "
                    f"classes_per_task that divides the {total} classes; got "
                    f"classes_per_task={classes_per_task!r}."
                )
            class_split = [
                list(range(start, start + classes_per_task))
                for start in range(0, total, classes_per_task)
            ]
        groups = [[int(c) for c in group] for group in class_split]
        flat = [c for group in groups for c in group]
        if len(set(flat)) != len(flat) or not all(0 <= c < total for c in flat) or not all(groups):
            raise ValueError(
                f"class_split must hold non-empty, disjoint lists of classes in 0..{total - 1}; "
                f"got {groups}."
            )
        super().__init__(splits, len(groups))
        self.class_split = groups

    def num_classes(self, task_id: int) -> int:
        return len(self.class_split[self.check_task_id(task_id) - 1])

    def _task_tensors(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self._task_dataset(task_id, images, labels).tensors

    def _task_dataset(self, task_id: int, images: Tensor, labels: Tensor) -> TensorDataset:
        # Rows, not a copy: a task of Split CIFAR-100 would otherwise copy 10% of the images.
        classes = torch.tensor(self.class_split[task_id - 1])
        rows = torch.nonzero(torch.isin(labels, classes)).flatten()
        local = (labels[rows].unsqueeze(1) == classes.unsqueeze(0)).int().argmax(dim=1)
        return RowsDataset(images, rows, local)


class RotatedSequence(TaskSequence):
    """Rotated tasks (domain-incremental): task ``t`` rotates every image by a fixed angle.

    Every task has all the source's classes. Rotation is bilinear about the image centre, with
    zeros outside the image, computed in chunks; uint8 images stay uint8 (rounded).

    Args:
        splits: the source's images and labels.
        num_tasks: number of tasks.
        angles: rotation of each task in degrees; ``None`` spaces them evenly in ``[0, 180)``
            (task 1 unrotated).
    """

    def __init__(
        self, splits: ImageSplits, num_tasks: int, angles: Sequence[float] | None = None
    ) -> None:
        super().__init__(splits, num_tasks)
        if angles is None:
            angles = [180.0 * index / num_tasks for index in range(num_tasks)]
        if len(angles) != num_tasks:
            raise ValueError(
                f"Rotated sequence: give one angle per task ({num_tasks}); got {list(angles)}."
            )
        self.angles = {
            task_id: float(angle) for task_id, angle in zip(self.task_ids, angles, strict=True)
        }

    def num_classes(self, task_id: int) -> int:
        self.check_task_id(task_id)
        return self.splits.num_classes

    def _task_tensors(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return rotate(images, self.angles[task_id]), labels


def rotate(images: Tensor, degrees: float, chunk: int = 4096) -> Tensor:
    """Rotate ``(N, C, H, W)`` images counter-clockwise by ``degrees``; keeps the dtype."""
    if degrees % 360 == 0:
        return images
    radians = torch.tensor(degrees * torch.pi / 180.0)
    cos, sin = float(torch.cos(radians)), float(torch.sin(radians))
    theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]])
    out = torch.empty_like(images)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].float()
        grid = F.affine_grid(theta.expand(len(part), 2, 3), list(part.shape), align_corners=False)
        rotated = F.grid_sample(part, grid, mode="bilinear", align_corners=False)
        if images.dtype == torch.uint8:
            rotated = rotated.round_().clamp_(0, 255)
        out[start : start + chunk] = rotated.to(images.dtype)
    return out


class MultiSourceSequence(TaskSequence):
    """One source per task (e.g. MNIST, Fashion-MNIST, SVHN, CIFAR-10), all its classes.

    The sources must share one image shape (load them resized and channel-matched).

    Args:
        sources: the splits of each task's source, task 1 first.
    """

    def __init__(self, sources: Sequence[ImageSplits]) -> None:
        if not sources:
            raise ValueError("Multi-source sequence: give at least one source.")
        shapes = {tuple(source.train_images.shape[1:]) for source in sources}
        if len(shapes) != 1:
            raise ValueError(
                f"Multi-source sequence: the sources' images differ in shape {sorted(shapes)}; "
                f"set image_size and channels so they match."
            )
        super().__init__(sources[0], len(sources))
        self.sources = list(sources)

    def num_classes(self, task_id: int) -> int:
        return self.sources[self.check_task_id(task_id) - 1].num_classes

    def dataset(self, task_id: int, split: str) -> TensorDataset:
        """The ``(image, label)`` dataset of ``task_id``'s source, ``split``."""
        self.check_task_id(task_id)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}; got {split!r}.")
        source = self.sources[task_id - 1]
        images = getattr(source, f"{split}_images")
        labels = getattr(source, f"{split}_labels")
        return TensorDataset(*self._task_tensors(task_id, images, labels))

    def _task_tensors(self, task_id: int, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images, labels
