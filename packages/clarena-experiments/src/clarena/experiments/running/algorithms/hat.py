"""HAT (Serra et al., ICML 2018) and AdaHAT (Wang et al., 2024) as Lightning algorithms.

The mask mechanics live in :mod:`clarena.hat.mechanics`; this module only calls them at the
right points of Lightning's training loop:

- ``training_step``: annealed mask forward, cross-entropy + sparsity regulariser;
- ``on_before_optimizer_step`` (once per optimiser step, after gradient accumulation and
  mixed-precision unscaling): gradient conditioning (hard for HAT, soft for AdaHAT), then
  embedding gradient compensation;
- ``optimizer_step`` (right after the step): clamp the task embedding; with ``protection=update``
  (the default) the step itself is wrapped by :class:`clarena.cl.UpdateSpaceProtection`
  (:mod:`clarena.experiments.algorithms.protection`);
- ``on_train_end``: store the task's binary mask.

HAT anneals the gate scale over the batches of an epoch. The algorithm computes the scale once per
optimiser step (:attr:`HAT.step_scale`) and passes it to the backbone's forward (``scale=``), to
the embedding compensation and to FG-AdaHAT's attribution. With gradient accumulation a "batch"
is one optimiser step: all micro-batches of a step share its scale, so accumulating ``k``
micro-batches of ``n`` examples trains as one batch of ``k n`` examples would.

The backbone is any CL backbone with the ``hat`` mask method attached (``HATMaskMLP`` ...);
everything the algorithm needs from the masks goes through that method (:attr:`HAT.hat`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from clarena.backbones import BackboneOutput
from clarena.cl import CLBackbone, HeadsCIL, HeadsTIL
from clarena.experiments.running.algorithms.base import (
    CLConfigError,
    OptimizerFactory,
    SchedulerFactory,
    check_choice,
    check_number,
)
from clarena.experiments.running.algorithms.protection import (
    ProtectedAlgorithm,
    checked_protection,
)
from clarena.hat import (
    AGGREGATIONS,
    EMBEDDING_INIT_MODES,
    adahat_condition_gradients,
    annealed_scale,
    check_adahat_optimizer,
    clamp_task_embedding,
    compensate_embedding_gradients,
    layer_sparsity,
    update_parameters,
)
from clarena.hat import HAT as HATMethod
from clarena.hat.protection import adahat_update_factors


class HAT(ProtectedAlgorithm):
    """Hard attention to the task: per-task unit masks that protect earlier tasks exactly.

    Task-incremental only (the test stage needs the task's stored mask). Every task starts a
    fresh optimiser. With ``protection='update'`` (the default) the parameters earlier tasks use
    end every step bit-identical under any optimiser, weight decay included; with
    ``protection='gradient'`` (the paper's conditioning only) ``weight_decay > 0`` is refused:
    decay would move weights whose gradient the masks zeroed.

    Args:
        backbone: a CL backbone with HAT attached (``clarena.backbones.HATMaskMLP``,
            ``HATMaskResNet18`` ..., or ``CLMLP(...).attach(clarena.hat.HAT())``).
        heads: ``HeadsTIL``.
        optimizer: partial optimiser (no weight decay with ``protection='gradient'``).
        lr_scheduler: optional partial learning-rate scheduler.
        s_max: the largest gate scale ``s_max``.
        clamp_threshold: ``cosh`` clamp of the embedding gradient compensation.
        mask_sparsity_reg_factor: weight of the sparsity regulariser in the loss.
        task_embedding_init_mode: initialisation of each new task's embedding (``N01``,
            ``U01``, ``U-10``, ``masked``, ``unmasked``).
        embedding_clamp: the task embedding is clamped to ``[-embedding_clamp, embedding_clamp]``
            after each step.
        protection: ``'update'`` (the step the optimiser takes is scaled by the protection
            factor, SPEC §9) or ``'gradient'`` (the gradient is, as in the paper).
    """

    supports_cil = False
    drives_mask_method = "hat"

    def __init__(
        self,
        backbone: CLBackbone,
        heads: HeadsTIL | HeadsCIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        s_max: float = 400.0,
        clamp_threshold: float = 50.0,
        mask_sparsity_reg_factor: float = 0.75,
        task_embedding_init_mode: str = "N01",
        embedding_clamp: float = 6.0,
        protection: str = "update",
    ) -> None:
        name = type(self).__name__
        protection = checked_protection(
            name, protection, optimizer, "the weights whose gradients the masks zeroed"
        )
        if not isinstance(getattr(backbone, "mask_method", None), HATMethod):
            raise CLConfigError(
                f"{name} needs a HAT-masked backbone (clarena.backbones.HATMaskMLP, "
                f"HATMaskResNet18 ...); got {type(backbone).__name__} without HAT attached. Pick "
                f"backbone=hatmaskmlp or another HATMask* config."
            )
        super().__init__(backbone, heads, optimizer, lr_scheduler)
        self.init_protection(protection)
        self.s_max = check_number(name, "s_max", s_max, above=0, why="It scales the mask gates.")
        self.clamp_threshold = check_number(name, "clamp_threshold", clamp_threshold, above=0)
        self.mask_sparsity_reg_factor = check_number(
            name, "mask_sparsity_reg_factor", mask_sparsity_reg_factor, at_least=0
        )
        self.task_embedding_init_mode = check_choice(
            name, "task_embedding_init_mode", task_embedding_init_mode, EMBEDDING_INIT_MODES
        )
        self.embedding_clamp = check_number(name, "embedding_clamp", embedding_clamp, above=0)
        #: The gate scale of the current training step (``annealed_scale``), set once per step.
        self.step_scale: float = float(self.s_max)
        self._mask: dict[str, Tensor] | None = None

    @property
    def hat(self) -> HATMethod:
        """The backbone's HAT method: masks, embeddings, regulariser, conditioning."""
        method = self.backbone.mask_method
        assert isinstance(method, HATMethod)  # checked in __init__
        return method

    @override
    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        is_new = task_id not in self.backbone.processed_task_ids
        super().setup_task_id(task_id, num_classes)
        if is_new:
            self.hat.initialize_task_embedding(self.task_embedding_init_mode)

    def step_arguments(self, stage: str) -> dict[str, Any]:
        """The HAT step arguments of a forward in ``stage``: the gate scale of this training
        step, ``s_max`` for validation, none for test (the task's stored mask)."""
        if stage == "train":
            return {"scale": self.step_scale}
        if stage == "validation":
            return {"s_max": self.s_max}
        return {}

    @override
    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        output = self.backbone(input, stage, task_id, **self.step_arguments(stage))
        return output.feature, {
            "mask": output.get("mask"),
            "activations": output.activations,
            "output": output,
        }

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        # HAT anneals the gate over the optimiser steps of an epoch, counting 1..num_steps; the
        # last step may accumulate fewer micro-batches (Lightning steps at the epoch's end).
        accumulate = self.trainer.accumulate_grad_batches
        step = batch_idx // accumulate + 1
        num_steps = math.ceil(self.trainer.num_training_batches / accumulate)
        self.step_scale = annealed_scale(self.s_max, step, num_steps)
        return super().training_step(batch, batch_idx)

    @override
    def regularization(self, extras: dict[str, Any]) -> Tensor | None:
        output: BackboneOutput = extras["output"]
        self._mask = {name: value.detach() for name, value in output.get("mask").items()}
        sparsity = self.hat.regularization(output)
        assert sparsity is not None  # HAT always has a regulariser
        return self.mask_sparsity_reg_factor * sparsity

    def condition_gradients(self) -> None:
        """HAT's hard gradient conditioning by the cumulative mask."""
        self.hat.condition_gradients()

    def scales_gradients(self) -> bool:
        """Whether the protection factor multiplies the gradient in this mode. HAT's hard factor
        does in both: zeroing what the protected step keeps anyway leaves every step as the
        paper's under SGD (bit for bit) and keeps gradient clipping's norm that of the trained
        entries."""
        return True

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # Once per step on the accumulated, unscaled gradient: the factors must not compound.
        if self.scales_gradients():
            self.condition_gradients()
        compensate_embedding_gradients(self.hat, self.step_scale, self.s_max, self.clamp_threshold)

    @override
    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        clamp_task_embedding(self.hat, self.embedding_clamp)

    @override
    def on_train_end(self) -> None:
        self.hat.end_task(self.backbone.check_task_id_ready())

    @override
    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        self.hat.check_optimizer(optimizer, at_task_start=True, update_space=self.update_space)
        return configured

    @override
    def capacity(self) -> float | None:
        return self.hat.capacity()


class AdaHAT(HAT):
    """AdaHAT: HAT with soft, adaptive adjustment of the parameters used by earlier tasks.

    With ``protection='update'`` (the default) the soft factor scales the step the optimiser takes
    (:func:`clarena.hat.adahat_update_factors`), so it holds under any optimiser; under SGD that
    is the paper's gradient scaling. With ``protection='gradient'`` (the paper's) it scales the
    gradient, which an adaptive optimiser (Adam, RMSprop, Adagrad ...) cancels by dividing each
    update by the gradient's running scale: such an optimiser gets a warning naming
    ``protection=update`` (:func:`clarena.hat.check_adahat_optimizer`).

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
        if self.update_space:
            return
        try:
            check_adahat_optimizer(optimizer, type(self).__name__)
        except ValueError as error:
            kind = optimizer if isinstance(optimizer, type) else type(optimizer)
            # Once per algorithm (it is checked when built and at every task's start).
            if not getattr(self, "_warned_optimizer", False):
                self._warned_optimizer = True
                warnings.warn(
                    f"{type(self).__name__} with {kind.__name__} and protection=gradient: the "
                    f"optimiser cancels the soft gradient factor, so earlier tasks are barely "
                    f"protected. Set cl_algorithm.protection=update to scale the update instead.",
                    UserWarning,
                    stacklevel=2,
                )
            del error

    @override
    def scales_gradients(self) -> bool:
        # In update space the soft factor scales the step; scaling the gradient too would apply
        # it twice under SGD.
        return not self.update_space

    @override
    def protection_factors(self) -> dict[Any, Tensor]:
        return {}  # the factors are per step

    @override
    def per_step_parameters(self) -> list[Any] | None:
        if not self.hat.stored_task_ids:
            return None
        return list(update_parameters(self.hat))

    def step_sparsity(self) -> dict[str, Tensor]:
        """The network sparsity of this step's mask, per layer (AdaHAT's ``R_l``)."""
        if self._mask is None:
            raise RuntimeError(
                f"{type(self).__name__}: no mask from the training step to measure sparsity."
            )
        with torch.no_grad():
            return layer_sparsity(self._mask, self.hat.cumulative_mask())

    @override
    def step_factors(self) -> list[Tensor]:
        return adahat_update_factors(
            self.hat,
            self.step_sparsity(),
            alpha=self.adjustment_intensity,
            epsilon=self.epsilon,
            aggregation=self.aggregation,
        )

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
            sparsity = layer_sparsity(self._mask, self.hat.cumulative_mask())
        adahat_condition_gradients(
            self.hat,
            sparsity,
            alpha=self.adjustment_intensity,
            epsilon=self.epsilon,
            aggregation=self.aggregation,
        )
