"""Lightning DataModules for continual, multi-task and single-task learning.

Each composes a typed sequence spec (:mod:`clarena.experiments.data.specs`: which tasks) with
its loader settings (batch sizes, workers, normalisation, augmentation):

- :class:`CLDataModule`: one task at a time (:meth:`CLDataModule.setup_task_id`), test loaders
  for any seen task.
- :class:`MTLDataModule`: every task at once, batches ``(image, label, task_id)``.
- :class:`STLDataModule`: one task of the sequence as a plain classification problem.

Configs name one flat target per sequence and paradigm, which takes exactly that sequence's
arguments plus the loader's (``PermutedCLDataModule``, ``SplitCLDataModule``,
``RotatedCLDataModule``, ``MultiSourceCLDataModule``; the same for ``MTL`` and ``STL``); an
argument the sequence does not take is refused, naming the nearest one it does. The 0.1 flat form
``CLDataModule(sequence="permuted", source=..., ...)`` (saved model files, upstream configs) still
builds the same data.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import MISSING, fields
from functools import cached_property
from typing import Any, Generic, TypeVar

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import ConcatDataset, DataLoader, Dataset, TensorDataset

from clarena.backbones import checked_keywords
from clarena.experiments.running.data.sequences import TaskSequence
from clarena.experiments.running.data.specs import (
    FLAT_SEQUENCE_ARGUMENTS,
    SPECS,
    MultiSourceTasks,
    PermutedTasks,
    RotatedTasks,
    SequenceSpec,
    SourceReading,
    SplitTasks,
    spec_from_flat,
)
from clarena.experiments.running.data.transforms import BatchTransform

#: Values of the 0.1 flat form's ``sequence`` argument.
SEQUENCES: tuple[str, ...] = tuple(SPECS)


class _SequenceDataModule(LightningDataModule):
    """Builds the task sequence from its spec and makes loaders.

    Args:
        sequence: the sequence spec (e.g. ``PermutedTasks(source="mnist", root="data",
            num_tasks=10)``); in the 0.1 flat form its kind's name (``permuted``, ``split``,
            ``rotated``, ``multi_source``), with the spec's arguments in ``flat``.
        batch_size: training batch size.
        eval_batch_size: validation and test batch size.
        num_workers: data loader worker processes.
        mean, std: per-channel normalisation constants applied per batch (default: none).
        crop_padding: random crop with this zero padding, training loaders only (0: off).
        horizontal_flip: random horizontal flip, training loaders only.
        flat: the 0.1 flat form's sequence arguments
            (:data:`~clarena.experiments.data.specs.FLAT_SEQUENCE_ARGUMENTS`); arguments the
            named sequence does not take are ignored, as they were in 0.1.
    """

    def __init__(
        self,
        sequence: SequenceSpec | str = "permuted",
        *,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        **flat: Any,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if isinstance(sequence, SequenceSpec):
            if flat:
                raise TypeError(
                    f"{owner}() got {', '.join(map(repr, flat))} beside a sequence spec; give "
                    f"them to {type(sequence).__name__}."
                )
            spec = sequence
        else:
            checked_keywords(owner, flat, list(FLAT_SEQUENCE_ARGUMENTS))
            spec = spec_from_flat(owner, sequence, flat)
        for name, value, least, fix in (
            ("batch_size", batch_size, 1, "samples per training batch, e.g. batch_size=64"),
            ("eval_batch_size", eval_batch_size, 1, "e.g. eval_batch_size=512"),
            ("num_workers", num_workers, 0, "0 loads the data in the main process"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(
                    f"{owner}: {name} must be an integer >= {least} ({fix}); got {value!r}."
                )
        self.spec = spec
        self.sequence_kind = spec.kind
        self.eval_transform = BatchTransform(mean=mean, std=std)
        self.train_transform = BatchTransform(
            mean=mean, std=std, crop_padding=crop_padding, horizontal_flip=horizontal_flip
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers

    @cached_property
    def sequence(self) -> TaskSequence:
        """The task sequence (its files are read on first use)."""
        return self.spec.build()

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


class CLDataModule(_SequenceDataModule):
    """Continual-learning data: the current task's loaders, test loaders for any task.

    Arguments as for the shared base (:class:`_SequenceDataModule`). Call
    :meth:`setup_task_id` before fitting each task.
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

    Arguments as for the shared base (:class:`_SequenceDataModule`).
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
        sequence: the sequence spec, or the 0.1 flat form's sequence name.
        task_id: the task to learn (default 1: with a permuted sequence, the plain images).
        **kwargs: the shared base's arguments (:class:`_SequenceDataModule`); in the flat form
            ``num_tasks`` defaults to ``task_id`` for a permuted or rotated sequence.
    """

    def __init__(
        self, sequence: SequenceSpec | str = "permuted", task_id: int = 1, **kwargs: Any
    ) -> None:
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
            raise ValueError(
                f"{type(self).__name__}: task_id must be a task of the sequence, an integer >= 1; "
                f"got {task_id!r}."
            )
        if sequence in ("permuted", "rotated") and kwargs.get("num_tasks") is None:
            kwargs["num_tasks"] = task_id
        super().__init__(sequence, **kwargs)
        self.task_id = task_id

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.sequence.dataset(self.task_id, "test"), train=False)


_Module = TypeVar("_Module", bound=_SequenceDataModule)


class FlatDataModule(Generic[_Module]):
    """A config target that builds ``module(spec(...), ...)`` from one flat argument list.

    It takes exactly the spec's arguments and the module's loader arguments, with their
    defaults; any other name is refused with the nearest valid one. Called like the module::

        PermutedCLDataModule(source="digits", num_tasks=5, batch_size=64)

    Args:
        module: the DataModule class (paradigm).
        spec: the sequence spec class.
        name: the published name (its ``__name__`` and the name messages give).
    """

    def __init__(self, module: type[_Module], spec: type[SequenceSpec], name: str) -> None:
        self.module, self.spec, self.__name__ = module, spec, name
        self.__qualname__, self.__module__ = name, __name__
        self.__doc__ = (
            f"{module.__name__} over :class:`~clarena.experiments.data.specs.{spec.__name__}`, "
            f"from flat arguments: the spec's and the loader's."
        )
        reading = {field.name for field in fields(SourceReading)}
        # STL learns task ``task_id``: a sequence that needs a task count gets ``task_id``'s.
        self.counts_from_task_id = module is STLDataModule and any(
            field.name == "num_tasks" and field.default is MISSING for field in fields(spec)
        )
        own = []
        for field in sorted(fields(spec), key=lambda field: field.name in reading):
            default = inspect.Parameter.empty if field.default is MISSING else field.default
            if self.counts_from_task_id and field.name == "num_tasks":
                default = None
            own.append(
                inspect.Parameter(
                    field.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=field.type,
                )
            )
        # The module's own arguments, then (a subclass passing **kwargs on) the shared base's.
        loader = [
            parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for init in (module.__init__, _SequenceDataModule.__init__)
            for parameter in list(inspect.signature(init).parameters.values())[1:]
            if parameter.name != "sequence" and parameter.kind is not parameter.VAR_KEYWORD
        ]
        loader = list({parameter.name: parameter for parameter in reversed(loader)}.values())[::-1]
        self.__signature__ = inspect.Signature([*own, *loader])
        self.spec_arguments = [parameter.name for parameter in own]
        self.arguments = [*self.spec_arguments, *(parameter.name for parameter in loader)]

    def __call__(self, **arguments: Any) -> _Module:
        arguments = checked_keywords(self.__name__, arguments, self.arguments)
        own = {name: arguments.pop(name) for name in self.spec_arguments if name in arguments}
        if self.counts_from_task_id and own.get("num_tasks") is None:
            own["num_tasks"] = arguments.get("task_id", 1)
        missing = [
            name
            for name, parameter in self.__signature__.parameters.items()
            if parameter.default is inspect.Parameter.empty and name not in own
        ]
        if missing:
            raise TypeError(f"{self.__name__}() needs {', '.join(missing)}; e.g. {missing[0]}=5.")
        return self.module(self.spec(**own), **arguments)

    def __repr__(self) -> str:
        return f"<flat DataModule target {self.__name__}>"


PermutedCLDataModule = FlatDataModule(CLDataModule, PermutedTasks, "PermutedCLDataModule")
SplitCLDataModule = FlatDataModule(CLDataModule, SplitTasks, "SplitCLDataModule")
RotatedCLDataModule = FlatDataModule(CLDataModule, RotatedTasks, "RotatedCLDataModule")
MultiSourceCLDataModule = FlatDataModule(CLDataModule, MultiSourceTasks, "MultiSourceCLDataModule")
PermutedMTLDataModule = FlatDataModule(MTLDataModule, PermutedTasks, "PermutedMTLDataModule")
SplitMTLDataModule = FlatDataModule(MTLDataModule, SplitTasks, "SplitMTLDataModule")
RotatedMTLDataModule = FlatDataModule(MTLDataModule, RotatedTasks, "RotatedMTLDataModule")
MultiSourceMTLDataModule = FlatDataModule(
    MTLDataModule, MultiSourceTasks, "MultiSourceMTLDataModule"
)
PermutedSTLDataModule = FlatDataModule(STLDataModule, PermutedTasks, "PermutedSTLDataModule")
SplitSTLDataModule = FlatDataModule(STLDataModule, SplitTasks, "SplitSTLDataModule")
RotatedSTLDataModule = FlatDataModule(STLDataModule, RotatedTasks, "RotatedSTLDataModule")
MultiSourceSTLDataModule = FlatDataModule(
    STLDataModule, MultiSourceTasks, "MultiSourceSTLDataModule"
)

#: Every flat target: its name -> the builder.
FLAT_TARGETS: dict[str, FlatDataModule[Any]] = {
    builder.__name__: builder
    for builder in (
        PermutedCLDataModule,
        SplitCLDataModule,
        RotatedCLDataModule,
        MultiSourceCLDataModule,
        PermutedMTLDataModule,
        SplitMTLDataModule,
        RotatedMTLDataModule,
        MultiSourceMTLDataModule,
        PermutedSTLDataModule,
        SplitSTLDataModule,
        RotatedSTLDataModule,
        MultiSourceSTLDataModule,
    )
}


def dataset_identity(config: Any) -> tuple[str, list[str]]:
    """``(sequence kind, source names)`` a dataset config names, flat target or 0.1 flat form.

    Read from the config alone (nothing is built): ``("split", ["cifar100"])``.
    """
    target = str(config.get("_target_") or "")
    builder = FLAT_TARGETS.get(target.rpartition(".")[2])
    kind = builder.spec.kind if builder is not None else str(config.get("sequence") or "permuted")
    if kind == "multi_source":
        return kind, [str(name) for name in config.get("sources") or []]
    return kind, [str(config.get("source") or "digits")]
