"""Batch-norm statistics for evaluation: the running averages, or recomputed with the weights.

Batch norm normalises with the batch's statistics in training and with running averages
(momentum 0.1) in evaluation. A few dozen optimiser steps from scratch move the weights faster
than those averages follow, so right after a short task the evaluation statistics describe
earlier weights: a ResNet-18 that fits split digits task 1 in 5 epochs (25 steps) at train
accuracy 1.0 then predicts one class at test (0.55). Recomputing the statistics with the final
weights, as the population mean and variance over the training data, removes that lag.

The HAT and WSN papers evaluate with the running averages, as PyTorch keeps them. The config
key ``batch_norm_statistics`` chooses (:data:`BATCH_NORM_STATISTICS`): ``recompute`` (clarena's
default, needed by short tasks) or ``running`` (the papers' way: the statistics are what training
left). ``results/summary.json`` records the choice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import move_data_to_device
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader
from typing_extensions import override

from clarena.experiments.errors import PipelineConfigError

#: Values of the config key ``batch_norm_statistics``: recompute the statistics over the training
#: set before each validation, or keep the running averages of training.
BATCH_NORM_STATISTICS: tuple[str, ...] = ("recompute", "running")


def has_batch_norm(module: nn.Module) -> bool:
    """Whether ``module`` holds a batch norm that tracks running statistics."""
    return any(
        isinstance(child, _BatchNorm) and child.track_running_stats for child in module.modules()
    )


@torch.no_grad()
def recompute_batch_norm_statistics(
    module: nn.Module, batches: Iterable[Any], forward: Callable[[Any], object]
) -> int:
    """Set the running statistics of the batch norms that ``forward`` uses to their averages
    over ``batches``.

    Only the batch norms ``forward`` actually runs are reset and recomputed (cumulative average,
    ``momentum=None``), so the per-task batch norms of other tasks keep their statistics. No
    parameter changes and no gradient is computed; each module's training mode and momentum
    are restored afterwards.

    Args:
        module: the model whose batch norms are recomputed.
        batches: batches as ``forward`` takes them (each of more than one sample).
        forward: runs the model on one batch as it is evaluated (stage, task, masks).

    Returns:
        The number of batch norms recomputed.
    """
    norms = [
        child
        for child in module.modules()
        if isinstance(child, _BatchNorm) and child.track_running_stats
    ]
    modes = {child: child.training for child in module.modules()}
    momenta = {norm: norm.momentum for norm in norms}
    used: set[_BatchNorm] = set()

    def reset_on_first_use(norm: nn.Module, _: tuple[Tensor, ...]) -> None:
        if norm not in used:
            used.add(norm)
            norm.reset_running_stats()
            norm.momentum = None

    handles = [norm.register_forward_pre_hook(reset_on_first_use) for norm in norms]
    try:
        module.eval()
        for norm in norms:
            norm.train()
        for batch in batches:
            forward(batch)
    finally:
        for handle in handles:
            handle.remove()
        for norm, momentum in momenta.items():
            norm.momentum = momentum
        for child, training in modes.items():
            child.training = training
    return len(used)


class BatchNormStatistics(LightningModule):
    """Keeps a fitting model's batch-norm statistics in step with its weights.

    Before each validation during ``fit``, and at the end of a training epoch not followed by
    a validation, the running statistics are recomputed over the training set (see
    :func:`recompute_batch_norm_statistics`) by :meth:`batch_norm_forward`. Every process reads
    the whole training set in order, so DDP ranks get equal statistics and no random number is
    drawn. Models without batch norm skip it. :meth:`use_batch_norm_statistics` with
    ``"running"`` turns the recomputation off: evaluation uses the running averages.
    """

    _statistics_step: int | None = None
    #: How evaluation statistics are obtained: one of :data:`BATCH_NORM_STATISTICS`.
    batch_norm_statistics: str = "recompute"

    def use_batch_norm_statistics(self, mode: str) -> None:
        """Choose ``recompute`` (the default) or ``running`` batch-norm statistics for evaluation.

        Raises:
            PipelineConfigError: ``mode`` is neither.
        """
        if mode not in BATCH_NORM_STATISTICS:
            raise PipelineConfigError(
                f"batch_norm_statistics must be one of {', '.join(BATCH_NORM_STATISTICS)}; got "
                f"{mode!r}. Set batch_norm_statistics=recompute (recompute them over the training "
                f"set before each validation) or batch_norm_statistics=running (the running "
                f"averages, as the HAT and WSN papers evaluate)."
            )
        self.batch_norm_statistics = mode

    def batch_norm_forward(self, batch: Any) -> None:
        """Run the model on a training batch as it is evaluated (override per algorithm)."""
        raise NotImplementedError

    @override
    def on_train_start(self) -> None:
        # Each fit (one per task) counts its steps from 0 again.
        self._statistics_step = None

    @override
    def on_validation_start(self) -> None:
        if self.trainer.state.fn == TrainerFn.FITTING:
            self._recompute_statistics()

    @override
    def on_train_epoch_end(self) -> None:
        if self._statistics_step != self.trainer.global_step:
            self._recompute_statistics()

    def _recompute_statistics(self) -> None:
        self._statistics_step = self.trainer.global_step
        if self.batch_norm_statistics == "running":
            return
        loader = self.trainer.train_dataloader
        if not isinstance(loader, DataLoader) or not has_batch_norm(self):
            return
        # The evaluation conversion (uint8 -> normalised float, no augmentation): statistics for
        # the images the model is evaluated on, and no random numbers drawn.
        datamodule = getattr(self.trainer, "datamodule", None)
        collate = getattr(datamodule, "eval_transform", None) or loader.collate_fn
        ordered = DataLoader(
            loader.dataset, batch_size=loader.batch_size, shuffle=False, collate_fn=collate
        )
        # As many batches as the fit reads (limit_train_batches), from every rank together.
        batches = self.trainer.num_training_batches
        count = None if math.isinf(batches) else int(batches) * self.trainer.world_size
        # Eager even when the backbone is compiled: the pre-hooks that reset each batch norm are
        # added after compilation (dynamo does not guard on hooks, so a compiled graph could
        # skip them), and the cumulative average (momentum None) divides by a count read from
        # a tensor, which a fullgraph compile refuses (GuardOnDataDependentSymNode).
        with (
            self.trainer.precision_plugin.forward_context(),
            torch.compiler.set_stance("force_eager"),
        ):
            recompute_batch_norm_statistics(
                self, self._device_batches(islice(ordered, count)), self.batch_norm_forward
            )

    def _device_batches(self, batches: Iterable[Any]) -> Iterator[Any]:
        for batch in batches:
            if len(batch[0]) > 1:
                # As the training loop converts them (float64 inputs under 64-true).
                batch = self.trainer.precision_plugin.convert_input(batch)
                yield move_data_to_device(batch, self.device)
