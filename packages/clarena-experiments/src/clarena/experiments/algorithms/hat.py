"""HAT (Serra et al., ICML 2018) and AdaHAT (Wang et al., 2024) as Lightning algorithms.

The mask mechanics live in :mod:`clarena.hat.mechanics`; this module only calls them at the
right points of Lightning's training loop:

- ``training_step``: annealed mask forward, cross-entropy + sparsity regulariser;
- ``on_before_optimizer_step`` (once per optimiser step, after gradient accumulation and
  mixed-precision unscaling): gradient conditioning (hard for HAT, soft for AdaHAT), then
  embedding gradient compensation;
- ``optimizer_step`` (right after the step): clamp the task embedding;
- ``on_train_end``: store the task's binary mask.

HAT anneals the gate scale over the batches of an epoch. With gradient accumulation a "batch" is
one optimiser step: all micro-batches of a step share its scale, so accumulating ``k``
micro-batches of ``n`` examples trains as one batch of ``k n`` examples would.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from clarena.cl import HeadsCIL, HeadsTIL
from clarena.experiments.algorithms.base import (
    CLAlgorithm,
    CLConfigError,
    OptimizerFactory,
    SchedulerFactory,
    check_choice,
    check_number,
    optimizer_weight_decay,
)
from clarena.hat import (
    AGGREGATIONS,
    EMBEDDING_INIT_MODES,
    HATMaskBackbone,
    adahat_condition_gradients,
    annealed_scale,
    check_adahat_optimizer,
    check_optimizer,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    layer_sparsity,
    sparsity_regularization,
)


class HAT(CLAlgorithm):
    """Hard attention to the task: per-task unit masks that protect earlier tasks exactly.

    Task-incremental only (the test stage needs the task's stored mask). Every task starts a
    fresh optimiser, and ``weight_decay > 0`` is refused: decay would move weights whose gradient
    the masks zeroed.

    Args:
        backbone: a HAT-masked backbone (``clarena.backbones.HATMaskMLP``, ``HATMaskResNet18``
            ...).
        heads: ``HeadsTIL``.
        optimizer: partial optimiser (no weight decay).
        lr_scheduler: optional partial learning-rate scheduler.
        s_max: the largest gate scale ``s_max``.
        clamp_threshold: ``cosh`` clamp of the embedding gradient compensation.
        mask_sparsity_reg_factor: weight of the sparsity regulariser in the loss.
        task_embedding_init_mode: initialisation of each new task's embedding (``N01``,
            ``U01``, ``U-10``, ``masked``, ``unmasked``).
        embedding_clamp: the task embedding is clamped to ``[-embedding_clamp, embedding_clamp]``
            after each step.
    """

    supports_cil = False
    drives_mask_method = "hat"

    def __init__(
        self,
        backbone: HATMaskBackbone,
        heads: HeadsTIL | HeadsCIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.75,
        task_embedding_init_mode: str = "N01",
        embedding_clamp: float = 6.0,
    ) -> None:
        name = type(self).__name__
        if not isinstance(backbone, HATMaskBackbone):
            raise CLConfigError(
                f"{name} needs a HAT-masked backbone (clarena.backbones.HATMaskMLP, "
                f"HATMaskResNet18 ...); got {type(backbone).__name__}. Pick backbone=hatmaskmlp "
                f"or another HATMask* config."
            )
        if optimizer_weight_decay(optimizer) > 0:
            raise CLConfigError(
                f"{name} refuses weight_decay={optimizer_weight_decay(optimizer)}: weight decay "
                f"moves the weights whose gradients the masks zeroed, so earlier tasks would be "
                f"forgotten. Set optimizer.weight_decay=0."
            )
        super().__init__(backbone, heads, optimizer, lr_scheduler)
        self.s_max = check_number(name, "s_max", s_max, above=0, why="It scales the mask gates.")
        self.clamp_threshold = check_number(name, "clamp_threshold", clamp_threshold, above=0)
        self.mask_sparsity_reg_factor = check_number(
            name, "mask_sparsity_reg_factor", mask_sparsity_reg_factor, at_least=0
        )
        self.task_embedding_init_mode = check_choice(
            name, "task_embedding_init_mode", task_embedding_init_mode, EMBEDDING_INIT_MODES
        )
        self.embedding_clamp = check_number(name, "embedding_clamp", embedding_clamp, above=0)
        self._batch_idx = 1
        self._num_batches = 1
        self._mask: dict[str, Tensor] | None = None

    @override
    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        is_new = task_id not in self.backbone.processed_task_ids
        super().setup_task_id(task_id, num_classes)
        if is_new:
            self.backbone.initialize_task_embedding(self.task_embedding_init_mode)

    @override
    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        if stage == "train":
            feature, mask, activations = self.backbone(
                input,
                "train",
                s_max=self.s_max,
                batch_idx=self._batch_idx,
                num_batches=self._num_batches,
            )
        elif stage == "validation":
            feature, mask, activations = self.backbone(input, "validation", s_max=self.s_max)
        else:
            feature, mask, activations = self.backbone(input, "test", test_task_id=task_id)
        return feature, {"mask": mask, "activations": activations}

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # HAT anneals the gate over the optimiser steps of an epoch, counting 1..num_steps; the
        # last step may accumulate fewer micro-batches (Lightning steps at the epoch's end).
        accumulate = self.trainer.accumulate_grad_batches
        self._batch_idx = batch_idx // accumulate + 1
        self._num_batches = math.ceil(self.trainer.num_training_batches / accumulate)
        return super().training_step(batch, batch_idx)

    @override
    def regularization(self, extras: dict[str, Any]) -> Tensor | None:
        mask = extras["mask"]
        self._mask = {name: value.detach() for name, value in mask.items()}
        cumulative = self.backbone.cumulative_mask()
        return self.mask_sparsity_reg_factor * sparsity_regularization(mask, cumulative)

    def condition_gradients(self) -> None:
        """HAT's hard gradient conditioning by the cumulative mask."""
        condition_gradients(self.backbone)

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Once per step on the accumulated, unscaled gradient: the factors must not compound.
        self.condition_gradients()
        s = annealed_scale(self.s_max, self._batch_idx, self._num_batches)
        compensate_embedding_gradients(self.backbone, s, self.s_max, self.clamp_threshold)

    @override
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        clamp_task_embedding(self.backbone, self.embedding_clamp)

    @override
    def on_train_end(self) -> None:
        self.backbone.store_mask()

    @override
    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        check_optimizer(optimizer)
        return configured

    @override
    def capacity(self) -> float | None:
        return self.backbone.capacity()


