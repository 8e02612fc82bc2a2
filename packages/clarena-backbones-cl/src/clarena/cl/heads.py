"""Output heads mapping backbone features to class logits.

- :class:`HeadsTIL`: task-incremental learning, one linear head per task, chosen by task id.
- :class:`HeadsCIL`: class-incremental learning, one head whose outputs grow with each task.
- :class:`HeadsMTL`: multi-task learning, one head per task, any task mix in a batch.
- :class:`HeadSTL`: single-task learning, one linear head.

Per-task heads are created as tasks arrive, on the heads' current device and in their current
dtype (after ``.to()``, ``.double()`` ...); ``load_state_dict`` recreates them from the saved
weights, so a fresh instance reloads every task's head.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import Tensor, nn

from clarena.cl.base import check_task_id
from clarena.cl.state import create_saved_children


class _PerTaskHeads(nn.Module):
    """One linear head per task, kept in ``heads[str(task_id)]``."""

    #: How a caller adds a head for ``{task_id}``, quoted in the "no head" error.
    _setup_hint = "setup_task_id({task_id}, num_classes)"

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(
                f"{type(self).__name__}: input_dim must be a positive integer (the backbone's "
                f"output_dim); got {input_dim!r}."
            )
        self.input_dim: int = input_dim
        self.heads = nn.ModuleDict()
        # Empty and not saved: it follows .to()/.double() even before the first head exists, so
        # new heads are built where and in the dtype the module now is.
        self.register_buffer("_placement", torch.empty(0), persistent=False)

    @property
    def task_ids(self) -> list[int]:
        """Task ids that have a head, in set-up order."""
        return [int(key) for key in self.heads]

    def num_classes(self, task_id: int) -> int:
        """Number of classes of ``task_id``'s head."""
        return self._head(task_id).out_features

    def _add_head(self, task_id: int, num_classes: int) -> None:
        owner = type(self).__name__
        check_task_id(task_id, owner)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"{owner}: num_classes must be a positive integer; got {num_classes!r}."
            )
        key = str(task_id)
        if key in self.heads:
            if self.heads[key].out_features != num_classes:
                raise ValueError(
                    f"{owner}: task {task_id} already has a head with "
                    f"{self.heads[key].out_features} classes; got num_classes={num_classes}."
                )
            return
        placement = self.get_buffer("_placement")
        self.heads[key] = nn.Linear(
            self.input_dim, num_classes, device=placement.device, dtype=placement.dtype
        )

    def _head(self, task_id: int) -> nn.Linear:
        key = str(task_id)
        if key not in self.heads:
            raise ValueError(
                f"{type(self).__name__}: no head for task {task_id} (tasks with heads: "
                f"{self.task_ids}); call {self._setup_hint.format(task_id=task_id)} first."
            )
        # Only _add_head fills heads, always with an nn.Linear.
        return cast("nn.Linear", self.heads[key])

    def _check_feature(self, feature: Tensor) -> None:
        if feature.ndim != 2 or feature.shape[1] != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (batch, {self.input_dim}); got "
                f"{tuple(feature.shape)}. Set the heads' input_dim to the backbone's output_dim."
            )

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        placement = self.get_buffer("_placement")
        create_saved_children(
            self.heads,
            state_dict,
            f"{prefix}heads.",
            lambda saved: nn.Linear(
                saved["weight"].shape[1],
                saved["weight"].shape[0],
                device=placement.device,
                dtype=placement.dtype,
            ),
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class HeadsTIL(_PerTaskHeads):
    """Task-incremental heads: one linear head per task.

    Args:
        input_dim: the backbone's ``output_dim``.
    """

    def __init__(self, input_dim: int) -> None:
        super().__init__(input_dim)
        self.task_id: int | None = None

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        """Create (or reuse) the head of ``task_id`` with ``num_classes`` outputs, make it current."""
        self._add_head(task_id, num_classes)
        self.task_id = task_id

    def forward(self, feature: Tensor, task_id: int | None = None) -> Tensor:
        """Logits ``(batch, num_classes(task_id))`` of ``task_id``'s head (current task if None)."""
        self._check_feature(feature)
        if task_id is None:
            if self.task_id is None:
                raise RuntimeError(
                    "HeadsTIL: no task is set up; call setup_task_id(task_id, num_classes) first."
                )
            task_id = self.task_id
        return self._head(task_id)(feature)


class HeadsCIL(_PerTaskHeads):
    """Class-incremental head: the outputs of every task seen so far, concatenated.

    Task ``t``'s classes occupy the outputs after those of the tasks set up before it
    (:meth:`class_offset`).

    Args:
        input_dim: the backbone's ``output_dim``.
    """

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        """Grow the head by ``num_classes`` outputs for ``task_id`` (no-op if already grown)."""
        self._add_head(task_id, num_classes)

    def class_offset(self, task_id: int) -> int:
        """Index of ``task_id``'s first class in the concatenated logits."""
        self._head(task_id)
        offset = 0
        for key, head in self.heads.items():
            if int(key) == task_id:
                return offset
            offset += cast("nn.Linear", head).out_features
        raise AssertionError("unreachable")

    def forward(self, feature: Tensor, task_id: int | None = None) -> Tensor:
        """Logits ``(batch, total classes so far)``; ``task_id`` is ignored (CIL needs none)."""
        self._check_feature(feature)
        if not self.heads:
            raise RuntimeError("HeadsCIL: no task is set up; call setup_task_id first.")
        return torch.cat([head(feature) for head in self.heads.values()], dim=1)


class HeadsMTL(_PerTaskHeads):
    """Multi-task heads: one per task; a batch may mix tasks.

    Args:
        input_dim: the backbone's ``output_dim``.
    """

    _setup_hint = "setup_tasks({{{task_id}: num_classes, ...}})"

    def setup_tasks(self, num_classes: dict[int, int]) -> None:
        """Create one head per task: ``num_classes`` maps task id to its class count."""
        for task_id, count in num_classes.items():
            self._add_head(task_id, count)

    def forward(self, feature: Tensor, task_ids: int | Tensor) -> Tensor:
        """Logits for each sample's task.

        Args:
            feature: ``(batch, input_dim)``.
            task_ids: one task id for the whole batch, or a ``(batch,)`` tensor of task ids.

        Returns:
            ``(batch, num_classes)`` for one task id; for a tensor, ``(batch, max classes)`` with
            ``-inf`` beyond each sample's class count, ready for cross-entropy.
        """
        self._check_feature(feature)
        if isinstance(task_ids, Tensor) and task_ids.ndim == 0:
            task_ids = int(task_ids)
        if isinstance(task_ids, int):
            return self._head(task_ids)(feature)
        if (
            not isinstance(task_ids, Tensor)
            or task_ids.shape != (feature.shape[0],)
            or task_ids.is_floating_point()
            or task_ids.is_complex()
        ):
            got = (
                f"{task_ids.dtype} tensor of shape {tuple(task_ids.shape)}"
                if isinstance(task_ids, Tensor)
                else repr(task_ids)
            )
            raise ValueError(
                f"HeadsMTL: task_ids must be one integer or an integer tensor of shape "
                f"({feature.shape[0]},), one task id per sample; got {got}."
            )
        width = max(self.num_classes(int(t)) for t in task_ids.unique())
        logits = feature.new_full((feature.shape[0], width), float("-inf"))
        for task in task_ids.unique().tolist():
            rows = task_ids == task
            head = self._head(task)
            logits[rows, : head.out_features] = head(feature[rows])
        return logits


class HeadSTL(nn.Linear):
    """Single-task head: a linear layer from the feature to ``num_classes`` logits.

    Args:
        input_dim: the backbone's ``output_dim``.
        num_classes: number of classes.
    """

    def __init__(self, input_dim: int, num_classes: int) -> None:
        super().__init__(input_dim, num_classes)
        self.input_dim: int = input_dim

    def forward(self, feature: Tensor) -> Tensor:
        """Logits ``(batch, num_classes)``."""
        if feature.ndim != 2 or feature.shape[1] != self.input_dim:
            raise ValueError(
                f"HeadSTL expects features of shape (batch, {self.input_dim}); got "
                f"{tuple(feature.shape)}. Set input_dim to the backbone's output_dim."
            )
        return super().forward(feature)
