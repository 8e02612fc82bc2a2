"""Per-task binary unit masks stored at one bit per unit."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from clarena.cl import pack_bits, unpack_bits

_PREFIX = "task_"


class PackedMaskStore(nn.Module):
    """One packed binary mask over all units of a backbone per finished task.

    Task ``t``'s mask is the ``uint8`` buffer ``task_{t}`` of ``ceil(num_units / 8)`` bytes (see
    :func:`clarena.cl.pack_bits`). Buffers are created as tasks are stored and recreated by
    ``load_state_dict`` for every task in the loaded state dict, so a fresh instance reloads them.

    Args:
        num_units: units of all weighted layers together; each mask is a flat ``(num_units,)``
            vector in the backbone's ``weighted_layer_names`` order.
    """

    def __init__(self, num_units: int) -> None:
        super().__init__()
        self.num_units: int = num_units

    @property
    def num_bytes(self) -> int:
        """Bytes stored per task."""
        return (self.num_units + 7) // 8

    @property
    def task_ids(self) -> list[int]:
        """Ids of the tasks with a stored mask, in storing order."""
        return [int(name[len(_PREFIX) :]) for name, _ in self.named_buffers(recurse=False)]

    def __contains__(self, task_id: object) -> bool:
        return f"{_PREFIX}{task_id}" in self._buffers

    def store(self, task_id: int, mask: Tensor) -> None:
        """Store (or replace) task ``task_id``'s flat binary ``(num_units,)`` mask."""
        if mask.numel() != self.num_units:
            raise ValueError(
                f"PackedMaskStore: a mask has {self.num_units} units; got {mask.numel()}."
            )
        self.register_buffer(f"{_PREFIX}{task_id}", pack_bits(mask))

    def load(self, task_id: int) -> Tensor:
        """Task ``task_id``'s mask as a flat ``(num_units,)`` bool tensor."""
        return unpack_bits(self._buffers[f"{_PREFIX}{task_id}"], (self.num_units,))

    def stacked(self) -> Tensor:
        """All stored masks as a ``(num_tasks, num_units)`` bool tensor (storing order)."""
        masks = [self.load(task_id) for task_id in self.task_ids]
        if not masks:
            return torch.zeros(0, self.num_units, dtype=torch.bool)
        return torch.stack(masks)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = [
            key[len(prefix) :]
            for key in state_dict
            if key.startswith(prefix + _PREFIX) and "." not in key[len(prefix) :]
        ]
        # Rebuild in the saved (storing) order, keeping existing buffers' devices.
        existing = dict(self._buffers)
        self._buffers.clear()
        for name in saved:
            buffer = existing.get(name)
            if buffer is None:
                buffer = torch.zeros(self.num_bytes, dtype=torch.uint8)
            self.register_buffer(name, buffer)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