class AdaHAT(HAT):
    """AdaHAT: HAT with soft, adaptive gradient adjustment of parameters used by earlier tasks.

    Trains with SGD only: an adaptive optimiser (Adam, RMSprop, Adagrad ...) divides each update
    by the gradient's running scale, which cancels AdaHAT's soft factor, so it is refused here,
    before training (:func:`clarena.hat.check_adahat_optimizer`).

    Arguments as for :class:`HAT`, plus:

    Args:
        adjustment_intensity: AdaHAT's ``alpha`` (larger: more plasticity on used parameters).
        epsilon: keeps the adjustment rate finite when a layer's sparsity is 0.
        aggregation: how the parameter-wise summative mask combines its output and input units
            (``min``, ``max``, ``mean``).
    """

    def __init__(
        self,
        *args: Any,
        adjustment_intensity: float = 0.1,
        epsilon: float = 0.1,
        aggregation: str = "min",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        optimizer_class = getattr(self.optimizer_factory, "func", self.optimizer_factory)
        if isinstance(optimizer_class, type):
            self._check_optimizer(optimizer_class)
        name = type(self).__name__
        self.adjustment_intensity = check_number(
            name,
            "adjustment_intensity",
            adjustment_intensity,
            above=0,
            why="At 0 or below the adjustment rate of unused parameters is 0/0 or negative.",
        )
        self.epsilon = check_number(
            name, "epsilon", epsilon, above=0, why="It keeps the rate finite at sparsity 0."
        )
        self.aggregation = check_choice(name, "aggregation", aggregation, AGGREGATIONS)

    def _check_optimizer(
        self, optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer
    ) -> None:
        try:
            check_adahat_optimizer(optimizer, type(self).__name__)
        except ValueError as error:
            raise CLConfigError(str(error)) from None

    @override
    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        self._check_optimizer(
            configured["optimizer"] if isinstance(configured, dict) else configured
        )
        return configured

    @override
    def condition_gradients(self) -> None:
        if self._mask is None:
            raise RuntimeError("AdaHAT: no mask from the training step to measure sparsity.")
        with torch.no_grad():
            sparsity = layer_sparsity(self._mask, self.backbone.cumulative_mask())
        adahat_condition_gradients(
            self.backbone,
            sparsity,
            alpha=self.adjustment_intensity,
            epsilon=self.epsilon,
            aggregation=self.aggregation,
        )
