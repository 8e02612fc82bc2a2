"""Stopping a run whose training loss is no longer finite.

With a learning rate far too large (``optimizer.lr=1e30``) the loss is nan or infinite after
the first steps; the weights are then garbage and every later result is at chance. The pipelines
attach :class:`DivergenceCheck` to every trainer: it stops the fit at the first non-finite loss,
before that loss reaches the weights, with one line naming where it happened and the learning
rate. The pipeline then writes no model file, ``summary.json`` or new ``acc.csv`` row.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from clarena.experiments.errors import TrainingDivergedError

log = logging.getLogger(__name__)


class DivergenceCheck(Callback):
    """Raise :class:`TrainingDivergedError` at the first nan or infinite training loss.

    Checked in ``on_before_backward``, so the bad loss produces no gradient step. Under DDP the
    ranks agree (one all-reduce of a flag per step), so every rank stops at the same step. The
    message goes to the run's log as well as to the console.
    """

    @override
    def on_before_backward(
        self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor
    ) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(not finite, all=False):
            return
        message = divergence_message(trainer, pl_module, float(loss.detach().float().sum()))
        log.error("%s", message)
        raise TrainingDivergedError(message)


def divergence_message(trainer: Trainer, pl_module: LightningModule, loss: float) -> str:
    """One line: the loss value, task, epoch and step, the learning rate and the fix."""
    task = _task(trainer, pl_module)
    lr = _learning_rate(trainer)
    value = "nan or infinite on another rank" if math.isfinite(loss) else str(loss)
    where = f"{task}, epoch {trainer.current_epoch}, step {trainer.global_step}"
    advice = (
        f"the learning rate is {lr:g}: lower it (e.g. optimizer.lr={lr / 100:g})"
        if lr is not None
        else "lower the learning rate (optimizer.lr)"
    )
    return (
        f"The training loss is {value} at {where}: the training diverged, so the run stopped "
        f"before writing its model and summary. {advice[0].upper()}{advice[1:]}, or check the data for "
        f"nan or infinite values."
    )


def _task(trainer: Trainer, pl_module: LightningModule) -> str:
    task_id = getattr(pl_module, "task_id", None)
    if task_id is None:
        task_id = getattr(trainer.datamodule, "task_id", None)
    if isinstance(task_id, int):
        return f"task {task_id}"
    return "the joint training of all tasks"


def _learning_rate(trainer: Trainer) -> float | None:
    optimizers = trainer.optimizers
    if not optimizers or not optimizers[0].param_groups:
        return None
    return float(optimizers[0].param_groups[0]["lr"])
