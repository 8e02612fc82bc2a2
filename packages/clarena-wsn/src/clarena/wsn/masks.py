"""Storage for WSN's binary masks: per-task masks packed at one bit per parameter."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clarena.cl import pack_bits, unpack_bits


def parameter_key(layer_name: str, kind: str) -> str:
    """Key of a masked parameter: ``'<layer name>/weight'`` or ``'<layer name>/bias'``."""
    return f"{layer_name}/{kind}"


def _packed_size(shape: tuple[int, ...]) -> int:
    return (math.prod(shape) + 7) // 8


class TaskMaskStore(nn.Module):
    """Binary masks of every stored task, one bit per parameter.

    Task ``t``'s mask of parameter ``key`` is the ``uint8`` buffer ``tasks.<t>.<key>`` holding
    ``ceil(numel / 8)`` bytes (:func:`clarena.cl.pack_bits`), so ``state_dict()``, ``.to()`` and
    DDP carry them. Loading a state dict into a fresh store recreates the tasks it holds.

    Args:
        shapes: the shape of every masked parameter, by :func:`parameter_key`.
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

        Raises:
            ValueError: a key is missing or extra, or a mask's shape differs from the parameter's.
        """
        if set(masks) != set(self.shapes):
            raise ValueError(
                f"TaskMaskStore: masks must cover exactly the masked parameters; missing "
                f"{sorted(set(self.shapes) - set(masks))}, unknown {sorted(set(masks) - set(self.shapes))}."
            )
        packed = _PackedMasks()
        for key, shape in self.shapes.items():
            if tuple(masks[key].shape) != shape:
                raise ValueError(
                    f"TaskMaskStore: the mask of '{key}' has shape {tuple(masks[key].shape)}; "
                    f"the parameter has shape {shape}."
                )
            packed.register_buffer(key, pack_bits(masks[key]))
        self.tasks[str(task_id)] = packed

    def unpack(self, task_id: int) -> dict[str, Tensor]:
        """Task ``task_id``'s masks as bool tensors shaped like their parameters.

        Raises:
            KeyError: no mask is stored for ``task_id``.
        """
        packed = self.tasks[str(task_id)]
        return {
            key: unpack_bits(packed.get_buffer(key), shape) for key, shape in self.shapes.items()
        }

    def nbytes(self, task_id: int) -> int:
        """Bytes task ``task_id``'s stored masks occupy (``sum(ceil(numel / 8))`` over parameters)."""
        return sum(buffer.nbytes for buffer in self.tasks[str(task_id)].buffers())

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        marker = f"{prefix}tasks."
        for key in state_dict:
            if key.startswith(marker):
                task_key = key[len(marker) :].split(".", 1)[0]
                if task_key not in self.tasks:
                    packed = _PackedMasks()
                    for parameter, shape in self.shapes.items():
                        packed.register_buffer(
                            parameter,
                            torch.zeros(
                                _packed_size(shape),
                                dtype=torch.uint8,
                                device=self._device_anchor.device,
                            ),
                        )
                    self.tasks[task_key] = packed
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class _PackedMasks(nn.Module):
    """One task's packed masks: a ``uint8`` buffer per parameter key."""
