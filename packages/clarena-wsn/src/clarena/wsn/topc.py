"""Top-c% selection of parameters by score magnitude, the core of a WSN subnetwork.

A layer's subnetwork keeps exactly ``round(c * n)`` of its ``n`` parameters: those with the
largest ``|score|``. The threshold (the ``round(c * n)``-th largest value) is found exactly
without sorting the layer (``torch.quantile`` sorts all of it and refuses more than 2^24
elements):

1. a bracket ``[lower, upper]`` that should hold the threshold: around the previous step's
   threshold when a :class:`ThresholdHint` has one (scores move little per step), else from a
   strided sample of the layer;
2. vectorised passes count the values above ``upper`` and gather the few inside the bracket,
   which proves the bracket holds the threshold;
3. ``kthvalue`` on the gathered values gives the exact threshold.

A bracket that misses is replaced (hint → sample → one ``kthvalue`` over the whole layer), so
every path gives the same exact threshold. Ties at the threshold go to the lower flattened index,
so the mask is a deterministic function of the values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

#: Below this many elements one ``kthvalue`` over the layer is the cheapest way.
_BRACKET_MIN_NUMEL = 1 << 14
#: Gathering by blocks of this many values pays when fewer than 1 in ``4 * _BLOCK`` is gathered.
_BLOCK = 64
#: Relative half-width of the first bracket around a hinted threshold, and the narrowest one.
_HINT_START_WIDTH = 1e-3
_HINT_MIN_WIDTH = 1e-6


#: ``(threshold, count_above, count_equal, scratch)``: the threshold (0-d tensor), how many
#: entries exceed it and how many equal it, and a spent float32 tensor shaped like the values
#: that the mask may be written into (or ``None``).
_Found = tuple[Tensor, int, int, Tensor | None]


@dataclass
class ThresholdHint:
    """The previous threshold of one parameter tensor, to bracket the next one cheaply.

    Purely a speed-up: the selected mask is exact and identical with or without a hint.

    Attributes:
        threshold: the last exact threshold, ``None`` before the first selection.
        width: relative half-width of the next bracket around ``threshold``: four times the
            threshold's last relative move.
    """

    threshold: float | None = None
    width: float = _HINT_START_WIDTH


def top_count(fraction: float, numel: int) -> int:
    """How many of ``numel`` parameters a top-``fraction`` mask keeps: ``round(fraction * numel)``.

    Python's ``round`` (half to even) is used, so ``top_count(0.5, 5) == 2``.
    """
    return round(fraction * numel)


def top_fraction_mask(values: Tensor, fraction: float) -> Tensor:
    """Bool mask of the ``round(fraction * numel)`` largest entries of ``values``.

    Args:
        values: a real tensor of any shape with no NaN; WSN passes ``|score|``.
        fraction: ``c`` in ``[0, 1]``.

    Returns:
        A bool tensor shaped like ``values`` with exactly :func:`top_count` ``True`` entries. Among
        entries equal to the threshold value, those with the lowest flattened index are kept.
    """
    flat = values.detach().reshape(-1).contiguous()
    return _top_mask(flat, top_count(fraction, flat.numel()), torch.bool).reshape(values.shape)


def _top_mask(
    flat: Tensor, count: int, dtype: torch.dtype, hint: ThresholdHint | None = None
) -> Tensor:
    """Flat 0/1 mask (of ``dtype``) of the ``count`` largest entries of 1-D ``flat``.

    Ties at the threshold go to the lower index. ``hint`` is read and updated.
    """
    numel = flat.numel()
    if count <= 0:
        return torch.zeros_like(flat, dtype=dtype)
    if count >= numel:
        return torch.ones_like(flat, dtype=dtype)
    found = _threshold(flat, count, hint)
    if found is None:
        # Small tensor: one kthvalue, then the >= mask is the answer unless ties straddle.
        threshold = flat.kthvalue(numel - count + 1).values
        mask = _at_or_above(flat, threshold, dtype)
        if _sum_count(mask if dtype == torch.float32 else mask.to(torch.float32)) == count:
            return mask
        count_above = _count(torch.gt, flat, threshold)
    else:
        threshold, count_above, count_equal, scratch = found
        if count_equal == count - count_above:
            return _at_or_above(flat, threshold, dtype, scratch)
    # Ties straddle the threshold: keep the first ``needed`` of them in flattened order.
    mask = flat > threshold
    mask[(flat == threshold).nonzero().squeeze(1)[: count - count_above]] = True
    return mask.to(dtype)


def _at_or_above(
    flat: Tensor, threshold: Tensor, dtype: torch.dtype, scratch: Tensor | None = None
) -> Tensor:
    """0/1 mask (of ``dtype``) of ``flat >= threshold``, written into ``scratch`` if it fits."""
    if dtype.is_floating_point:
        if scratch is None or scratch.dtype != dtype:
            scratch = torch.empty_like(flat, dtype=dtype)
        # Comparisons written straight into a float tensor run much faster than into bool.
        return torch.ge(flat, threshold, out=scratch)
    return (flat >= threshold).to(dtype)


def _threshold(flat: Tensor, count: int, hint: ThresholdHint | None) -> _Found | None:
    """The ``count``-th largest entry of ``flat`` (see :data:`_Found`).

    ``None`` for a tensor below ``_BRACKET_MIN_NUMEL`` elements: one ``kthvalue`` is cheapest.
    """
    numel = flat.numel()
    if numel < _BRACKET_MIN_NUMEL:
        return None
    found = None
    if hint is not None and hint.threshold is not None:
        center, half = hint.threshold, abs(hint.threshold) * hint.width
        found = _bracketed(flat, count, center - half, center + half)
    if found is None:
        found = _sampled(flat, count)
    if found is None:
        threshold = flat.kthvalue(numel - count + 1).values
        found = (
            threshold,
            _count(torch.gt, flat, threshold),
            _count(torch.eq, flat, threshold),
            None,
        )
    if hint is not None:
        threshold = float(found[0])
        if hint.threshold is not None and hint.threshold != 0:
            # Next bracket: four times this step's relative move of the threshold.
            moved = abs(threshold - hint.threshold) / abs(hint.threshold)
            hint.width = min(max(4 * moved, _HINT_MIN_WIDTH), 1.0)
        hint.threshold = threshold
    return found


def _sampled(flat: Tensor, count: int) -> _Found | None:
    """Bracket the threshold by a strided sample of ``flat`` (``None`` if it misses)."""
    numel = flat.numel()
    sample = flat[:: _sample_stride(numel)]
    size = sample.numel()
    # The threshold's rank counted from the top of the sample, widened by 4 standard deviations
    # (at most sqrt(size)/2 each) on both sides.
    expected = count * size / numel
    margin = 2 * math.isqrt(size) + 8
    upper_rank = math.floor(expected) - margin
    lower_rank = math.ceil(expected) + margin
    if upper_rank < 1 or lower_rank > size:
        return None
    upper = sample.kthvalue(size - upper_rank + 1).values
    lower = sample.kthvalue(size - lower_rank + 1).values
    return _bracketed(flat, count, lower, upper)


def _bracketed(
    flat: Tensor, count: int, lower: Tensor | float, upper: Tensor | float
) -> _Found | None:
    """The exact threshold if it lies in ``[lower, upper]``, else ``None``."""
    # Each entry is above ``upper``, inside the bracket or below ``lower``, exactly: inside is
    # (at or above lower) minus (above upper), both as float 0/1 tensors (fast on CPU).
    above = torch.gt(flat, upper, out=torch.empty_like(flat, dtype=torch.float32))
    count_above_upper = _sum_count(above)
    if count_above_upper >= count:
        return None
    inside = torch.ge(flat, lower, out=torch.empty_like(above)).sub_(above)
    count_inside = _sum_count(inside)
    rank = count - count_above_upper
    if rank > count_inside:
        return None
    candidates = _gather(flat, inside, count_inside)
    threshold = candidates.kthvalue(count_inside - rank + 1).values
    count_above = count_above_upper + int((candidates > threshold).count_nonzero())
    # ``above`` is spent: the mask can be written into it (a large fresh tensor costs page faults).
    return threshold, count_above, int((candidates == threshold).count_nonzero()), above


def _gather(flat: Tensor, inside: Tensor, count_inside: int) -> Tensor:
    """The entries of ``flat`` where the 0/1 float tensor ``inside`` is 1 (in any order).

    When they are rare, blocks holding none are skipped first: a float max per block is far
    cheaper than ``nonzero`` over the whole tensor.
    """
    numel = flat.numel()
    body = numel - numel % _BLOCK
    if count_inside * 4 * _BLOCK > numel or body == 0:
        return flat[inside.to(torch.bool)]
    blocks = inside[:body].view(-1, _BLOCK)
    hit = blocks.amax(dim=1).to(torch.bool).nonzero().squeeze(1)
    hit_inside = blocks.index_select(0, hit).to(torch.bool)
    picked = flat[:body].view(-1, _BLOCK).index_select(0, hit)[hit_inside]
    if body == numel:
        return picked
    return torch.cat([picked, flat[body:][inside[body:].to(torch.bool)]])


def _count(compare: Callable[..., Tensor], flat: Tensor, value: Tensor | float) -> int:
    """How many entries of ``flat`` satisfy ``compare(flat, value)``."""
    # Through a float32 0/1 tensor: much faster than a bool one on CPU.
    return _sum_count(compare(flat, value, out=torch.empty_like(flat, dtype=torch.float32)))


def _sum_count(indicator: Tensor) -> int:
    """Sum of a flat float32 0/1 tensor, exactly.

    A float32 sum is exact while the total stays within 2^24, so longer tensors are summed in
    chunks of 2^24 (a float64 sum would be exact too, but is several times slower on CPU).
    """
    return sum(int(chunk.sum()) for chunk in indicator.split(1 << 24))


@functools.cache
def _sample_stride(numel: int) -> int:
    """A prime stride near ``numel ** (1/3)`` (at least 17), giving ``~numel ** (2/3)`` samples.

    That size balances ``kthvalue`` on the sample against ``kthvalue`` on the values gathered
    from the bracket. A prime shares no factor with the layer's dimensions, so the sample does
    not keep hitting the same columns of a weight matrix (784 = 16 x 49 would with a stride of 16).
    """
    stride = max(17, round(numel ** (1 / 3)))
    while any(stride % divisor == 0 for divisor in range(2, math.isqrt(stride) + 1)):
        stride += 1
    return stride


class _ScoreMask(torch.autograd.Function):
    """Top-c% mask of ``|score|``; straight-through (identity) gradient to ``|score|``."""

    @staticmethod
    def forward(ctx: Any, magnitude: Tensor, fraction: float) -> Tensor:
        flat = magnitude.detach().reshape(-1)
        mask = _top_mask(flat, top_count(fraction, flat.numel()), magnitude.dtype)
        return mask.reshape(magnitude.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output, None


def score_mask(score: Tensor, fraction: float) -> Tensor:
    """WSN mask of a layer's parameters: 1 for the top-``fraction`` ``|score|``, else 0.

    The straight-through estimator treats the mask as ``|score|`` in the backward pass, so
    ``score`` receives ``sign(score) * dL/dmask``: a parameter whose use lowers the loss has its
    score magnitude raised.

    Args:
        score: the scores, shaped like the parameter they select.
        fraction: ``c`` in ``(0, 1]``.

    Returns:
        A float mask shaped and typed like ``score``, differentiable with respect to ``score``.
    """
    return _ScoreMask.apply(score.abs(), fraction)


class _MaskedParameter(torch.autograd.Function):
    """``parameter * mask`` with the score's top-c% mask, as one autograd node."""

    @staticmethod
    def forward(
        ctx: Any,
        parameter: Tensor,
        score: Tensor,
        fraction: float,
        hint: ThresholdHint | None,
    ) -> tuple[Tensor, Tensor]:
        flat = score.detach().abs().reshape(-1)
        mask = _top_mask(flat, top_count(fraction, flat.numel()), parameter.dtype, hint)
        mask = mask.reshape(score.shape)
        ctx.save_for_backward(parameter, score, mask)
        ctx.mark_non_differentiable(mask)
        return parameter * mask, mask

    @staticmethod
    def backward(
        ctx: Any, grad_masked: Tensor, grad_mask: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        parameter, score, mask = ctx.saved_tensors
        grad_parameter = grad_masked * mask if ctx.needs_input_grad[0] else None
        grad_score = None
        if ctx.needs_input_grad[1]:
            grad_score = grad_masked * parameter
            grad_score.mul_(score.sign())
        return grad_parameter, grad_score, None, None


def masked_parameter(
    parameter: Tensor, score: Tensor, fraction: float, hint: ThresholdHint | None = None
) -> tuple[Tensor, Tensor]:
    """A parameter restricted to its WSN subnetwork, with the straight-through score gradient.

    Equivalent to ``parameter * score_mask(score, fraction)`` but one autograd node, which is
    what a training step pays for every masked parameter.

    Args:
        parameter: a weight or bias.
        score: its scores, same shape.
        fraction: ``c`` in ``(0, 1]``.
        hint: this tensor's :class:`ThresholdHint`, kept between steps to find the threshold
            faster (the result does not depend on it).

    Returns:
        ``(parameter * mask, mask)``; ``mask`` is a 0/1 tensor of the parameter's dtype (no
        gradient of its own). Backward: ``dL/dparameter = g * mask`` and
        ``dL/dscore = g * parameter * sign(score)`` for the incoming gradient ``g``.
    """
    return _MaskedParameter.apply(parameter, score, fraction, hint)
