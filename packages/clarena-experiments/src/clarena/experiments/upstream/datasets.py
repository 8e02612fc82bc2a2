"""Upstream CLArena's dataset classes as clarena's DataModules, argument by argument.

Upstream configs name one class per benchmark (``clarena.cl_datasets.PermutedMNIST``,
``SplitCIFAR100`` ...). clarena has one DataModule per paradigm that takes the sequence kind
and the source as arguments; the classes below map to those, reading the same files from the
same ``root`` (torchvision's published layout: ``<root>/MNIST/raw``, ``<root>/cifar-100-python``
...). Nothing is downloaded: missing files stop the run with one line naming the source, the
root and the layout.

Argument by argument: ``root``, ``num_tasks``, ``class_split``, ``num_workers`` keep their
names; ``validation_percentage`` is ``val_fraction``; ``batch_size`` sets the training and
evaluation batch size (upstream uses one for both); ``repeat_channels`` is ``channels``;
``resize`` (square) is ``image_size``. Transforms clarena cannot express, explicit permutation
seeds and per-task batch sizes are refused by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from clarena.experiments.errors import PipelineConfigError

#: Upstream CL dataset class -> (clarena sequence, clarena source).
CL_DATASETS: dict[str, tuple[str, str]] = {
    "PermutedMNIST": ("permuted", "mnist"),
    "PermutedFashionMNIST": ("permuted", "fashion_mnist"),
    "PermutedCIFAR10": ("permuted", "cifar10"),
    "PermutedCIFAR100": ("permuted", "cifar100"),
    "PermutedSVHN": ("permuted", "svhn"),
    "PermutedTinyImageNet": ("permuted", "tinyimagenet"),
    "RotatedMNIST": ("rotated", "mnist"),
    "SplitMNIST": ("split", "mnist"),
    "SplitFashionMNIST": ("split", "fashion_mnist"),
    "SplitCIFAR10": ("split", "cifar10"),
    "SplitCIFAR100": ("split", "cifar100"),
    "SplitSVHN": ("split", "svhn"),
    "SplitTinyImageNet": ("split", "tinyimagenet"),
}

#: Upstream STL dataset class -> clarena source (task 1 of an unpermuted sequence).
STL_DATASETS: dict[str, str] = {
    "MNIST": "mnist",
    "STLMNIST": "mnist",
    "FashionMNIST": "fashion_mnist",
    "CIFAR10": "cifar10",
    "CIFAR100": "cifar100",
    "SVHN": "svhn",
    "TinyImageNet": "tinyimagenet",
}

#: Sources with one channel, on which every upstream ``permutation_mode`` permutes alike.
_GREY = ("mnist", "fashion_mnist")

CL_OFFER = (
    "clarena reads "
    + ", ".join(f"clarena.cl_datasets.{name}" for name in CL_DATASETS)
    + " (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN and Tiny ImageNet in their published "
    "layouts) and the bundled digits (cl_dataset=permuted_digits or split_digits)"
)
STL_OFFER = "clarena reads " + ", ".join(f"clarena.stl_datasets.{n}" for n in STL_DATASETS)

Arguments = dict[str, Any]


def describe(name: str) -> str:
    """``sequence=permuted, source=mnist`` for a CL dataset class."""
    sequence, source = CL_DATASETS[name]
    return f"sequence={sequence}, source={source}, same root layout, nothing downloaded"


def describe_stl(name: str) -> str:
    """``source=mnist`` for an STL dataset class."""
    return f"source={STL_DATASETS[name]}, same root layout, nothing downloaded"


def _refuse(key: str, name: str, value: Any, why: str) -> PipelineConfigError:
    return PipelineConfigError(f"{key}.{name}={value!r}: {why}")


def _common(key: str, source: str, arguments: Arguments, consumed: set[str]) -> Arguments:
    """The arguments every upstream dataset class shares, in clarena's names."""
    out: Arguments = {}
    renames = {
        "root": "root",
        "num_workers": "num_workers",
        "validation_percentage": "val_fraction",
    }
    for name, value in arguments.items():
        if name in renames:
            out[renames[name]] = value
        elif name == "batch_size":
            if not isinstance(value, int) or isinstance(value, bool):
                raise _refuse(
                    key,
                    name,
                    value,
                    "clarena uses one batch size for every task; give an integer.",
                )
            out["batch_size"] = value
            out["eval_batch_size"] = value
        elif name == "repeat_channels":
            if value is not None:
                out["channels"] = value
        elif name == "resize":
            if value is not None:
                sides = [value] * 2 if isinstance(value, int) else list(value)
                if len(sides) != 2 or sides[0] != sides[1]:
                    raise _refuse(
                        key, name, value, "clarena resizes to squares only; give one side."
                    )
                out["image_size"] = sides[0]
        elif name == "to_tensor":
            if value is not True:
                raise _refuse(
                    key, name, value, "clarena always feeds tensors; set to_tensor: true."
                )
        elif name in ("custom_transforms", "custom_target_transforms"):
            if value is not None:
                raise _refuse(
                    key,
                    name,
                    value,
                    "clarena does not run upstream transforms; its augmentation is "
                    "crop_padding and horizontal_flip. Set it to null (and use those).",
                )
        else:
            continue
        consumed.add(name)
    return out


