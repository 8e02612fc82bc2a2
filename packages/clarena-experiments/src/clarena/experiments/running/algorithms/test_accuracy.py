"""Exact per-task test accuracy and mean test loss, over whole test sets (no batch averaging)."""

from __future__ import annotations

import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override


class ExactTestAccuracy(LightningModule):
    """Counts correct test predictions per task; ``test_accuracy`` holds the ratios after a test.

    ``test_loss`` holds each task's mean cross-entropy over its whole test set.

    The pipeline sets ``test_task_ids`` before ``Trainer.test``; ``test_step`` calls
    :meth:`count_test` for each batch.
    """

    def _init_test_accuracy(self) -> None:
        self.test_task_ids: list[int] = []
        self.test_accuracy: dict[int, float] = {}
        self.test_loss: dict[int, float] = {}
        self._test_counts: dict[int, list[int]] = {}
        self._test_loss_sums: dict[int, float] = {}

    def count_test(self, task_id: int, logits: Tensor, targets: Tensor) -> None:
        """Add a test batch's correct predictions ``(batch, classes)`` vs ``(batch,)`` targets."""
        self._test_counts[task_id][0] += int((logits.argmax(dim=1) == targets).sum())
        self._test_counts[task_id][1] += len(targets)
        loss = F.cross_entropy(logits.detach().float(), targets, reduction="sum")
        self._test_loss_sums[task_id] += float(loss)

    @override
    def on_test_epoch_start(self) -> None:
        self._test_counts = {task_id: [0, 0] for task_id in self.test_task_ids}
        self._test_loss_sums = dict.fromkeys(self.test_task_ids, 0.0)

    @override
    def on_test_epoch_end(self) -> None:
        self.test_accuracy = {
            task_id: correct / total for task_id, (correct, total) in self._test_counts.items()
        }
        self.test_loss = {
            task_id: self._test_loss_sums[task_id] / total
            for task_id, (_, total) in self._test_counts.items()
        }
        for task_id, accuracy in self.test_accuracy.items():
            # Equal on every rank (each tests the whole set): syncing keeps the value.
            self.log(f"test/acc_on_task_{task_id}", accuracy, sync_dist=True)
