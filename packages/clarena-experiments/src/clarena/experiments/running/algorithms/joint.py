"""Multi-task and single-task learning algorithms."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from clarena.backbones import Backbone
from clarena.cl import CLBackbone, HeadsMTL, HeadSTL
from clarena.experiments.running.algorithms.base import (
    CLConfigError,
    OptimizerFactory,
    SchedulerFactory,
    optimizer_and_scheduler,
)
from clarena.experiments.running.algorithms.compilation import BackboneCompilation
from clarena.experiments.running.algorithms.test_accuracy import ExactTestAccuracy
from clarena.experiments.running.batch_norm import BatchNormStatistics


class _SupervisedAlgorithm(BackboneCompilation, BatchNormStatistics, ExactTestAccuracy):
    """Shared optimiser set-up and exact test-accuracy counting of MTL and STL."""

    def __init__(
        self,
        backbone: Backbone,
        optimizer: OptimizerFactory | None,
        lr_scheduler: SchedulerFactory | None,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise CLConfigError(
                f"{type(self).__name__} needs a clarena backbone; got {type(backbone).__name__}."
            )
        if isinstance(backbone, CLBackbone):
            # The family the CL backbone extends (MLP, ResNet), at the backbone's depth if any.
            family = next(
                c
                for c in type(backbone).__mro__
                if issubclass(c, Backbone) and not issubclass(c, CLBackbone)
            )
            plain = f"{family.__name__}{getattr(backbone, 'depth', '')}"
            raise CLConfigError(
                f"{type(self).__name__} trains one plain backbone; {backbone.architecture} is a "
                f"continual-learning backbone (it needs a task set up before every forward). Use "
                f"clarena.backbones.{plain} (backbone={plain.lower()})."
            )
        self.backbone = backbone
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._init_test_accuracy()

    def features(self, input: Tensor, stage: str) -> Tensor:
        """``(batch, output_dim)`` features of ``input``."""
        return self.backbone(input, stage=stage)[0]

    @override
    def batch_norm_forward(self, batch: tuple[Tensor, ...]) -> None:
        self.features(batch[0], "validation")

    @override
    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise CLConfigError(f"{type(self).__name__}: no optimizer configured for training.")
        optimizer = self.optimizer_factory(params=list(self.parameters()))
        if self.lr_scheduler_factory is None:
            return optimizer
        return optimizer_and_scheduler(optimizer, self.lr_scheduler_factory, "val/loss")


class JointLearning(_SupervisedAlgorithm):
    """Multi-task learning: one shared backbone, one head per task, all tasks trained jointly.

    Batches are ``(image, label, task_id)``; each sample's loss uses its own task's head.

    Args:
        backbone: a clarena backbone (e.g. ``clarena.backbones.MLP``).
        heads: multi-task heads, set up for every task by the pipeline.
        optimizer: partial optimiser (Hydra ``_partial_: true``).
        lr_scheduler: optional partial learning-rate scheduler.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: HeadsMTL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(backbone, optimizer, lr_scheduler)
        self.heads = heads

    @override
    def forward(self, input: Tensor, stage: str, task_ids: int | Tensor) -> Tensor:
        """Logits for each sample's task (see :meth:`clarena.cl.HeadsMTL.forward`)."""
        return self.heads(self.features(input, stage), task_ids)

    @override
    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        input, labels, task_ids = batch
        loss = F.cross_entropy(self(input, "train", task_ids), labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        input, labels, task_ids = batch
        logits = self(input, "validation", task_ids)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        self.log("val/acc", accuracy, prog_bar=True, sync_dist=True)

    @override
    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        input, labels = batch
        task_id = self.test_task_ids[dataloader_idx]
        self.count_test(task_id, self(input, "test", task_id), labels)


class SingleLearning(_SupervisedAlgorithm):
    """Single-task learning: a backbone and one linear head.

    Args:
        backbone: a clarena backbone (e.g. ``clarena.backbones.MLP``).
        head: the single-task head.
        optimizer: partial optimiser (Hydra ``_partial_: true``).
        lr_scheduler: optional partial learning-rate scheduler.
    """

    def __init__(
        self,
        backbone: Backbone,
        head: HeadSTL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(backbone, optimizer, lr_scheduler)
        self.head = head
        self.train_accuracy = MulticlassAccuracy(num_classes=head.out_features, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes=head.out_features, average="micro")
        self.test_task_ids = [1]

    @override
    def forward(self, input: Tensor, stage: str) -> Tensor:
        """Logits ``(batch, num_classes)``."""
        return self.head(self.features(input, stage))

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        input, labels = batch
        logits = self(input, "train")
        loss = F.cross_entropy(logits, labels)
        self.train_accuracy(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_accuracy, prog_bar=True)
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        input, labels = batch
        logits = self(input, "validation")
        self.val_accuracy(logits, labels)
        self.log("val/loss", F.cross_entropy(logits, labels), sync_dist=True)
        self.log("val/acc", self.val_accuracy, prog_bar=True)

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        input, labels = batch
        self.count_test(1, self(input, "test"), labels)
