"""Top-c% selection of parameters by score magnitude, the core of a WSN subnetwork.

A layer's subnetwork keeps exactly ``round(c * n)`` of its ``n`` parameters: those with the
largest ``|score|``. The threshold (the ``round(c * n)``-th largest value) is found exactly
without sorting the layer (``torch.quantile`` sorts all of it and refuses more than 2^24
elements):

0. during training, with a :class:`ThresholdHint` holding a value ``t0`` that separated the
   previous step's selection: the mask ``|score| >= t0`` is counted; when it does not hold
   exactly ``round(c * n)`` entries, only the thin window between ``t0`` and
   ``t0 (1 -/+ width)`` is gathered and the entries crossing are added or dropped (scores move
   little per step, so few do);
1. otherwise a bracket ``[lower, upper]`` that should hold the threshold: around the previous
   step's threshold when a hint has one, else from a strided sample of the layer;
2. vectorised passes count the values above ``upper`` and gather the few inside the bracket,
   which proves the bracket holds the threshold;
3. ``kthvalue`` on the gathered values gives the exact threshold.

A bracket that misses is replaced (hint → sample → one ``kthvalue`` over the whole layer), so
every path gives the same exact threshold. Ties at the threshold go to the lower flattened index,
so the mask is a deterministic function of the values.

These paths read counts back to Python, so they serve eager CPU tensors only. Under
``torch.compile`` or for tensors on an accelerator, the public functions here use the selection
of :mod:`clarena.wsn.topc_sync_free` instead, which gives the same masks with no host
synchronisation.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from clarena.wsn.topc_sync_free import (
    StraightThroughMask,
    masked_parameters_sync_free,
    top_fraction_mask_sync_free,
)

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
        threshold: a value separating the last selection: every kept magnitude is at or above
            it, every other one below (halfway between them where known); ``None`` before the
            first selection.
        width: relative half-width of the next bracket around ``threshold``: four times the
            threshold's last relative move.
        scratch: a reused buffer for ``|score|`` (and ``sign(score)`` in backward) of a large
            tensor; it never holds anything kept beyond the call that writes it.
    """

    threshold: float | None = None
    width: float = _HINT_START_WIDTH
    scratch: Tensor | None = field(default=None, repr=False, compare=False)

    def workspace(self, score: Tensor) -> Tensor | None:
        """The reused buffer shaped like a large ``score`` (made on first use), else ``None``."""
        if score.numel() < _BRACKET_MIN_NUMEL:
            return None
        buffer = self.scratch
        if (
            buffer is None
            or buffer.shape != score.shape
            or buffer.dtype != score.dtype
            or buffer.device != score.device
        ):
            buffer = self.scratch = torch.empty(score.shape, dtype=score.dtype, device=score.device)
        return buffer


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
    if _sync_free(values):
        return top_fraction_mask_sync_free(values, fraction)
    flat = values.detach().reshape(-1).contiguous()
    return _top_mask(flat, top_count(fraction, flat.numel()), torch.bool).reshape(values.shape)


def _sync_free(*tensors: Tensor) -> bool:
    """Whether to select without host synchronisation: compiling, or a tensor off the CPU."""
    return torch.compiler.is_compiling() or any(t.device.type != "cpu" for t in tensors)


def _top_mask(
    flat: Tensor,
    count: int,
    dtype: torch.dtype,
    hint: ThresholdHint | None = None,
    trial: tuple[Tensor, int] | None = None,
) -> Tensor:
    """Flat 0/1 mask (of ``dtype``) of the ``count`` largest entries of 1-D ``flat``.

    Ties at the threshold go to the lower index. ``hint`` is read and updated; ``trial`` is the
    float32 mask ``flat >= hint.threshold`` and its count, when the caller has them already.
    """
    numel = flat.numel()
    if count <= 0:
        return torch.zeros_like(flat, dtype=dtype)
    if count >= numel:
        return torch.ones_like(flat, dtype=dtype)
    if hint is not None:
        incremental = _incremental_mask(flat, count, hint, trial)
        if incremental is not None:
            return incremental if dtype == torch.float32 else incremental.to(dtype)
    found = _threshold(flat, count, hint)
    if found is None:
        # Small tensor: one kthvalue, then the >= mask is the answer unless ties straddle.
        threshold = flat.kthvalue(numel - count + 1).values
        if hint is not None:
            below = float(flat.kthvalue(numel - count).values)
            hint.threshold = _between(below, float(threshold), flat.dtype)
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


