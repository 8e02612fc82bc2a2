"""Independent learning: a fresh copy of the backbone for every task."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from typing_extensions import override

from clarena.cl import CLBackbone, HeadDIL, HeadsCIL, HeadsTIL
from clarena.experiments.running.algorithms.base import (
    CLAlgorithm,
    OptimizerFactory,
    SchedulerFactory,
)


class Independent(CLAlgorithm):
    """One independent backbone per task, each a copy of the untrained backbone.

    No forgetting and no transfer by construction (the upper bound of isolation). Task ``t`` uses
    ``task_backbones[str(t)]``; :attr:`backbone` stays the untrained template. Needs the task id
    at test time, so task- or domain-incremental learning only. In DIL each task also gets its
    own copy of the untrained shared head (``task_heads[str(t)]``), so no task moves another's
    logits.

    Arguments as for :class:`~clarena.experiments.algorithms.base.CLAlgorithm`.
    """

    supports_cil = False

    def __init__(
        self,
        backbone: CLBackbone,
        heads: HeadsTIL | HeadsCIL | HeadDIL,
        optimizer: OptimizerFactory | None = None,
        lr_scheduler: SchedulerFactory | None = None,
    ) -> None:
        super().__init__(backbone, heads, optimizer, lr_scheduler)
        self.task_backbones = nn.ModuleDict()
        self.task_heads = nn.ModuleDict()

    @override
    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        super().setup_task_id(task_id, num_classes)
        key = str(task_id)
        if key not in self.task_backbones:
            self.task_backbones[key] = copy.deepcopy(self.backbone)
        self.task_backbones[key].setup_task_id(task_id)
        if self.dil and key not in self.task_heads:
            # The shared head is never trained here: it stays the untrained template.
            self.task_heads[key] = copy.deepcopy(self.heads.get_head())

    @override
    def forward(self, input: Tensor, stage: str, task_id: int) -> tuple[Tensor, dict[str, Any]]:
        if not self.dil:
            return super().forward(input, stage, task_id)
        feature, extras = self.backbone_forward(input, stage, task_id)
        return self.task_heads[str(task_id)](feature), extras

    @override
    def backbone_forward(
        self, input: Tensor, stage: str, task_id: int
    ) -> tuple[Tensor, dict[str, Any]]:
        feature, activations = self.task_backbones[str(task_id)](
            input, stage=stage, task_id=task_id
        )
        return feature, {"activations": activations}

    @override
    def backbones_to_compile(self) -> list[nn.Module]:
        # Each task's own copy: a compiled template's copies would call the template's forward.
        return list(self.task_backbones.values())

    @override
    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.task_backbones[str(self.task_id)].parameters()
        heads = self.task_heads if self.dil else self.heads.heads
        yield from heads[str(self.task_id)].parameters()
