"""Top-c% selection with no host synchronisation: for ``torch.compile`` and accelerators.

The CPU selection in :mod:`clarena.wsn.topc` reads counts back to Python (``int(...)``,
``kthvalue``, ``nonzero``) to skip work, which stalls an accelerator and breaks a
``fullgraph=True`` graph. This one keeps every value a tensor and every shape fixed, and selects
exactly the same entries (``round(c * n)`` of them, ties at the threshold to the lower flattened
index):

1. each value becomes an integer key of the same width whose order is the values' order (the
   IEEE bit pattern, negative values' magnitude bits flipped; ``-0.0`` counts as ``0.0``);
2. the threshold key, the largest ``t`` with at least ``k`` keys ``>= t``, is built one bit at a
   time from the top: one compare-and-count pass over the layer per bit (32 for float32), each a
   single fused reduction under ``torch.compile``. Only the 0-d candidate is turned from key to
   value: the passes compare the values themselves, which compiles to vectorised code (a
   key tensor's bit casts do not);
3. keys above ``t`` are kept, and of the keys equal to ``t`` the first ``k - count_above`` in
   flattened order (a cumulative sum).

``k = round(c * n)`` is computed as a tensor in float64, which gives Python's ``round(c * n)``
(half to even) exactly, so ``mask_percentage`` can enter a compiled graph as a 0-d tensor
without a recompile per value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

#: Integer dtype of the same width as each floating dtype, to read its bit pattern.
_BITS: dict[torch.dtype, torch.dtype] = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}

#: Bit pattern of ``-inf`` in each floating dtype, read as an unsigned integer.
_NEGATIVE_INFINITY_BITS: dict[torch.dtype, int] = {
    torch.float64: 0xFFF0000000000000,
    torch.float32: 0xFF800000,
    torch.float16: 0xFC00,
    torch.bfloat16: 0xFF80,
}


def _negative_infinity_key(dtype: torch.dtype, width: int) -> int:
    """The key :func:`order_keys` gives ``-inf``: keys below it are negative NaN patterns."""
    signed = _NEGATIVE_INFINITY_BITS[dtype] - (1 << width)
    return signed ^ ((1 << (width - 1)) - 1)


def _key_value(key: Tensor, dtype: torch.dtype, width: int) -> Tensor:
    """The value (0-d, of ``dtype``) whose key is the 0-d ``key``; ``-inf`` below ``-inf``'s key.

    Comparing values with it counts exactly the keys at or above ``key``: a key in the negative
    NaN patterns (below every real value) becomes ``-inf``, which every value reaches; a key in
    the positive NaN patterns (above every value) compares false, as no key reaches it.
    """
    bits = torch.where(key < 0, key ^ ((1 << (width - 1)) - 1), key)
    value = bits.to(_BITS[dtype]).view(dtype)
    floor = _negative_infinity_key(dtype, width)
    return torch.where(key < floor, torch.full_like(value, float("-inf")), value)


def top_count_tensor(fraction: Tensor, numel: int) -> Tensor:
    """``round(fraction * numel)`` (half to even) as a 0-d int64 tensor, like :func:`top_count`.

    Args:
        fraction: 0-d tensor ``c`` in ``[0, 1]``; computed in float64, where ``c * numel`` is
            the same double Python's ``c * numel`` is.
        numel: the layer's element count (below 2^53).
    """
    return torch.round(fraction.to(torch.float64) * numel).to(torch.int64)


def order_keys(values: Tensor) -> Tensor:
    """Integer keys of a floating tensor, in the same order as its values (no NaN).

    float64 gives int64 keys; float32, float16 and bfloat16 give int32 keys. ``-0.0`` and ``0.0``
    get the same key, as they compare equal.
    """
    if values.dtype not in _BITS:
        raise TypeError(
            f"order_keys needs a float64, float32, float16 or bfloat16 tensor; got {values.dtype}."
        )
    width = values.element_size() * 8
    values = torch.where(values == 0, torch.zeros_like(values), values)
    bits = values.view(_BITS[values.dtype])
    # Negative values: the larger the magnitude bits, the smaller the value, so flip them.
    keys = bits ^ ((bits >> (width - 1)) & ((1 << (width - 1)) - 1))
    return keys if width >= 32 else keys.to(torch.int32)


def top_mask_sync_free(flat: Tensor, count: Tensor) -> Tensor:
    """Bool mask of the ``count`` largest entries of 1-D ``flat``; ties to the lower index.

    Args:
        flat: 1-D floating tensor with no NaN.
        count: 0-d int64 tensor ``k`` in ``[0, flat.numel()]`` (on ``flat``'s device).

    Returns:
        A bool tensor shaped like ``flat`` with exactly ``k`` ``True`` entries, computed without
        reading any value back to the host and with shapes that do not depend on the values.
    """
    width = flat.element_size() * 8
    # -0.0 and 0.0 compare equal, as their shared key says.
    lowest = -(1 << (width - 1))
    # Counts fit int32 below 2^31 entries, and int32 sums run faster than int64 ones.
    index_dtype = torch.int32 if flat.numel() < 1 << 31 else torch.int64
    key_dtype = torch.int64 if width == 64 else torch.int32
    zero = torch.zeros((), dtype=key_dtype, device=flat.device)
    # The threshold key t: the largest with at least `count` keys >= t. Its sign bit first; then,
    # with the sign fixed, setting a lower bit raises a two's-complement value, so each bit
    # from the top is kept when enough values still reach the candidate's value.
    threshold = torch.where((flat >= 0).sum(dtype=index_dtype) >= count, zero, zero + lowest)
    for bit in range(width - 2, -1, -1):
        candidate = threshold | (1 << bit)
        value = _key_value(candidate, flat.dtype, width)
        reached = (flat >= value).sum(dtype=index_dtype)
        threshold = torch.where(reached >= count, candidate, threshold)
    value = _key_value(threshold, flat.dtype, width)
    above = flat > value
    ties = flat == value
    needed = count - above.sum(dtype=index_dtype)
    return above | (ties & (ties.cumsum(0, dtype=index_dtype) <= needed))


def top_fraction_mask_sync_free(values: Tensor, fraction: Tensor | float) -> Tensor:
    """Bool mask of the ``round(fraction * numel)`` largest entries of ``values``, sync-free.

    Identical to :func:`~clarena.wsn.top_fraction_mask`; see this module's docstring.

    Args:
        values: a floating tensor of any shape (contiguous or not) with no NaN.
        fraction: ``c`` in ``[0, 1]``, a Python float or a 0-d tensor.
    """
    flat = values.detach().reshape(-1)
    if not isinstance(fraction, Tensor):
        fraction = torch.tensor(fraction, dtype=torch.float64, device=values.device)
    count = top_count_tensor(fraction.to(values.device), flat.numel())
    return top_mask_sync_free(flat, count).reshape(values.shape)


class StraightThroughMask(torch.autograd.Function):
    """Top-c% mask of ``|score|`` (sync-free); identity (straight-through) gradient."""

    @staticmethod
    def forward(ctx: Any, magnitude: Tensor, fraction: Tensor) -> Tensor:
        return top_fraction_mask_sync_free(magnitude, fraction).to(magnitude.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output, None


def masked_parameters_sync_free(
    parameters: Sequence[Tensor],
    scores: Sequence[Tensor],
    fraction: Tensor | float,
) -> tuple[list[Tensor], list[Tensor]]:
    """:func:`~clarena.wsn.masked_parameters` with the sync-free selection, for compiled graphs.

    Same values and gradients: ``parameter * mask``; ``dL/dparameter = g * mask`` and
    ``dL/dscore = g * parameter * sign(score)``.

    Args:
        parameters: weights and biases.
        scores: their scores, same shapes.
        fraction: ``c`` in ``(0, 1]``, a Python float or a 0-d tensor.

    Returns:
        ``(masked, masks)`` as :func:`~clarena.wsn.masked_parameters` returns them.
    """
    masked: list[Tensor] = []
    masks: list[Tensor] = []
    for parameter, score in zip(parameters, scores, strict=True):
        mask = StraightThroughMask.apply(score.abs(), fraction)
        masked.append(parameter * mask)
        masks.append(mask.detach().to(parameter.dtype))
    return masked, masks
