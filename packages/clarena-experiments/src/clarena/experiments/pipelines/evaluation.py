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

The run prints which data it evaluates on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from clarena.experiments.errors import PipelineConfigError

#: Config sections holding a dataset (one of them per pipeline).
DATASET_SECTIONS: tuple[str, ...] = ("cl_dataset", "mtl_dataset", "stl_dataset")

#: ``data_root`` when the user's config has none (the shipped dataset configs' default root).
DEFAULT_DATA_ROOT = "data"

log = logging.getLogger(__name__)


def evaluation_config(saved: DictConfig, cfg: DictConfig) -> DictConfig:
    """The model file's config ``saved`` with the user's data location and resources.

    Args:
        saved: the config read from the model file (already checked by
            :func:`~clarena.experiments.safe_config.checked_config`).
        cfg: the user's evaluation config (``data_root``, ``num_workers``, ``num_threads``).

    Returns:
        A copy of ``saved`` whose dataset ``root`` and ``num_workers``, ``num_threads`` and
        backbone ``pretrained_weights`` (``None``) are the user's.

    Raises:
        PipelineConfigError: ``num_workers`` is not a count >= 0, or ``data_root`` not a path.
    """
    data_root = cfg.get("data_root", DEFAULT_DATA_ROOT)
    if data_root is not None and not isinstance(data_root, str):
        raise PipelineConfigError(
            f"data_root must be a directory path; got {data_root!r}. Set data_root=/path/to/data."
        )
    num_workers = cfg.get("num_workers", 0)
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise PipelineConfigError(
            f"num_workers must be a number of data loader processes >= 0; got {num_workers!r}. "
            f"Set num_workers=0 to load in the main process."
        )
    content: dict[str, Any] = OmegaConf.to_container(saved, resolve=False)  # type: ignore[assignment]
    for section in DATASET_SECTIONS:
        if isinstance(content.get(section), dict):
            content[section]["root"] = data_root
            content[section]["num_workers"] = num_workers
    backbone = content.get("backbone")
    if isinstance(backbone, dict) and "pretrained_weights" in backbone:
        backbone["pretrained_weights"] = None
    content["num_threads"] = cfg.get("num_threads")
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
    sequence = dataset.get("sequence", "permuted")
    sources = dataset.get("sources") if sequence == "multi_source" else None
    names = list(sources) if sources else [dataset.get("source", "digits")]
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
