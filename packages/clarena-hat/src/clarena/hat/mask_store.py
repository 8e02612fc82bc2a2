"""HAT's stored masks: one flat binary unit mask per finished task, one bit per unit."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from clarena.cl.mask_store import TaskMaskStore

#: The one key of a HAT task's mask: all units of all weighted layers, flattened.
UNITS = "units"

# clarena-hat 0.1 kept task t's mask as the buffer ``task_{t}`` of the store itself.
_LEGACY_KEY = re.compile(r"task_(\d+)")


class PackedMaskStore(TaskMaskStore):
    """:class:`clarena.cl.TaskMaskStore` holding one flat ``(num_units,)`` mask per task.

    Task ``t``'s mask is the buffer ``tasks.<t>.units`` of ``ceil(num_units / 8)`` bytes. State
    dicts saved by clarena-hat 0.1 (buffer ``task_<t>``) load unchanged.

    Args:
        num_units: units of all weighted layers together; each mask is a flat ``(num_units,)``
            vector in the backbone's ``weighted_layer_names`` order.
    """

    def __init__(self, num_units: int) -> None:
        super().__init__({UNITS: (num_units,)})
        self.num_units: int = num_units

    @property
    def num_bytes(self) -> int:
        """Bytes stored per task."""
        return (self.num_units + 7) // 8

    def store(self, task_id: int, mask: Tensor | Mapping[str, Tensor]) -> None:
        """Store (or replace) task ``task_id``'s flat binary ``(num_units,)`` mask."""
        if isinstance(mask, Tensor):
            if mask.numel() != self.num_units:
                raise ValueError(
                    f"PackedMaskStore: a mask has {self.num_units} units; got {mask.numel()}."
                )
            mask = {UNITS: mask.reshape(-1)}
        super().store(task_id, mask)

    def load(self, task_id: int) -> Tensor:
        """Task ``task_id``'s mask as a flat ``(num_units,)`` bool tensor."""
        return self.unpack(task_id)[UNITS]

    def stacked(self) -> Tensor:
        """All stored masks as a ``(num_tasks, num_units)`` bool tensor (storing order)."""
        masks = [self.load(task_id) for task_id in self.task_ids]
        if not masks:
            return torch.zeros(0, self.num_units, dtype=torch.bool)
        return torch.stack(masks)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            legacy = _LEGACY_KEY.fullmatch(key[len(prefix) :])
            if legacy is not None:
                state_dict[f"{prefix}tasks.{legacy[1]}.{UNITS}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
