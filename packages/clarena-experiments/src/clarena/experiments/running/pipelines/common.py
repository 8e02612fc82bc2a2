"""Pieces every pipeline shares: output dir, seeding, Trainer, model files, result table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.experiment_config import ExperimentConfig
from clarena.experiments.running.divergence import DivergenceCheck
from clarena.experiments.running.loggers import log_run_config
from clarena.experiments.runs import model_file


def output_dir(config: ExperimentConfig) -> Path:
    """The run's output dir: Hydra's job output dir when run by Hydra, else ``output_dir``."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    config.require("output_dir")
    return Path(str(config.output_dir))


def seed(config: ExperimentConfig) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) from ``global_seed``.

    Also applies ``num_threads`` (torch intra-op threads) when set.
    """
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    seed_everything(config.global_seed, workers=True, verbose=False)


def request_compile(config: ExperimentConfig, algorithm: Any) -> None:
    """With ``compile: true``, have ``algorithm`` compile its backbone in its first fit or test."""
    if config.compile:
        algorithm.compile_backbone(fullgraph=True)


def choose_batch_norm_statistics(config: ExperimentConfig, algorithm: Any) -> str:
    """Apply ``batch_norm_statistics`` (``recompute``, the default, or ``running``) to
    ``algorithm``; returns the value, for summary.json.

    Raises:
        PipelineConfigError: another value.
    """
    algorithm.use_batch_norm_statistics(config.batch_norm_statistics)
    return config.batch_norm_statistics


def make_trainer(config: ExperimentConfig, run_dir: Path, version: str | None) -> Trainer:
    """Instantiate the ``trainer`` component with the configured loggers and callbacks.

    :class:`~clarena.experiments.divergence.DivergenceCheck` is always added: a nan or infinite
    training loss stops the run.

    Args:
        config: the experiment config (``trainer``, ``lightning_loggers``, ``callbacks``).
        run_dir: the run's output dir; loggers write under it.
        version: log sub-folder (e.g. ``task_3``) so every fit gets its own log.
    """
    components = config.components
    loggers = [
        instantiate(logger_cfg, save_dir=str(run_dir), version=version)
        for logger_cfg in components.lightning_loggers.values()
    ]
    log_run_config(loggers, config.record)
    callbacks = [instantiate(callback_cfg) for callback_cfg in components.callbacks.values()]
    callbacks.append(DivergenceCheck())
    return instantiate(
        components.trainer,
        logger=loggers or False,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
    )


def log_every_epoch(trainer: Trainer, train_batches: int) -> None:
    """Lower ``trainer.log_every_n_steps`` to the training batches of an epoch, if it exceeds them.

    The trainer configs log every 5 steps; a task with fewer batches per epoch (the DIL
    example's split digits: 4 batches of 64) would log in some epochs only, and Lightning warns
    about it. Counts ``trainer.limit_train_batches`` as Lightning does. Results do not change:
    only how often the loggers record.

    Args:
        trainer: the trainer about to fit.
        train_batches: ``len()`` of the training loader of this fit.
    """
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(train_batches, limit)
    else:
        batches = int(train_batches * (1.0 if limit is None else limit))
    if 0 < batches < trainer.log_every_n_steps:
        trainer.log_every_n_steps = batches


def save_checkpoint(path: Path, cfg: DictConfig, state_dict: dict[str, Any], **extra: Any) -> None:
    """Save a model file: the resolved config, the state dict, ``extra`` bookkeeping, a checksum.

    Written atomically (see :func:`clarena.experiments.model_file.write`).
    """
    model_file.write(
        path,
        {"config": OmegaConf.to_container(cfg, resolve=True), "state_dict": state_dict, **extra},
    )


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a file written by :func:`save_checkpoint`, verifying its checksum.

    Only its data is loaded; build objects from its config with
    :func:`clarena.experiments.safe_config.checked_config`.

    Raises:
        PipelineConfigError: no file at ``path``.
        ModelFileError: the file is empty, truncated, corrupt or not a clarena model file.
    """
    path = Path(path)
    if not path.is_file():
        raise PipelineConfigError(
            f"model_path '{path}' is not a file. Point model_path at the saved_model.pt of a "
            f"training run (run it with save_model=true)."
        )
    return model_file.read(path, f"model_path '{path}'")


#: Training pipeline -> (what its model file holds, the shipped experiment evaluating it,
#: the dataset key of its config).
MODEL_KINDS: dict[str, tuple[str, str, str]] = {
    "CL_MAIN_EXPR": ("a CL model", "example_clmain_eval", "cl_dataset"),
    "MTL_EXPR": ("an MTL model", "example_mtl_eval", "mtl_dataset"),
    "STL_EXPR": ("an STL model", "example_stl_eval", "stl_dataset"),
}


def check_model_kind(saved: Any, expected: str, model_path: str | Path) -> None:
    """Refuse a model file saved by another kind of training than the evaluation expects.

    Args:
        saved: the config stored in the model file (its ``pipeline``, else its dataset key, says
            which training saved it).
        expected: the training pipeline whose models this evaluation reads, e.g.
            ``"CL_MAIN_EXPR"``.
        model_path: the file, for the message.

    Raises:
        PipelineConfigError: naming what the file holds and the experiment that evaluates it.
    """
    if not isinstance(saved, Mapping):
        return
    kind = saved.get("pipeline")
    if kind not in MODEL_KINDS:
        kind = next((k for k, (_, _, key) in MODEL_KINDS.items() if key in saved), None)
    if kind is None or kind == expected:
        return
    holds, experiment, _ = MODEL_KINDS[kind]
    wanted = MODEL_KINDS[expected][0].split(" ", 1)[1]
    raise PipelineConfigError(
        f"model_path '{model_path}' holds {holds} (saved by {kind}), but this experiment "
        f"evaluates {wanted}s. Evaluate it with `clarena experiment={experiment} "
        f"model_path={model_path}`."
    )


def print_table(title: str, header: list[str], row: list[str], lines: Sequence[str] = ()) -> None:
    """Print a one-row result table, then each of ``lines`` (e.g. the output path) whole.

    ``lines`` are never wrapped, so a path stays one piece to copy even when it is wider than
    the terminal.
    """
    console = Console()
    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right")
    table.add_row(*row)
    console.print(table)
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)