def _sequence_arguments(
    key: str, sequence: str, source: str, arguments: Arguments, consumed: set[str]
) -> Arguments:
    out: Arguments = {}
    for name, value in arguments.items():
        if name == "num_tasks":
            out["num_tasks"] = value
        elif name == "class_split" and sequence == "split":
            out["class_split"] = class_split_list(value, f"{key}.class_split")
        elif name == "permutation_mode" and sequence == "permuted":
            if value not in ("all", "by_channel", "first_channel_only"):
                raise _refuse(
                    key, name, value, "upstream's modes are all, by_channel, first_channel_only."
                )
            if source not in _GREY and value != "by_channel":
                raise _refuse(
                    key,
                    name,
                    value,
                    f"clarena permutes every channel of a {source} image with the same "
                    f"permutation (upstream's 'by_channel'); set permutation_mode: by_channel.",
                )
        elif name == "permutation_seeds" and sequence == "permuted":
            if value is not None:
                raise _refuse(
                    key,
                    name,
                    value,
                    "clarena draws task t's permutation from permutation_seed + t; drop "
                    "permutation_seeds and set permutation_seed: <int>.",
                )
        else:
            continue
        consumed.add(name)
    return out


def class_split_list(value: Any, key: str) -> Any:
    """Upstream's ``class_split`` as clarena's list of groups.

    Upstream writes it as a list of groups or as a mapping ``{task id: classes}`` with task ids
    ``1..N``; the mapping becomes the list in task order.
    """
    if not isinstance(value, dict):
        return value
    tasks = sorted(int(t) for t in value)
    if tasks != list(range(1, len(tasks) + 1)):
        raise PipelineConfigError(
            f"{key}: a mapping of task ids to classes needs the task ids 1..{len(tasks)}; got "
            f"{sorted(value)}. Number the tasks from 1."
        )
    by_task = {int(t): classes for t, classes in value.items()}
    return [list(by_task[t]) for t in tasks]


def _check_consumed(key: str, owner: str, arguments: Arguments, consumed: set[str]) -> None:
    """Refuse the first argument nothing translated (clarena's own names pass unchanged)."""
    from clarena.experiments.running.data.datamodules import _SequenceDataModule
    from clarena.experiments.running.data.specs import FLAT_SEQUENCE_ARGUMENTS

    # task_id: STLDataModule's own argument.
    own = {
        *inspect.signature(_SequenceDataModule.__init__).parameters,
        *FLAT_SEQUENCE_ARGUMENTS,
        "task_id",
    } - {"self", "flat"}
    for name, value in arguments.items():
        if name not in consumed and name not in own:
            raise _refuse(
                key,
                name,
                value,
                f"upstream {owner}'s argument {name!r} has no clarena counterpart; remove it.",
            )


def cl_arguments(key: str, name: str, arguments: Arguments) -> Arguments:
    """clarena ``CLDataModule`` arguments for upstream ``clarena.cl_datasets.<name>``."""
    sequence, source = CL_DATASETS[name]
    consumed: set[str] = set()
    out: Arguments = {"sequence": sequence, "source": source}
    out |= _common(key, source, arguments, consumed)
    out |= _sequence_arguments(key, sequence, source, arguments, consumed)
    _check_consumed(key, name, arguments, consumed)
    passed = {k: v for k, v in arguments.items() if k not in consumed}
    return out | passed


def cl_translator(name: str) -> Callable[[str, Arguments], Arguments]:
    """The alias translator of upstream CL dataset ``name``."""

    def translate(key: str, arguments: Arguments) -> Arguments:
        return cl_arguments(key, name, arguments)

    return translate


def stl_translator(name: str) -> Callable[[str, Arguments], Arguments]:
    """The alias translator of upstream STL dataset ``name``: task 1, unpermuted."""
    source = STL_DATASETS[name]

    def translate(key: str, arguments: Arguments) -> Arguments:
        consumed: set[str] = set()
        out: Arguments = {"sequence": "permuted", "source": source, "num_tasks": 1, "task_id": 1}
        out |= _common(key, source, arguments, consumed)
        _check_consumed(key, name, arguments, consumed)
        return out | {k: v for k, v in arguments.items() if k not in consumed}

    return translate


def mtl_from_cl(key: str, arguments: Arguments) -> Arguments:
    """``MTLDatasetFromCL(cl_dataset, sampling_strategy, batch_size)`` as ``MTLDataModule``.

    The nested ``cl_dataset`` names an upstream CL dataset class; its tasks are trained at once
    with batches mixed across tasks (upstream's ``sampling_strategy: mixed``).
    """
    arguments = dict(arguments)
    inner = arguments.pop("cl_dataset", None)
    target = inner.get("_target_") if isinstance(inner, dict) else None
    name = str(target).rpartition(".")[2]
    if (
        not isinstance(target, str)
        or not target.startswith("clarena.cl_datasets.")
        or (name not in CL_DATASETS)
    ):
        raise PipelineConfigError(
            f"{key}.cl_dataset: MTLDatasetFromCL needs an upstream CL dataset clarena reads; got "
            f"{target!r}. {CL_OFFER}."
        )
    strategy = arguments.pop("sampling_strategy", "mixed")
    if strategy != "mixed":
        raise _refuse(
            key,
            "sampling_strategy",
            strategy,
            "clarena's MTL batches mix every task's examples (upstream's 'mixed'); set "
            "sampling_strategy: mixed.",
        )
    out = cl_arguments(
        f"{key}.cl_dataset", name, {k: v for k, v in inner.items() if k != "_target_"}
    )
    batch = arguments.pop("batch_size", None)
    if batch is not None:
        out |= _common(key, out["source"], {"batch_size": batch}, set())
    for extra, value in arguments.items():
        raise _refuse(key, extra, value, "MTLDatasetFromCL has no such argument in clarena.")
    return out
