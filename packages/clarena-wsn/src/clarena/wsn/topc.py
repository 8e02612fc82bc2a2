"""Top-c% selection of parameters by score magnitude, the core of a WSN subnetwork.

A layer's subnetwork keeps exactly ``round(c * n)`` of its ``n`` parameters: those with the
largest ``|score|``. The threshold is found exactly without sorting the layer (``torch.quantile``
sorts all of it and refuses more than 2^24 elements): a strided sample of the layer brackets the
threshold, a few vectorised passes count what lies above the bracket and gather what lies inside
it, and ``kthvalue`` on that small remainder gives the exact value. When the bracket misses (an
adversarial layout of values), one ``kthvalue`` over the whole layer gives the same exact value.
Ties at the threshold go to the lower flattened index, so the mask is a deterministic function of
the scores whichever path found the threshold.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Below this many elements one ``kthvalue`` over the layer is the cheapest way.
_SAMPLED_MIN_NUMEL = 1 << 16
#: At most this many elements in the strided sample that brackets the threshold ...
_SAMPLE_SIZE = 1 << 16
#: ... and at most one element in this many.
_MIN_SAMPLE_STRIDE = 32


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
    flat = values.detach().reshape(-1)
    return _top_mask(flat, top_count(fraction, flat.numel())).reshape(values.shape)


def _top_mask(flat: Tensor, count: int) -> Tensor:
    """Flat bool mask of the ``count`` largest entries of 1-D ``flat`` (ties to lower index)."""
    numel = flat.numel()
    if count <= 0:
        return torch.zeros_like(flat, dtype=torch.bool)
    if count >= numel:
        return torch.ones_like(flat, dtype=torch.bool)
    found = _sampled_threshold(flat, count) if numel >= _SAMPLED_MIN_NUMEL else None
    if found is None:
        threshold = flat.kthvalue(numel - count + 1).values
        count_above = int((flat > threshold).count_nonzero())
        count_equal = int((flat == threshold).count_nonzero())
    else:
        threshold, count_above, count_equal = found
    needed = count - count_above
    if count_equal == needed:
        return flat >= threshold
    mask = flat > threshold
    # Ties straddle the threshold: keep the first ``needed`` of them in flattened order.
    mask[(flat == threshold).nonzero().squeeze(1)[:needed]] = True
    return mask


def _sampled_threshold(flat: Tensor, count: int) -> tuple[Tensor, int, int] | None:
    """The ``count``-th largest value of ``flat``, bracketed by a strided sample.

    Returns:
        ``(threshold, count_above, count_equal)`` — the exact value (0-d tensor), how many entries
        exceed it and how many equal it — or ``None`` when the sample's bracket misses.
    """
    numel = flat.numel()
    sample = flat[:: max(_MIN_SAMPLE_STRIDE, numel // _SAMPLE_SIZE)]
    size = sample.numel()
    # Rank of the threshold counted from the top of the sample, widened by 4 standard deviations
    # (at most sqrt(size)/2) on each side.
    expected = count * size / numel
    margin = 4 * math.isqrt(size) + 8
    upper_rank = math.floor(expected) - margin
    lower_rank = math.ceil(expected) + margin
    upper = sample.kthvalue(size - upper_rank + 1).values if upper_rank >= 1 else None
    lower = sample.kthvalue(size - min(lower_rank, size) + 1).values

    above_upper = flat > upper if upper is not None else None
    count_above_upper = int(above_upper.count_nonzero()) if above_upper is not None else 0
    at_or_above_lower = flat >= lower
    count_at_or_above_lower = int(at_or_above_lower.count_nonzero())
    if count_above_upper >= count or count_at_or_above_lower < count:
        return None
    if upper is not None and bool(upper == lower):
        return upper, count_above_upper, count_at_or_above_lower - count_above_upper
    inside = at_or_above_lower if above_upper is None else at_or_above_lower & ~above_upper
    candidates = flat[inside]
    rank = count - count_above_upper
    threshold = candidates.kthvalue(candidates.numel() - rank + 1).values
    count_above = count_above_upper + int((candidates > threshold).count_nonzero())
    return threshold, count_above, int((candidates == threshold).count_nonzero())


class _TopFractionSTE(torch.autograd.Function):
    """Top-c% mask in the forward pass; straight-through (identity) gradient in the backward."""

    @staticmethod
    def forward(ctx: object, magnitude: Tensor, fraction: float) -> Tensor:  # type: ignore[override]
        return top_fraction_mask(magnitude, fraction).to(magnitude.dtype)

    @staticmethod
    def backward(ctx: object, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
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
    return _TopFractionSTE.apply(score.abs(), fraction)
