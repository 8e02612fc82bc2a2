"""Per-task binary masks stored at one bit per element, for every mask-based backbone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clarena.cl.bits import pack_bits, unpack_bits
from clarena.cl.state import create_saved_children


class TaskMaskStore(nn.Module):
    """Binary masks of every stored task, packed at one bit per element.

    A mask method decides what its masks cover: HAT one flat vector over all units, WSN one mask
    per weight and bias. Task ``t``'s mask of ``key`` is the ``uint8`` buffer ``tasks.<t>.<key>``
    of ``ceil(numel / 8)`` bytes (:func:`clarena.cl.pack_bits`), so ``state_dict()``, ``.to()``
    and DDP carry them; loading a state dict into a fresh store recreates the tasks it holds.

    Args:
        shapes: the shape of each mask of a task, by key (a key may hold ``/`` but not ``.``).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.shapes: dict[str, tuple[int, ...]] = {key: tuple(s) for key, s in shapes.items()}
        self.tasks = nn.ModuleDict()
        # Follows .to() so masks recreated by load_state_dict land on the model's device.
        self.register_buffer("_device_anchor", torch.empty(0, dtype=torch.uint8), persistent=False)

    @property
    def task_ids(self) -> list[int]:
        """Ids of the tasks with a stored mask, in storing order."""
        return [int(key) for key in self.tasks]

    def __contains__(self, task_id: object) -> bool:
        return str(task_id) in self.tasks

    def store(self, task_id: int, masks: Mapping[str, Tensor]) -> None:
        """Pack and keep ``masks`` (one per key of :attr:`shapes`) as task ``task_id``'s masks.

        Storing a task again replaces its masks and keeps its place in the storing order.

        Raises:
            ValueError: a key is missing or extra, or a mask's shape differs from its key's.
        """
        owner = type(self).__name__
        if set(masks) != set(self.shapes):
            raise ValueError(
                f"{owner}: masks must cover exactly the masked keys; missing "
                f"{sorted(set(self.shapes) - set(masks))}, unknown "
                f"{sorted(set(masks) - set(self.shapes))}."
            )
        packed = _PackedMasks()
        for key, shape in self.shapes.items():
            if tuple(masks[key].shape) != shape:
                raise ValueError(
                    f"{owner}: the mask of '{key}' has shape {tuple(masks[key].shape)}; "
                    f"expected {shape}."
                )
            packed.register_buffer(key, pack_bits(masks[key]))
        self.tasks[str(task_id)] = packed

    def unpack(self, task_id: int) -> dict[str, Tensor]:
        """Task ``task_id``'s masks as bool tensors of their keys' shapes.

        Raises:
            KeyError: no mask is stored for ``task_id``.
        """
        packed = self.tasks[str(task_id)]
        return {
            key: unpack_bits(packed.get_buffer(key), shape) for key, shape in self.shapes.items()
        }

    def nbytes(self, task_id: int) -> int:
        """Bytes task ``task_id``'s stored masks occupy (``sum(ceil(numel / 8))`` over keys)."""
        return sum(buffer.nbytes for buffer in self.tasks[str(task_id)].buffers())

    def _empty_task(self) -> nn.Module:
        packed = _PackedMasks()
        device = self.get_buffer("_device_anchor").device
        for key, shape in self.shapes.items():
            size = (math.prod(shape) + 7) // 8
            packed.register_buffer(key, torch.zeros(size, dtype=torch.uint8, device=device))
        return packed

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        create_saved_children(
            self.tasks, state_dict, f"{prefix}tasks.", lambda _: self._empty_task()
        )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _PackedMasks(nn.Module):
    """One task's packed masks: a ``uint8`` buffer per key."""
