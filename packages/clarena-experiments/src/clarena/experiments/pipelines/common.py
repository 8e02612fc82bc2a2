"""Pieces every pipeline shares: output dir, seeding, Trainer, model files, result table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import Trainer, seed_everything
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from clarena.experiments import model_file
from clarena.experiments.errors import PipelineConfigError
from clarena.experiments.loggers import log_run_config


def require(cfg: DictConfig, *keys: str) -> None:
    """Raise :class:`PipelineConfigError` naming every key of ``keys`` missing from ``cfg``."""
    missing = [key for key in keys if OmegaConf.select(cfg, key, default=None) is None]
    if missing:
        raise PipelineConfigError(
            f"Pipeline {cfg.get('pipeline')!r} needs the config keys {', '.join(missing)}; add them "
            f"to the experiment config or pass them as overrides (e.g. {missing[0]}=...)."
        )


def output_dir(cfg: DictConfig) -> Path:
    """The run's output dir: Hydra's job output dir when run by Hydra, else ``cfg.output_dir``."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    require(cfg, "output_dir")
    return Path(cfg.output_dir)


def seed(cfg: DictConfig) -> None:
    """Seed Python, NumPy and torch (and dataloader workers) from ``global_seed``.

    Also applies ``num_threads`` (torch intra-op threads) when set.
    """
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    seed_everything(int(cfg.get("global_seed", 0)), workers=True, verbose=False)


def request_compile(cfg: DictConfig, algorithm: Any) -> None:
    """With ``compile: true``, have ``algorithm`` compile its backbone in its first fit or test."""
    if cfg.get("compile", False):
        algorithm.compile_backbone(fullgraph=True)


def choose_batch_norm_statistics(cfg: DictConfig, algorithm: Any) -> str:
    """Apply ``batch_norm_statistics`` (``recompute``, the default, or ``running``) to
    ``algorithm``; returns the value, for summary.json.

    Raises:
        PipelineConfigError: another value.
    """
    mode = str(cfg.get("batch_norm_statistics") or "recompute")
    algorithm.use_batch_norm_statistics(mode)
    return mode


def make_trainer(cfg: DictConfig, run_dir: Path, version: str | None) -> Trainer:
    """Instantiate ``cfg.trainer`` with the configured loggers and callbacks.

    Args:
        cfg: the experiment config (``trainer``, optional ``lightning_loggers``, ``callbacks``).
        run_dir: the run's output dir; loggers write under it.
        version: log sub-folder (e.g. ``task_3``) so every fit gets its own log.
    """
    loggers = []
    for logger_cfg in (cfg.get("lightning_loggers") or {}).values():
        if logger_cfg is not None:
            loggers.append(instantiate(logger_cfg, save_dir=str(run_dir), version=version))
    log_run_config(loggers, cfg)
    callbacks = [
        instantiate(callback_cfg)
        for callback_cfg in (cfg.get("callbacks") or {}).values()
        if callback_cfg is not None
    ]
    return instantiate(
        cfg.trainer, logger=loggers or False, callbacks=callbacks, default_root_dir=str(run_dir)
    )


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
