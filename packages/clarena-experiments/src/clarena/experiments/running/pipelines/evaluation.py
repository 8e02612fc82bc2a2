"""What the evaluation of a saved model takes from the model file, and what from the user.

The file says what was trained: the dataset (sequence, sources, splits, normalisation), the
backbone, the heads and the algorithm. Where the data lies and what the process may use are the
user's, from the command line and the eval experiment's defaults, never the file's:

- ``data_root``: the dataset's ``root`` (a file's root could point anywhere, ``~`` or a relative
  path included, and a dataset root is where readers open files);
- ``num_workers``: the dataset's loader processes;
- ``num_threads``: torch's intra-op threads;
- ``pretrained_weights`` is dropped: the file's state dict replaces every weight, so nothing is
  fetched from a model hub or read from a path the file names.

The run prints which data it evaluates on, and building the model from the file's config may
allocate no more than about its weights (:func:`weights_budget`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.overrides import TorchFunctionMode

from clarena.experiments.errors import ModelFileError
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running.data.datamodules import dataset_identity
from clarena.experiments.running.pipelines.common import check_model_kind, load_checkpoint, seed
from clarena.experiments.runs.safe_config import checked_config
from clarena.experiments.upstream.adapter import adapt_config

#: Config sections holding a dataset (one of them per pipeline).
DATASET_SECTIONS: tuple[str, ...] = ("cl_dataset", "mtl_dataset", "stl_dataset")

log = logging.getLogger(__name__)


def open_model_file(
    config: ExperimentConfig, pipeline: str
) -> tuple[dict[str, Any], ExperimentConfig]:
    """Load ``model_path`` for an evaluation of a ``pipeline`` model; seed from its config.

    The file's checksum is verified, its kind must be ``pipeline``'s, its config passes the
    allowlist (unless ``trust_model_file=true``), upstream CLArena's names in it become clarena's,
    and the data location and resources are the user's (:func:`evaluation_config`). The run
    prints which data it evaluates on.

    Returns:
        The loaded checkpoint and the config to build the model and its data from (read as
        saved: :meth:`ExperimentConfig.parse` with ``strict=False``).
    """
    model_path = str(config.model_path)
    checkpoint = load_checkpoint(model_path)
    check_model_kind(checkpoint["config"], pipeline, model_path)
    source = f"model_path '{model_path}'"
    saved = adapt_config(
        checked_config(checkpoint["config"], source, trust=config.trust_model_file)
    )
    saved = evaluation_config(saved, config)
    announce_data(saved, model_path)
    model = ExperimentConfig.parse(saved, strict=False)
    seed(model)
    return checkpoint, model


def evaluation_config(saved: DictConfig, config: ExperimentConfig) -> DictConfig:
    """The model file's config ``saved`` with the user's data location and resources.

    Args:
        saved: the config read from the model file (already checked by
            :func:`~clarena.experiments.safe_config.checked_config`).
        config: the user's evaluation config (``data_root``, ``num_workers``, ``num_threads``;
            checked when it was parsed).

    Returns:
        A copy of ``saved`` whose dataset ``root`` and ``num_workers``, ``num_threads`` and
        backbone ``pretrained_weights`` (``None``) are the user's.
    """
    content: dict[str, Any] = OmegaConf.to_container(saved, resolve=False)  # type: ignore[assignment]
    for section in DATASET_SECTIONS:
        if isinstance(content.get(section), dict):
            content[section]["root"] = config.data_root
            content[section]["num_workers"] = config.num_workers
    backbone = content.get("backbone")
    if isinstance(backbone, dict) and "pretrained_weights" in backbone:
        backbone["pretrained_weights"] = None
    content["num_threads"] = config.num_threads
    return OmegaConf.create(content)


def announce_data(config: DictConfig, model_path: str) -> None:
    """Print (and log) which data the evaluation of ``model_path`` reads."""
    for section in DATASET_SECTIONS:
        dataset = config.get(section)
        if dataset is not None:
            line = f"Evaluating {model_path} on {section}: {describe_dataset(dataset)}"
            print(line)
            log.info(line)


def describe_dataset(dataset: DictConfig) -> str:
    """``permuted mnist read from data_root '/abs/data'`` (or the bundled digits, no files)."""
    sequence, names = dataset_identity(dataset)
    what = f"{sequence} {'+'.join(str(name) for name in names)}"
    if all(name == "digits" for name in names):
        return f"{what} (scikit-learn's bundled digits; no files read)"
    root = dataset.get("root")
    where = (
        "no data_root given"
        if root is None
        else f"data_root '{Path(root).expanduser().absolute()}'"
    )
    return f"{what} read from {where} (set data_root=... to change it)"


#: Factory functions whose first argument(s) give the shape of the tensor they allocate.
_FACTORIES = frozenset(
    {"empty", "zeros", "ones", "full", "rand", "randn", "empty_strided", "empty_like"}
)
_NEW_FACTORIES = frozenset({"new_empty", "new_zeros", "new_ones", "new_full"})

#: Allowance beyond twice the file's weights for what building allocates besides them.
_BUDGET_SLACK_BYTES = 64 << 20


class _AllocationBudget(TorchFunctionMode):
    """Refuse a tensor allocation once building has allocated more than ``limit`` bytes."""

    def __init__(self, limit: int, source: str) -> None:
        super().__init__()
        self.limit, self.source, self.used = limit, source, 0

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _FACTORIES or name in _NEW_FACTORIES:
            shape = _shape(args[1:] if name in _NEW_FACTORIES else args, kwargs)
            if shape is not None:
                dtype = kwargs.get("dtype") or torch.get_default_dtype()
                self.used += math.prod(shape) * dtype.itemsize
                if self.used > self.limit:
                    raise ModelFileError(
                        f"{self.source}: building the model its config describes allocates more "
                        f"than {self.limit} bytes (torch.{name} of shape {tuple(shape)}), far more "
                        f"than the file's weights; its config (layer sizes, class counts) does "
                        f"not match its weights. Nothing was built."
                    )
        return func(*args, **kwargs)


def _shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[int] | None:
    size = kwargs.get("size", args[0] if args else None)
    if isinstance(size, torch.Tensor):  # empty_like
        return list(size.shape)
    if isinstance(size, int):
        size = [arg for arg in args if isinstance(arg, int)]
    if isinstance(size, list | tuple | torch.Size) and all(isinstance(s, int) for s in size):
        return [int(s) for s in size]
    return None


@contextlib.contextmanager
def weights_budget(checkpoint: Mapping[str, Any], source: str) -> Iterator[None]:
    """Bound what building a model from ``checkpoint``'s config may allocate.

    A model built from a file's config holds about as much as the file's weights; a config whose
    ``hidden_dims`` or class counts claim 40 GB of parameters is refused at the first allocation
    past twice the file's tensor bytes plus 64 MiB, before it is made.

    Raises:
        ModelFileError: building would allocate beyond that bound.
    """
    with _AllocationBudget(2 * _tensor_bytes(checkpoint) + _BUDGET_SLACK_BYTES, source):
        yield


def _tensor_bytes(content: Any) -> int:
    """Bytes of the distinct tensor storages in ``content`` (nested containers walked)."""
    storages: dict[int, int] = {}
    stack = [content]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
