"""The per-task learning-rate schedule of the HAT and WSN papers, as a Lightning callback.

Both papers' code (joansj/hat ``src/approaches/hat.py``, ihaeyong/WSN ``main_wsn_*.py``) trains
each task the same way: validate after every epoch; on an improvement of the validation loss keep
a copy of the model and reset the patience; otherwise count one epoch down, and when the patience
is used up divide the learning rate by a factor, stopping the task once it falls below a floor;
at the task's end load the best epoch's copy back. :class:`PlateauSchedule` does exactly that in
Lightning's loop. A CL run fits one ``Trainer`` with fresh callbacks and a fresh optimiser per
task, so the learning rate and the patience start again with every task, as in the papers.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from typing_extensions import override

from clarena.experiments.errors import PipelineConfigError

log = logging.getLogger(__name__)


class PlateauSchedule(Callback):
    """Divide the lr on a validation-loss plateau, stop at an lr floor, restore the best weights.

    After each validation of a fit (one task of a CL run) the monitored loss is compared with the
    best so far. An improvement (strictly lower) snapshots the whole ``state_dict`` of the module
    and sets the remaining patience back to ``patience``; anything else (equal, higher, NaN) counts
    it down by one. When it reaches 0, every optimiser parameter group's lr is divided by
    ``lr_factor``; if the lr (of the first group) is then below ``lr_min`` the task stops after
    this epoch, otherwise the patience starts again. ``trainer.max_epochs`` caps the task. At the
    end of the task (``on_train_end``) the best epoch's snapshot is loaded back.

    The snapshot is the module's whole state: weights, heads, batch-norm statistics, a HAT task
    embedding, WSN scores, FG-AdaHAT's importance sums. Callbacks' ``on_train_end`` runs before
    the module's, where HAT and WSN store the task's mask and FG-AdaHAT closes its importance,
    so those are computed from the restored state: weights, masks and per-task norms come from
    one epoch. Parameters that protect earlier tasks never change during a task, so their values
    in the snapshot equal the current ones, bit for bit.

    The state (best loss and epoch, remaining patience, lr, snapshot) is in :meth:`state_dict`,
    so a Lightning checkpoint taken within a task resumes the schedule where it was.

    Args:
        monitor: the logged metric to minimise; ``{task_id}`` is replaced by the module's
            ``task_id`` (CL algorithms log ``task_<N>/val/loss``; MTL and STL log ``val/loss``).
        patience: epochs without improvement before the lr is divided (HAT: 5, WSN: 6).
        lr_factor: the divisor of the lr (HAT: 3, WSN: 2); greater than 1.
        lr_min: the floor: the task stops once the lr falls below it (HAT: 1e-4, WSN: 1e-6).
        restore_best: load the best epoch's state at the task's end.
    """

    def __init__(
        self,
        monitor: str = "task_{task_id}/val/loss",
        patience: int = 5,
        lr_factor: float = 3.0,
        lr_min: float = 1e-4,
        restore_best: bool = True,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise PipelineConfigError(
                f"PlateauSchedule: patience must be a whole number of epochs >= 1; got "
                f"{patience!r}. Set callbacks.plateau_schedule.patience (HAT: 5, WSN: 6)."
            )
        if isinstance(lr_factor, bool) or not isinstance(lr_factor, int | float) or lr_factor <= 1:
            raise PipelineConfigError(
                f"PlateauSchedule: lr_factor divides the lr and must be a number > 1; got "
                f"{lr_factor!r}. Set callbacks.plateau_schedule.lr_factor (HAT: 3, WSN: 2)."
            )
        if isinstance(lr_min, bool) or not isinstance(lr_min, int | float) or not lr_min >= 0:
            raise PipelineConfigError(
                f"PlateauSchedule: lr_min must be a number >= 0; got {lr_min!r}. Set "
                f"callbacks.plateau_schedule.lr_min (HAT: 1e-4, WSN: 1e-6)."
            )
        self.monitor = monitor
        self.patience = patience
        self.lr_factor = float(lr_factor)
        self.lr_min = float(lr_min)
        self.restore_best = restore_best
        self._reset()

    def _reset(self) -> None:
        #: Lowest monitored value so far, and the epoch (0-based) it was reached in.
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        #: Epochs without improvement left before the lr is divided.
        self.wait = self.patience
        #: The current lr of the first parameter group (``None`` before the fit starts).
        self.lr: float | None = None
        #: Epochs (0-based) after whose validation the lr was divided.
        self.reductions: list[int] = []
        #: The epoch the task stopped at the floor after (``None``: it did not).
        self.stopped_epoch: int | None = None
        #: The epoch whose state was loaded back at the end (``None``: none was).
        self.restored_epoch: int | None = None
        self._best_state: dict[str, Any] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Every fit starts afresh; a checkpoint's state, if any, is loaded after this.
        if stage == TrainerFn.FITTING:
            self._reset()

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            raise PipelineConfigError(
                "PlateauSchedule sets the learning rate itself, but an lr_scheduler is configured "
                "too. Use lr_scheduler=none with the plateau schedule."
            )
        if self.lr is None:
            self.lr = float(trainer.optimizers[0].param_groups[0]["lr"])

    def monitored_key(self, pl_module: LightningModule) -> str:
        """The metric name this fit monitors (``monitor`` with ``{task_id}`` filled in)."""
        return self.monitor.format(task_id=getattr(pl_module, "task_id", None))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        key = self.monitored_key(pl_module)
        value = trainer.callback_metrics.get(key)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics)) or "nothing"
            raise PipelineConfigError(
                f"PlateauSchedule monitors '{key}', which this fit did not log (it logged "
                f"{logged}). Set callbacks.plateau_schedule.monitor to a logged validation loss "
                f"(CL: task_{{task_id}}/val/loss; MTL/STL: val/loss) and keep a validation set "
                f"(val_fraction > 0)."
            )
        self.step(float(value), trainer, pl_module)

    def step(self, loss: float, trainer: Trainer, pl_module: LightningModule) -> None:
        """Apply the schedule to one epoch's validation ``loss``."""
        epoch = trainer.current_epoch
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_epoch = epoch
            self.wait = self.patience
            if self.restore_best:
                self._best_state = _snapshot(pl_module.state_dict())
            return
        self.wait -= 1
        if self.wait > 0:
            return
        assert self.lr is not None
        self.lr /= self.lr_factor
        self.reductions.append(epoch)
        if self.lr < self.lr_min:
            self.stopped_epoch = epoch
            trainer.should_stop = True
            log.info("epoch %d: lr %.3g below %.3g, task stopped", epoch, self.lr, self.lr_min)
            return
        self.wait = self.patience
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] /= self.lr_factor
        log.info(
            "epoch %d: no improvement for %d epochs, lr now %.3g", epoch, self.patience, self.lr
        )

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._best_state is None:
            return
        pl_module.load_state_dict(self._best_state)
        self.restored_epoch = self.best_epoch
        log.info(
            "restored the state of epoch %s (%s %.6g)",
            self.best_epoch,
            self.monitored_key(pl_module),
            self.best_loss,
        )
        self._best_state = None

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "wait": self.wait,
            "lr": self.lr,
            "reductions": list(self.reductions),
            "stopped_epoch": self.stopped_epoch,
            "best_state": self._best_state,
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_loss = float(state_dict["best_loss"])
        self.best_epoch = state_dict["best_epoch"]
        self.wait = int(state_dict["wait"])
        self.lr = state_dict["lr"]
        self.reductions = list(state_dict["reductions"])
        self.stopped_epoch = state_dict["stopped_epoch"]
        self._best_state = state_dict["best_state"]


def _snapshot(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``state_dict`` that later training cannot change: tensors cloned, the extra
    state (task bookkeeping: plain containers) deep-copied."""
    return {
        name: value.detach().clone() if isinstance(value, Tensor) else copy.deepcopy(value)
        for name, value in state_dict.items()
    }
