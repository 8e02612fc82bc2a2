"""WSN (Winning SubNetworks, Kang et al., ICML 2022) as a Lightning algorithm.

The subnetwork mechanics live in the mask method :class:`clarena.wsn.WSN`, attached to the
backbone (``clarena.backbones.WSNMaskMLP`` ... build it that way); this module calls it at the
right points of Lightning's training loop: every forward passes the step arguments
(``mask_percentage``; the test task), ``on_before_optimizer_step`` (once per optimiser step, after
gradient accumulation and mixed-precision unscaling) freezes the parameters earlier tasks use,
``on_train_end`` stores the task's subnetwork mask.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override

from clarena.cl import CLBackbone, HeadsCIL, HeadsTIL
from clarena.experiments.running.algorithms.base import (
    CLConfigError,
    OptimizerFactory,
    SchedulerFactory,
    check_choice,
)
from clarena.experiments.running.algorithms.protection import (
    ProtectedAlgorithm,
    checked_protection,
)
from clarena.wsn import SCORE_INIT_MODES, check_mask_percentage
from clarena.wsn import WSN as WSNMethod


class WSN(ProtectedAlgorithm):
    """Each task learns a top-``c`` subnetwork of the backbone; earlier tasks' weights stay frozen.

    Task-incremental only (the test stage needs the task's stored mask). Every task starts a
    fresh optimiser. With ``protection='update'`` (the default) the frozen weights end every step
    bit-identical under any optimiser, weight decay included; with ``protection='gradient'``
    (the paper's gradient freezing only) ``weight_decay > 0`` is refused.

    Args:
        backbone: a backbone with the WSN mask method attached (``clarena.backbones.WSNMaskMLP``,
            ``WSNMaskResNet18`` ..., or ``CLMLP(...).attach(clarena.wsn.WSN())``).
        heads: ``HeadsTIL``.
        optimizer: partial optimiser (no weight decay with ``protection='gradient'``).
        lr_scheduler: optional partial learning-rate scheduler.
        mask_percentage: ``c`` in ``(0, 1]``, the share of each layer's parameters a task keeps.
        parameter_score_init_mode: score initialisation at the start of each new task
            (``default``, ``N01``, ``U01``).
        protection: ``'update'`` (the step the optimiser takes leaves frozen weights as they
            were, SPEC §9) or ``'gradient'`` (their gradient is zeroed, as in the paper).
    """

    supports_cil = False
    drives_mask_method: ClassVar[str | None] = WSNMethod.name

    def __init__(
        self,
        backbone: CLBackbone,
        heads: HeadsTIL | HeadsCIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        mask_percentage: float = 0.5,
        parameter_score_init_mode: str = "default",
        protection: str = "update",
    ) -> None:
        name = type(self).__name__
        protection = checked_protection(
            name, protection, optimizer, "the parameters frozen for earlier tasks"
        )
        if not isinstance(getattr(backbone, "mask_method", None), WSNMethod):
            raise CLConfigError(
                f"{name} needs a backbone with the WSN mask method attached "
                f"(clarena.backbones.WSNMaskMLP, WSNMaskResNet18 ...); got "
                f"{type(backbone).__name__}. Pick backbone=wsnmaskmlp or another WSNMask* config."
            )
        super().__init__(backbone, heads, optimizer, lr_scheduler)
        self.init_protection(protection)
        self.mask_percentage = check_mask_percentage(mask_percentage, "train", name)
        self.parameter_score_init_mode = check_choice(
            name, "parameter_score_init_mode", parameter_score_init_mode, SCORE_INIT_MODES
        )

    @property
    def wsn(self) -> WSNMethod:
        """The WSN mask method attached to the backbone."""
        method = self.backbone.mask_method
        assert isinstance(method, WSNMethod)  # checked in __init__
        return method

    @override
    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        is_new = task_id not in self.backbone.processed_task_ids
        super().setup_task_id(task_id, num_classes)
        if is_new:
            self.wsn.initialize_parameter_score(self.parameter_score_init_mode)

    def step_arguments(self, stage: str) -> dict[str, Any]:
        """WSN's step arguments for a forward in ``stage``: ``mask_percentage`` in train and
        validation (the test stage reads the tested task's stored mask)."""
        return {} if stage == "test" else {"mask_percentage": self.mask_percentage}

    @override
    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        output = self.backbone(input, stage, task_id=task_id, **self.step_arguments(stage))
        return output.feature, {**output.extras, "activations": output.activations}

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        self.wsn.condition_gradients()

    @override
    def on_train_end(self) -> None:
        self.wsn.store_mask(self.mask_percentage)

    @override
    def configure_optimizers(self) -> Any:
        configured = super().configure_optimizers()
        optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
        self.wsn.check_optimizer(optimizer, at_task_start=True, update_space=self.update_space)
        return configured

    @override
    def capacity(self) -> float | None:
        return self.wsn.capacity()
