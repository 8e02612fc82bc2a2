"""WSN (Winning SubNetworks, Kang et al., ICML 2022) as a Lightning algorithm.

The subnetwork mechanics live in :class:`clarena.wsn.WSNMaskBackbone`; this module calls them at
the right points of Lightning's training loop: ``on_before_optimizer_step`` (once per optimiser
step, after gradient accumulation and mixed-precision unscaling) freezes the parameters earlier
tasks use, ``on_train_end`` stores the task's subnetwork mask.
"""

from __future__ import annotations

from typing import Any

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
    optimizer_weight_decay,
)
from clarena.wsn import SCORE_INIT_MODES, WSNMaskBackbone, check_mask_percentage, check_optimizer


class WSN(CLAlgorithm):
    """Each task learns a top-``c`` subnetwork of the backbone; earlier tasks' weights stay frozen.

    Task-incremental only (the test stage needs the task's stored mask). Every task starts a
    fresh optimiser, and ``weight_decay > 0`` is refused.

    Args:
        backbone: a WSN-masked backbone (``clarena.backbones.WSNMaskMLP``, ``WSNMaskResNet18``
            ...).
        heads: ``HeadsTIL``.
        optimizer: partial optimiser (no weight decay).
        lr_scheduler: optional partial learning-rate scheduler.
        mask_percentage: ``c`` in ``(0, 1]``, the share of each layer's parameters a task keeps.
        parameter_score_init_mode: score initialisation at the start of each new task
            (``default``, ``N01``, ``U01``).
    """

    supports_cil = False
    drives_mask_method = "wsn"

    def __init__(
        self,
        backbone: WSNMaskBackbone,
        heads: HeadsTIL | HeadsCIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        mask_percentage: float = 0.5,
        parameter_score_init_mode: str = "default",
    ) -> None:
        name = type(self).__name__
        if not isinstance(backbone, WSNMaskBackbone):
            raise CLConfigError(
                f"{name} needs a WSN-masked backbone (clarena.backbones.WSNMaskMLP, "
                f"WSNMaskResNet18 ...); got {type(backbone).__name__}. Pick backbone=wsnmaskmlp "
                f"or another WSNMask* config."
            )
        if optimizer_weight_decay(optimizer) > 0:
            raise CLConfigError(
                f"{name} refuses weight_decay={optimizer_weight_decay(optimizer)}: weight decay "
                f"moves the parameters frozen for earlier tasks, so they would be forgotten. Set "
                f"optimizer.weight_decay=0."
            )
        super().__init__(backbone, heads, optimizer, lr_scheduler)
        self.mask_percentage = check_mask_percentage(mask_percentage, "train", name)
        self.parameter_score_init_mode = check_choice(
            name, "parameter_score_init_mode", parameter_score_init_mode, SCORE_INIT_MODES
        )

    @override
    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        is_new = task_id not in self.backbone.processed_task_ids
        super().setup_task_id(task_id, num_classes)
        if is_new:
            self.backbone.initialize_parameter_score(self.parameter_score_init_mode)

    @override
    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        if stage == "test":
            feature, weight_mask, bias_mask, activations = self.backbone(
                input, "test", test_task_id=task_id
            )
        else:
            feature, weight_mask, bias_mask, activations = self.backbone(
                input, stage, mask_percentage=self.mask_percentage
            )
        return feature, {
            "weight_mask": weight_mask,
            "bias_mask": bias_mask,
            "activations": activations,
        }

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        self.backbone.freeze_used_parameter_gradients()

    @override
    def on_train_end(self) -> None:
        self.backbone.store_mask(self.mask_percentage)

    @override
    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        check_optimizer(optimizer, fresh=True)
        return configured

    @override
    def capacity(self) -> float | None:
        return self.backbone.capacity()
