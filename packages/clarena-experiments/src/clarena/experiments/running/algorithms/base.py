"""The base Lightning module of every continual-learning algorithm."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from numbers import Real
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from clarena.cl import CLBackbone, HeadDIL, HeadsCIL, HeadsTIL
from clarena.experiments.errors import CLConfigError
from clarena.experiments.running.algorithms.compilation import BackboneCompilation
from clarena.experiments.running.algorithms.registry import algorithms_driving
from clarena.experiments.running.algorithms.test_accuracy import ExactTestAccuracy
from clarena.experiments.running.batch_norm import BatchNormStatistics

OptimizerFactory = Callable[..., Optimizer]
SchedulerFactory = Callable[..., Any]


def optimizer_and_scheduler(
    optimizer: Optimizer, factory: SchedulerFactory, val_loss: str
) -> dict[str, Any]:
    """Lightning's ``configure_optimizers`` answer for ``optimizer`` and its scheduler.

    ``ReduceLROnPlateau`` (upstream CLArena's default scheduler) steps on a monitored value:
    the validation loss logged as ``val_loss``, checked after each validation epoch.
    """
    scheduler = factory(optimizer)
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": val_loss},
        }
    return {"optimizer": optimizer, "lr_scheduler": scheduler}


class CLAlgorithm(BackboneCompilation, BatchNormStatistics, ExactTestAccuracy):
    """A continual-learning algorithm: a backbone, output heads and how they learn each task.

    The pipeline calls :meth:`setup_task_id` before fitting each task, fits one Lightning
    ``Trainer`` per task (so every task starts with a fresh optimiser from
    :meth:`configure_optimizers`), then tests the seen tasks with :attr:`test_task_ids` set to
    the task of each test dataloader. Test accuracy per task is counted exactly (integers) in
    :attr:`test_accuracy`. :meth:`compile_backbone` compiles the backbone once, in the first
    fit (see :class:`~clarena.experiments.algorithms.compilation.BackboneCompilation`).

    Args:
        backbone: a continual-learning backbone (``clarena.backbones.CL*`` or a masked one).
        heads: ``HeadsTIL`` (task-incremental), ``HeadsCIL`` (class-incremental) or ``HeadDIL``
            (domain-incremental: one head shared by all tasks, task-local labels).
        optimizer: a partial optimiser (Hydra ``_partial_: true``), called with the parameters
            to train at the start of every task.
        lr_scheduler: an optional partial learning-rate scheduler, called with the optimiser.
    """

    #: Whether the algorithm works in class-incremental learning.
    supports_cil: bool = True
    #: The registered name of the mask method (``'hat'``, ``'wsn'``, see
    #: :func:`clarena.cl.available_mask_methods`) whose masks the algorithm drives; its backbone
    #: must have that method attached. ``None``: the algorithm trains backbones without one.
    drives_mask_method: ClassVar[str | None] = None
    #: Whether the algorithm works in domain-incremental learning (one shared head).
    supports_dil: bool = True

    def __init__(
        self,
        backbone: CLBackbone,
        heads: HeadsTIL | HeadsCIL | HeadDIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        if not isinstance(backbone, CLBackbone):
            raise CLConfigError(
                f"{name} needs a continual-learning backbone (clarena.backbones.CLMLP, "
                f"CLResNet18, HATMask*, WSNMask* ...); got {type(backbone).__name__}. Pick a "
                f"backbone config whose _target_ starts with clarena.backbones.CL."
            )
        check_mask_method(name, self.drives_mask_method, backbone)
        if isinstance(heads, HeadsCIL) and not self.supports_cil:
            raise CLConfigError(
                f"{name} works only in task-incremental learning (cl_paradigm: TIL); it needs "
                f"the task id at test time. Set cl_paradigm=TIL or pick another algorithm."
            )
        if isinstance(heads, HeadDIL) and not self.supports_dil:
            raise CLConfigError(
                f"{name} does not support domain-incremental learning (cl_paradigm: DIL). Set "
                f"cl_paradigm=TIL or pick another algorithm."
            )
        self.backbone = backbone
        self.heads = heads
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.task_id: int | None = None
        self._init_test_accuracy()
        self.train_accuracy = MulticlassAccuracy(num_classes=2)
        self.val_accuracy = MulticlassAccuracy(num_classes=2)

    @property
    def cil(self) -> bool:
        """Whether the heads are class-incremental."""
        return isinstance(self.heads, HeadsCIL)

    @property
    def dil(self) -> bool:
        """Whether the head is domain-incremental (one head shared by every task)."""
        return isinstance(self.heads, HeadDIL)

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        """Prepare backbone and heads for ``task_id`` with ``num_classes`` classes."""
        self.task_id = task_id
        self.backbone.setup_task_id(task_id)
        self.heads.setup_task_id(task_id, num_classes)
        total = (
            sum(self.heads.num_classes(t) for t in self.heads.task_ids) if self.cil else num_classes
        )
        self.train_accuracy = MulticlassAccuracy(num_classes=total, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes=total, average="micro")

    def forward(self, input: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Any]]:
        """Logits of ``input`` as task ``task_id`` in ``stage``.

        Returns:
            ``(logits, extras)``: ``(batch, classes)`` logits and whatever the backbone returned
            besides the feature (activations, masks), for regularisers.
        """
        feature, extras = self.backbone_forward(input, stage, task_id)
        return self.heads(feature, task_id), extras

    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        """Run the backbone; returns the ``(batch, output_dim)`` feature and extra outputs."""
        feature, activations = self.backbone(input, stage=stage, task_id=task_id)
        return feature, {"activations": activations}

    @override
    def batch_norm_forward(self, batch: tuple[Tensor, Tensor]) -> None:
        self.backbone_forward(batch[0], "validation", self.task_id)

    def targets(self, labels: Tensor, task_id: int) -> Tensor:
        """Task-local labels ``(batch,)`` as indices into the heads' logits."""
        return labels + self.heads.class_offset(task_id) if self.cil else labels

    def regularization(self, extras: dict[str, Any]) -> Tensor | None:
        """An extra loss term for the training step (none by default)."""
        return None

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        input, labels = batch
        logits, extras = self(input, "train", self.task_id)
        targets = self.targets(labels, self.task_id)
        loss = F.cross_entropy(logits, targets)
        regularization = self.regularization(extras)
        if regularization is not None:
            self.log(f"task_{self.task_id}/train/regularization", regularization)
            loss = loss + regularization
        self.train_accuracy(logits.detach(), targets)
        self.log(f"task_{self.task_id}/train/loss", loss, prog_bar=True)
        self.log(f"task_{self.task_id}/train/acc", self.train_accuracy, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        input, labels = batch
        logits, _ = self(input, "validation", self.task_id)
        targets = self.targets(labels, self.task_id)
        self.val_accuracy(logits, targets)
        self.log(f"task_{self.task_id}/val/loss", F.cross_entropy(logits, targets), sync_dist=True)
        self.log(f"task_{self.task_id}/val/acc", self.val_accuracy, prog_bar=True)

    @override
    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        input, labels = batch
        task_id = self.test_task_ids[dataloader_idx]
        logits, _ = self(input, "test", task_id)
        self.count_test(task_id, logits, self.targets(labels, task_id))

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the optimiser of the current task updates.

        The backbone and, in TIL, only the current task's head (other heads are left exactly as
        they were); in CIL every head, since all classes compete in one softmax; in DIL the one
        shared head.
        """
        yield from self.backbone.parameters()
        if self.cil or self.dil:
            yield from self.heads.parameters()
        else:
            yield from self.heads.heads[str(self.task_id)].parameters()

    @override
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise CLConfigError(f"{type(self).__name__}: no optimizer configured for training.")
        optimizer = self.optimizer_factory(params=list(self.trainable_parameters()))
        if self.drives_mask_method is not None:
            self._check_gradients_arrive_unscaled(optimizer)
        if self.lr_scheduler_factory is None:
            return optimizer
        return optimizer_and_scheduler(
            optimizer, self.lr_scheduler_factory, f"task_{self.task_id}/val/loss"
        )

    def _check_gradients_arrive_unscaled(self, optimizer: Optimizer) -> None:
        """Refuse an optimiser that unscales in its own step under a gradient scaler (16-mixed).

        Lightning unscales the gradients before ``on_before_optimizer_step``, where the mask
        algorithms rewrite them, except for optimisers that unscale inside ``step`` (``fused``):
        those would reach the hook with gradients multiplied by the loss scale.

        Raises:
            CLConfigError: a gradient scaler is active and ``optimizer`` unscales itself.
        """
        precision = getattr(self._trainer, "precision_plugin", None)
        if getattr(precision, "scaler", None) is None:
            return
        if getattr(optimizer, "_step_supports_amp_scaling", False):
            raise CLConfigError(
                f"{type(self).__name__} rewrites gradients before each optimiser step, which "
                f"under trainer.precision=16-mixed needs them unscaled; {type(optimizer).__name__}"
                f" with fused=True unscales inside its step, so they would arrive multiplied by "
                f"the loss scale. Set optimizer.fused=false."
            )

    def capacity(self) -> float | None:
        """Share of the backbone used by the tasks so far (masked algorithms); else ``None``."""
        return None


def check_mask_method(algorithm: str, drives: str | None, backbone: CLBackbone) -> None:
    """Raise unless ``backbone`` carries the mask method ``drives`` (``None``: no method).

    A method's masks are trained only by the algorithms that drive it; the message names them,
    as registered in the ``clarena.algorithms`` entry-point group.

    Raises:
        CLConfigError: the attached method (or its absence) is not the one ``algorithm`` drives.
    """
    attached = backbone.mask_method_name
    if attached == drives:
        return
    network = backbone.architecture
    if drives is None:
        drivers = ", ".join(algorithms_driving(str(attached))) or "no installed algorithm"
        raise CLConfigError(
            f"{algorithm} trains a plain continual-learning backbone, but mask method "
            f"'{attached}' is attached to {network}; only the algorithms that drive it train it: "
            f"{drivers}. Use one of them as cl_algorithm, or a backbone without a mask method "
            f"(clarena.backbones.CLMLP, CLResNet18 ...)."
        )
    found = "none" if attached is None else f"mask method '{attached}'"
    raise CLConfigError(
        f"{algorithm} drives mask method '{drives}', but {network} has {found} attached. Pick a "
        f"backbone built with '{drives}' (clarena.backbones.available_backbones() lists the "
        f"installed ones)."
    )


def optimizer_weight_decay(optimizer: OptimizerFactory | None) -> float:
    """The ``weight_decay`` a partial optimiser will be built with (0 when not set)."""
    keywords = getattr(optimizer, "keywords", {}) or {}
    return float(keywords.get("weight_decay", 0.0) or 0.0)


def check_number(
    owner: str,
    name: str,
    value: object,
    *,
    above: float | None = None,
    at_least: float | None = None,
    why: str = "",
) -> float:
    """Return ``value`` as a float if it is a real number in range, else raise.

    Args:
        owner: the algorithm, for the message.
        name: the hyperparameter (its config key).
        value: the configured value.
        above: exclusive lower bound.
        at_least: inclusive lower bound.
        why: what the bound protects, appended to the message.

    Raises:
        CLConfigError: ``value`` is not a number, or out of range.
    """
    bound = f"> {above:g}" if above is not None else f">= {at_least:g}"
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or (above is not None and not float(value) > above)
        or (at_least is not None and not float(value) >= at_least)
    ):
        raise CLConfigError(
            f"{owner}: {name} must be a number {bound}; got {value!r}.{' ' + why if why else ''} "
            f"Set cl_algorithm.{name} to a value {bound}."
        )
    return float(value)


def check_choice(owner: str, name: str, value: object, choices: Collection[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise :class:`CLConfigError`."""
    if value not in choices:
        raise CLConfigError(
            f"{owner}: {name} must be one of {', '.join(repr(c) for c in choices)}; got "
            f"{value!r}. Set cl_algorithm.{name} to one of them."
        )
    return str(value)