def _incremental_mask(
    flat: Tensor, count: int, hint: ThresholdHint, trial: tuple[Tensor, int] | None = None
) -> Tensor | None:
    """Float32 0/1 mask of the ``count`` largest entries, found from the hint's threshold ``t0``.

    ``flat >= t0`` is counted; the entries to add (too few) or drop (too many) all lie in the
    window between ``t0`` and ``t0 (1 -/+ width)``, which is gathered and ranked alone. Ties at
    the new threshold go to the lower index, as everywhere. Returns ``None`` (hint widened) when
    the window does not reach the threshold or there is no positive hint. ``trial``: the mask
    ``flat >= t0`` (float32, flat) and its count, if already computed.
    """
    previous = hint.threshold
    if previous is None or not _usable(previous):
        return None
    if trial is None:
        mask = torch.ge(flat, previous, out=torch.empty_like(flat, dtype=torch.float32))
        selected = _sum_count(mask)
    else:
        mask, selected = trial
    if selected == count:
        return mask
    adding = selected < count
    bound = previous * (1 - hint.width if adding else 1 + hint.width)
    window = torch.ge(flat, bound, out=torch.empty_like(mask))
    reached = _sum_count(window)
    if reached == count:
        # The window's far end selects exactly: it is the mask, and the next hint.
        hint.width = min(max(4 * hint.width, _HINT_MIN_WIDTH), 1.0)
        hint.threshold = bound
        return window
    if (reached < count) if adding else (reached > count):
        hint.width = min(8 * hint.width, 1.0)
        return None
    if adding:
        # Window [bound, t0): its `rank` largest entries join the mask.
        torch.sub(window, mask, out=window)
        window_size, rank = reached - selected, count - selected
    else:
        # Window [t0, bound): its `rank` largest entries stay, the others leave.
        torch.sub(mask, window, out=window)
        window_size, rank = selected - reached, count - reached
    index = _indices(window, window_size)
    values = flat[index]
    threshold = values.kthvalue(window_size - rank + 1).values
    top = values > threshold
    ties = (values == threshold).nonzero().squeeze(1)
    top[ties[: rank - int(top.count_nonzero())]] = True
    if adding:
        mask[index[top]] = 1.0
    else:
        mask[index[~top]] = 0.0
    new = float(threshold)
    hint.width = min(max(4 * abs(new - previous) / previous, _HINT_MIN_WIDTH), 1.0)
    # The largest entry left out: in the window if any is, else below the window's near end.
    rest = values[~top]
    below = float(rest.max()) if rest.numel() else (bound if adding else previous)
    hint.threshold = _between(below, new, flat.dtype)
    return mask


def _between(below: float, threshold: float, dtype: torch.dtype) -> float:
    """A value in ``(below, threshold]`` representable in ``dtype``: the next step's hint.

    The midpoint between the smallest kept entry and the largest one left out selects the same
    entries, and keeps selecting them while both drift a little: an entry that sits exactly on
    the hint would leave the mask at its first downward step.
    """
    middle = torch.tensor((below + threshold) / 2, dtype=dtype).item()
    return middle if below < middle <= threshold else threshold


def _usable(threshold: float | None) -> bool:
    """Whether a hinted threshold can start an incremental selection (positive and finite)."""
    return threshold is not None and threshold > 0 and math.isfinite(threshold)


