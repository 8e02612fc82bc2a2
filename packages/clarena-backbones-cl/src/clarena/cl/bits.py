"""Binary masks packed at one bit per element, for storing per-task masks compactly."""

from __future__ import annotations

import torch
from torch import Tensor

_BIT_WEIGHTS = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_bits(mask: Tensor) -> Tensor:
    """Pack a binary mask of any shape into ``ceil(numel / 8)`` bytes.

    Args:
        mask: a bool tensor, or any tensor whose nonzero entries mean "on".

    Returns:
        A 1-D ``uint8`` tensor on ``mask``'s device; element ``i`` of the flattened mask is bit
        ``i % 8`` of byte ``i // 8``. Shape is not stored: :func:`unpack_bits` takes it.
    """
    flat = mask.reshape(-1) != 0
    padding = (-flat.numel()) % 8
    if padding:
        flat = torch.cat([flat, flat.new_zeros(padding)])
    weights = _BIT_WEIGHTS.to(flat.device)
    return (flat.view(-1, 8).to(torch.uint8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits`: the bool mask of ``shape`` packed in ``packed``.

    Raises:
        ValueError: ``packed`` has the wrong number of bytes for ``shape``.
    """
    numel = 1
    for size in shape:
        numel *= int(size)
    if packed.dtype != torch.uint8 or packed.numel() != (numel + 7) // 8:
        raise ValueError(
            f"unpack_bits: {packed.numel()} {packed.dtype} bytes cannot hold a mask of shape "
            f"{tuple(shape)} ({(numel + 7) // 8} uint8 bytes expected)."
        )
    weights = _BIT_WEIGHTS.to(packed.device)
    bits = (packed.view(-1, 1) & weights) != 0
    return bits.reshape(-1)[:numel].reshape(shape)
