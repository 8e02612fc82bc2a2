"""The domain-incremental head: one linear head shared by every task."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from clarena.cl.base import check_task_id


class HeadDIL(nn.Module):
    """Domain-incremental head: one linear head ``input_dim -> C`` shared by all tasks.

    Every task has the same ``C`` classes (labels ``0..C-1``, no per-task offset). The head is
    created by the first :meth:`setup_task_id`; ``load_state_dict`` creates it from the saved
    weight, so a fresh instance reloads a trained one.

    Args:
        input_dim: the backbone's ``output_dim``.
    """

    head: nn.Linear | None

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(
                f"HeadDIL: input_dim must be a positive integer (the backbone's output_dim); "
                f"got {input_dim!r}."
            )
        self.input_dim: int = input_dim
        self.register_module("head", None)
        self.task_id: int | None = None
        self.task_ids: list[int] = []

    @property
    def num_classes(self) -> int | None:
        """Classes of the shared head (``None`` before the first task)."""
        return None if self.head is None else self.head.out_features

    def setup_task_id(self, task_id: int, num_classes: int) -> None:
        """Make ``task_id`` current; the first call creates the head with ``num_classes`` outputs.

        Raises:
            TypeError: ``task_id`` is not an integer.
            ValueError: ``num_classes`` is not a positive integer, or differs from the class
                count of the shared head.
        """
        check_task_id(task_id, "HeadDIL")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(
                f"HeadDIL: num_classes must be a positive integer; got {num_classes!r}."
            )
        if self.head is None:
            self.head = nn.Linear(self.input_dim, num_classes)
        elif self.head.out_features != num_classes:
            raise ValueError(
                f"HeadDIL: task {task_id} has {num_classes} classes but the head shared by tasks "
                f"{self.task_ids} has {self.head.out_features}; domain-incremental learning needs "
                f"the same classes in every task (use HeadsTIL or HeadsCIL otherwise)."
            )
        if task_id not in self.task_ids:
            self.task_ids.append(task_id)
        self.task_id = task_id

    #: Upstream CLArena's name for :meth:`setup_task_id`.
    setup_task = setup_task_id

    def if_head_setup(self) -> bool:
        """Whether the shared head exists (a task has been set up or a state loaded)."""
        return self.head is not None

    def get_head(self, task_id: int | None = None) -> nn.Linear:
        """The shared head (the same for every ``task_id``).

        Raises:
            RuntimeError: no task has been set up.
        """
        if self.head is None:
            raise RuntimeError(
                "HeadDIL: no task is set up; call setup_task_id(task_id, num_classes) first."
            )
        return self.head

    def forward(self, feature: Tensor, task_id: int | None = None) -> Tensor:
        """Logits ``(batch, num_classes)`` of the shared head; ``task_id`` is ignored.

        Args:
            feature: ``(batch, input_dim)``.
            task_id: accepted for the TIL/CIL call signature; every task uses the same head.
        """
        head = self.get_head()
        if feature.ndim != 2 or feature.shape[1] != self.input_dim:
            raise ValueError(
                f"HeadDIL expects features of shape (batch, {self.input_dim}); got "
                f"{tuple(feature.shape)}. Set input_dim to the backbone's output_dim."
            )
        return head(feature)

    def get_extra_state(self) -> dict[str, Any]:
        """The tasks set up so far, saved with ``state_dict()``."""
        return {"task_id": self.task_id, "task_ids": list(self.task_ids)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore the tasks saved by :meth:`get_extra_state`."""
        self.task_id = state["task_id"]
        self.task_ids = list(state["task_ids"])

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        weight = state_dict.get(f"{prefix}head.weight")
        if weight is not None and self.head is None:
            self.head = nn.Linear(
                weight.shape[1], weight.shape[0], device=weight.device, dtype=weight.dtype
            )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