def _indices(indicator: Tensor, count: int) -> Tensor:
    """Ascending flat indices where the float 0/1 tensor ``indicator`` is 1 (``count`` of them).

    When they are rare, blocks holding none are skipped first: a float max per block is far
    cheaper than ``nonzero`` over the whole tensor.
    """
    numel = indicator.numel()
    body = numel - numel % _BLOCK
    if count * 4 * _BLOCK > numel or body == 0:
        return indicator.to(torch.bool).nonzero().squeeze(1)
    blocks = indicator[:body].view(-1, _BLOCK)
    hit = blocks.amax(dim=1).to(torch.bool).nonzero().squeeze(1)
    local = blocks.index_select(0, hit).to(torch.bool).nonzero()
    index = hit[local[:, 0]] * _BLOCK + local[:, 1]
    if body == numel:
        return index
    tail = indicator[body:].to(torch.bool).nonzero().squeeze(1) + body
    return torch.cat([index, tail])


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
        kth = flat.kthvalue(numel - count + 1).values
        found = (
            kth,
            _count(torch.gt, flat, kth),
            _count(torch.eq, flat, kth),
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
    """The entries of ``flat`` where the 0/1 float tensor ``inside`` is 1 (``count_inside``)."""
    return flat[_indices(inside, count_inside)]


def _count(compare: Callable[..., Tensor], flat: Tensor, value: Tensor | float) -> int:
    """How many entries of ``flat`` satisfy ``compare(flat, value)``."""
    # Through a float32 0/1 tensor: much faster than a bool one on CPU.
    return _sum_count(compare(flat, value, out=torch.empty_like(flat, dtype=torch.float32)))


def _sum_count(indicator: Tensor) -> int:
    """Sum of a flat float32 0/1 tensor, exactly.

    A float32 sum is exact while the total stays within 2^24, so longer tensors are summed in
    chunks of 2^24 (a float64 sum would be exact too, but is several times slower on CPU).
    """
    if indicator.numel() <= 1 << 24:
        return int(indicator.sum())
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
    if _sync_free(score):
        return cast(Tensor, StraightThroughMask.apply(score.abs(), fraction))
    return _ScoreMask.apply(score.abs(), fraction)


class _MaskedParameters(torch.autograd.Function):
    """``parameter * mask`` for several parameters at once, as one autograd node.

    Inputs: ``count``, the parameters' workspaces (or ``None``), whether the outputs are private
    (see :func:`masked_parameters`), then ``count`` parameters, their scores and their 0/1
    masks. Backward gives ``g * mask`` to each parameter and the straight-through
    ``g * parameter * sign(score)`` to each score, with one fused (``torch._foreach``) kernel
    call per term for all parameters.
    """

    @staticmethod
    def forward(
        ctx: Any,
        count: int,
        workspaces: Sequence[Tensor | None],
        private: bool,
        *tensors: Tensor,
    ) -> tuple[Tensor, ...]:
        ctx.count = count
        ctx.workspaces = workspaces
        ctx.private = private
        ctx.save_for_backward(*tensors)
        # Outputs that get no gradient are left as None rather than filled with zeros.
        ctx.set_materialize_grads(False)
        return tuple(torch._foreach_mul(tensors[:count], tensors[2 * count :]))

    @staticmethod
    def backward(ctx: Any, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        count = ctx.count
        saved = ctx.saved_tensors
        parameters, scores, masks = saved[:count], saved[count : 2 * count], saved[2 * count :]
        needs = ctx.needs_input_grad[3:]
        grad_parameters: list[Tensor | None] = [None] * count
        grad_scores: list[Tensor | None] = [None] * count
        live = {i: grad for i, grad in enumerate(grads) if grad is not None}
        # The score term reads the incoming gradient, so it goes first.
        wanted = [i for i in live if needs[count + i]]
        if wanted:
            products = torch._foreach_mul(
                [live[i] for i in wanted], [parameters[i] for i in wanted]
            )
            signs = _elementwise(
                [scores[i] for i in wanted],
                [ctx.workspaces[i] for i in wanted],
                torch._foreach_sign,
                torch.sign,
            )
            torch._foreach_mul_(products, signs)
            for i, product in zip(wanted, products, strict=True):
                grad_scores[i] = product
        wanted = [i for i in live if needs[i]]
        if wanted:
            incoming = [live[i] for i in wanted]
            factors = [masks[i] for i in wanted]
            if ctx.private and all(_writable(g, m) for g, m in zip(incoming, factors, strict=True)):
                # Nothing else reads these gradients: masking them in place saves allocating
                # (and page-faulting) a parameter-sized tensor each.
                torch._foreach_mul_(incoming, factors)
                products = tuple(incoming)
            else:
                products = torch._foreach_mul(incoming, factors)
            for i, product in zip(wanted, products, strict=True):
                grad_parameters[i] = product
        return (None, None, None, *grad_parameters, *grad_scores, *([None] * count))


def _writable(grad: Tensor, mask: Tensor) -> bool:
    """Whether ``grad *= mask`` in place gives the same tensor ``grad * mask`` would."""
    return (
        grad.is_contiguous()
        and not grad.requires_grad
        and grad.shape == mask.shape
        and grad.dtype == torch.promote_types(grad.dtype, mask.dtype)
    )


def _elementwise(
    scores: Sequence[Tensor],
    workspaces: Sequence[Tensor | None],
    fused: Callable[[list[Tensor]], Sequence[Tensor]],
    single: Callable[..., Tensor],
) -> list[Tensor]:
    """``single(score)`` of each score: written into its workspace if it has one, the others
    computed by one ``fused`` (``torch._foreach_*``) call.

    A workspace only holds values used at once (a forward's selection, or a backward's score
    gradient), so borrowing it saves a fresh allocation of a large tensor.
    """
    results: list[Tensor | None] = [None] * len(scores)
    small = [i for i, workspace in enumerate(workspaces) if workspace is None]
    if small:
        for i, value in zip(small, fused([scores[i] for i in small]), strict=True):
            results[i] = value
    with torch.no_grad():  # out= refuses autograd, as in a create_graph backward
        for i, workspace in enumerate(workspaces):
            if workspace is not None:
                results[i] = single(scores[i], out=workspace)
    # Every index is a small score (fused) or has a workspace (single), so none is left None.
    return cast("list[Tensor]", results)


def _hinted_trials(
    magnitudes: Sequence[Tensor], hints: Sequence[ThresholdHint | None]
) -> list[tuple[Tensor, int] | None]:
    """Per magnitude with a usable hint: the float32 mask at the hinted threshold, and its count.

    The counts are read in one go (one device synchronisation); a float32 sum of 0/1 values is
    exact below 2^24 entries (larger tensors are left to the caller). ``torch._foreach_norm``
    would fuse the sums but is several times slower on CPU.
    """
    hinted = [
        (i, hint.threshold)
        for i, hint in enumerate(hints)
        if hint is not None
        and hint.threshold is not None
        and _usable(hint.threshold)
        and magnitudes[i].numel() < 1 << 24
    ]
    trials: list[tuple[Tensor, int] | None] = [None] * len(magnitudes)
    if not hinted:
        return trials
    masks = [
        torch.ge(magnitudes[i], threshold, out=torch.empty_like(magnitudes[i], dtype=torch.float32))
        for i, threshold in hinted
    ]
    sums = [mask.sum() for mask in masks]
    if len({total.device for total in sums}) == 1:
        counts = torch.stack(sums).tolist()  # one device synchronisation for all
    else:  # a model spread over devices
        counts = [total.item() for total in sums]
    for (i, _), mask, count in zip(hinted, masks, counts, strict=True):
        trials[i] = (mask, round(count))
    return trials


def masked_parameters(
    parameters: Sequence[Tensor],
    scores: Sequence[Tensor],
    fraction: float,
    hints: Sequence[ThresholdHint | None] | None = None,
    *,
    private: bool = False,
) -> tuple[list[Tensor], list[Tensor]]:
    """Several parameters restricted to their WSN subnetworks, as one autograd node.

    The batched form of :func:`masked_parameter` that a WSN backbone's training forward uses: a
    step pays one autograd node, and one fused kernel call per elementwise term, for all its
    parameters. With hints, each mask is first tried at the previous step's threshold, all of
    them counted in one call; only a parameter whose count is off searches further.

    Args:
        parameters: weights and biases.
        scores: their scores, same shapes.
        fraction: ``c`` in ``(0, 1]``.
        hints: one :class:`ThresholdHint` (or ``None``) per parameter.
        private: the masked values feed only the caller's own layers (no hooks, no
            ``retain_grad``, no other use of their gradients), so backward may mask their
            incoming gradients in place; WSN backbones pass ``True``.

    Returns:
        ``(masked, masks)``: ``parameter * mask`` per parameter, and the 0/1 masks (of each
        parameter's dtype, no gradient of their own).

    Raises:
        ValueError: not one score per parameter.
    """
    if len(parameters) != len(scores):
        raise ValueError(
            f"masked_parameters needs one score per parameter; got {len(parameters)} parameters "
            f"and {len(scores)} scores."
        )
    if not parameters:
        return [], []
    if _sync_free(*scores):
        return masked_parameters_sync_free(parameters, scores, fraction)
    hints = [None] * len(parameters) if hints is None else list(hints)
    workspaces = [
        None if hint is None else hint.workspace(score)
        for score, hint in zip(scores, hints, strict=True)
    ]
    masks: list[Tensor] = []
    with torch.no_grad():
        magnitudes = _elementwise(scores, workspaces, torch._foreach_abs, torch.abs)
        trials = _hinted_trials(magnitudes, hints)
        for parameter, magnitude, hint, trial in zip(
            parameters, magnitudes, hints, trials, strict=True
        ):
            count = top_count(fraction, magnitude.numel())
            if trial is not None and trial[1] == count:
                # The previous threshold still selects exactly: the common case in training.
                mask = trial[0]
                masks.append(mask if mask.dtype == parameter.dtype else mask.to(parameter.dtype))
                continue
            first = None if trial is None else (trial[0].view(-1), trial[1])
            mask = _top_mask(magnitude.view(-1), count, parameter.dtype, hint, first)
            masks.append(mask.view(magnitude.shape))
    masked = _MaskedParameters.apply(
        len(parameters), workspaces, private, *parameters, *scores, *masks
    )
    return list(masked), masks


def masked_parameter(
    parameter: Tensor, score: Tensor, fraction: float, hint: ThresholdHint | None = None
) -> tuple[Tensor, Tensor]:
    """A parameter restricted to its WSN subnetwork, with the straight-through score gradient.

    Equivalent to ``parameter * score_mask(score, fraction)`` but one autograd node.

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
    masked, masks = masked_parameters([parameter], [score], fraction, [hint])
    return masked[0], masks[0]
