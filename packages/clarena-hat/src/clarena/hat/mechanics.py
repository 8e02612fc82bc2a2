"""HAT and AdaHAT mechanics as plain functions a training loop calls.

A training step of task ``t`` with a backbone ``backbone`` that has :class:`~clarena.hat.HAT`
``hat`` attached (``hat = hat_of(backbone)``)::

    s = annealed_scale(s_max, batch_idx, num_batches)   # once per optimiser step
    feature, mask, _ = backbone(x, "train", scale=s)
    loss = criterion(heads(feature, t), y)
    loss = loss + reg_factor * sparsity_regularization(mask, hat.cumulative_mask())
    loss.backward()                                # every micro-batch, if accumulating
    # once per optimiser step, on the accumulated (and unscaled) gradient:
    condition_gradients(backbone)                  # HAT; or adahat_condition_gradients(...)
    compensate_embedding_gradients(backbone, s, s_max)
    optimizer.step()
    clamp_task_embedding(backbone)

With gradient accumulation, ``batch_idx`` and ``num_batches`` count optimiser steps, so all
micro-batches of a step share ``s``. Before the task: ``backbone.setup_task_id(t)``, a new
optimiser, ``hat.check_optimizer(optimizer)`` (and :func:`check_adahat_optimizer` for AdaHAT).
After it: ``hat.end_task(t)``. Every function here takes the backbone or the method.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

from clarena.cl import CLBackbone, TaskBatchNorm
from clarena.cl.optim import check_optimizer as _check_optimizer
from clarena.hat._layers import layer_weight
from clarena.hat.measures import input_unit_measure, weight_measure
from clarena.hat.method import HAT, annealed_scale, hat_of

#: What the functions here take: a backbone with :class:`~clarena.hat.HAT` attached, or the method.
HATTarget = CLBackbone | HAT

_T = TypeVar("_T")

__all__ = [
    "adahat_condition_gradients",
    "annealed_scale",
    "check_adahat_optimizer",
    "check_optimizer",
    "clamp_task_embedding",
    "compensate_embedding_gradients",
    "condition_gradients",
    "layer_sparsity",
    "sparsity_regularization",
    "uncovered_parameters",
]


def check_optimizer(optimizer: torch.optim.Optimizer, require_fresh: bool = True) -> None:
    """Deprecated: use ``HAT.check_optimizer(optimizer, at_task_start=...)`` (the mask-method
    contract) or :func:`clarena.cl.check_optimizer`.

    Forwards to :func:`clarena.cl.check_optimizer` with ``owner='HAT'``: weight decay moves
    weights whose gradient was zeroed, and momentum/Adam state carried over from an earlier task
    moves them too.

    Args:
        optimizer: the optimiser about to train the current task.
        require_fresh: also refuse an optimiser that already holds state (has taken steps).

    Raises:
        ValueError: a parameter group has ``weight_decay > 0`` (note that ``AdamW`` defaults to
            0.01), or the optimiser holds state and ``require_fresh``.
    """
    warnings.warn(
        "clarena.hat.check_optimizer is deprecated; call backbone.mask_method.check_optimizer("
        "optimizer, at_task_start=...) or clarena.cl.check_optimizer(optimizer, owner='HAT').",
        DeprecationWarning,
        stacklevel=2,
    )
    _check_optimizer(optimizer, require_fresh=require_fresh, owner="HAT")


# Optimisers whose update is linear in the gradient, so a constant gradient factor survives.
_LINEAR_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (torch.optim.SGD,)


def check_adahat_optimizer(
    optimizer: type[torch.optim.Optimizer] | torch.optim.Optimizer, owner: str = "AdaHAT"
) -> None:
    """Refuse an optimiser that would cancel AdaHAT's soft gradient factor.

    AdaHAT multiplies a protected parameter's gradient by a factor ``0 < f < 1`` that stays the
    same from step to step. Adaptive optimisers (Adam, AdamW, RMSprop, Adagrad, Adadelta, NAdam,
    RAdam, Adamax, Rprop ...) divide the update by a running scale of the gradient, so the factor
    cancels, ``(f m) / sqrt(f^2 v) = m / sqrt(v)``, and the protected parameters move as freely as
    the others. Only SGD (with or without momentum) keeps the factor; HAT's hard 0/1 factor is not
    affected, so :func:`check_optimizer` alone suffices for HAT.

    Args:
        optimizer: the optimiser, or its class (to check a configuration before training).
        owner: the algorithm named in the error.

    Raises:
        ValueError: the optimiser is not SGD (or a subclass of it).
    """
    kind = optimizer if isinstance(optimizer, type) else type(optimizer)
    if not issubclass(kind, _LINEAR_OPTIMIZERS):
        raise ValueError(
            f"{owner} cannot protect earlier tasks with {kind.__name__}: an adaptive optimiser "
            f"divides each update by the gradient's running scale, which cancels {owner}'s soft "
            f"gradient factor. Use torch.optim.SGD (optimizer=sgd)."
        )


def _protected_parameters(hat: HAT) -> set[int]:
    backbone = hat.backbone
    ids = {id(p) for p in hat.task_embedding.values()}
    for name in backbone.weighted_layer_names:
        ids.update(id(p) for p in backbone.get_layer_by_name(name).parameters())
        norm = hat.normalization_layer(name)
        if norm is not None:
            ids.update(id(p) for p in norm.parameters())
    ids.update(id(p) for module in hat.task_norms for p in module.parameters())
    ids.update(id(p) for p in hat.shared_parameters().values())
    return ids


def uncovered_parameters(backbone: HATTarget) -> list[str]:
    """Names of trainable parameters no HAT mask protects (empty for a correct backbone)."""
    hat = hat_of(backbone)
    covered = _protected_parameters(hat)
    return [
        name
        for name, parameter in hat.backbone.named_parameters()
        if parameter.requires_grad and id(parameter) not in covered
    ]


def _cached(hat: HAT, name: str, compute: Callable[[], _T]) -> _T:
    """``compute()``, cached on the backbone until its stored masks, device, dtype, current task or
    parameters change (the masks change when a task ends and on ``load_state_dict``)."""
    backbone = hat.backbone
    # The buffer object itself stands for its device and dtype: .to() and .double() replace it
    # (and the cache holds it, so its id is not reused while cached).
    reference = backbone._buffers["_cumulative"]
    version = (
        hat.mask_version,
        backbone.task_id,
        backbone.__dict__.get("_hat_checked_parameter_count"),
    )
    cache: tuple[object, dict[str, Any], object] | None = backbone.__dict__.get(
        "_hat_mechanics_cache"
    )
    if cache is None or cache[2] is not reference or cache[0] != version:
        cache = (version, {}, reference)
        backbone.__dict__["_hat_mechanics_cache"] = cache
    values = cache[1]
    if name not in values:
        values[name] = compute()
    result: _T = values[name]
    return result


#: Parameters and modules registered on any module so far (:func:`_count_registration`).
_registrations = 0


def _count_registration(*_: object) -> None:
    global _registrations
    _registrations += 1


# A parameter reaches a backbone only through a registration (a task's batch norm, a user's
# layer), so a backbone checked since the last one needs no new walk over its parameters.
torch.nn.modules.module.register_module_parameter_registration_hook(_count_registration)
torch.nn.modules.module.register_module_module_registration_hook(_count_registration)


def _check_coverage(hat: HAT) -> None:
    backbone = hat.backbone
    if backbone.__dict__.get("_hat_checked_registrations") == _registrations:
        return
    # Parameters only appear, so a changed count is what calls for a new check.
    count = sum(1 for _ in backbone.parameters())
    if backbone.__dict__.get("_hat_checked_parameter_count") == count:
        backbone.__dict__["_hat_checked_registrations"] = _registrations
        return
    stray = uncovered_parameters(hat)
    if stray:
        raise RuntimeError(
            f"{type(backbone).__name__}: trainable parameters {stray} belong to no weighted "
            f"layer or its normalisation, so no mask protects them and earlier tasks would be "
            f"forgotten. Register every weighted layer (and return its batch norm from "
            f"normalization_layer), or freeze these parameters."
        )
    backbone.__dict__["_hat_checked_parameter_count"] = count
    backbone.__dict__["_hat_checked_registrations"] = _registrations


class _GradientPlan(NamedTuple):
    """Which parameters a gradient factor scales, and which factor slot each one reads.

    Slot ``2 l`` is layer ``l``'s weight factor, slot ``2 l + 1`` its unit factor (bias, shared
    batch norm); ``zeroed`` are other tasks' independent batch norms.
    """

    parameters: list[Tensor]
    slots: list[int]
    zeroed: list[Tensor]


def _gradient_plan(hat: HAT) -> _GradientPlan:
    backbone = hat.backbone

    def build() -> _GradientPlan:
        parameters: list[Tensor] = []
        slots: list[int] = []
        for index, name in enumerate(backbone.weighted_layer_names):
            layer = backbone.get_layer_by_name(name)
            parameters.append(layer_weight(backbone, name))
            slots.append(2 * index)
            bias = getattr(layer, "bias", None)
            if isinstance(bias, Tensor):
                parameters.append(bias)
                slots.append(2 * index + 1)
            norm = hat.normalization_layer(name)
            if norm is not None and not isinstance(norm, TaskBatchNorm):
                for parameter in norm.parameters():
                    parameters.append(parameter)
                    slots.append(2 * index + 1)
        current = str(backbone.task_id)
        zeroed: list[Tensor] = [
            parameter
            for module in hat.task_norms
            for key, norm in module.norms.items()
            if key != current
            for parameter in norm.parameters()
        ]
        # Shared by every task (layer norms ...): trained in the first task, frozen after it.
        zeroed += hat.shared_parameters().values()
        return _GradientPlan(parameters, slots, zeroed)

    return _cached(hat, "plan", build)


def _scale_gradients(hat: HAT, factors: Sequence[Tensor]) -> None:
    """Multiply every covered gradient by its factor slot (:class:`_GradientPlan`) in one fused
    call; zero other tasks' independent batch norms' gradients in another."""
    plan = _gradient_plan(hat)
    grads: list[Tensor] = []
    chosen: list[Tensor] = []
    for parameter, slot in zip(plan.parameters, plan.slots, strict=True):
        if parameter.grad is not None:
            grads.append(parameter.grad)
            chosen.append(factors[slot])
    if grads:
        torch._foreach_mul_(grads, chosen)
    zeroed = [parameter.grad for parameter in plan.zeroed if parameter.grad is not None]
    if zeroed:
        torch._foreach_zero_(zeroed)


def _soft_factors(
    weight_parts: Mapping[str, Tensor],
    unit_parts: Mapping[str, Tensor],
    rates: Mapping[str, float],
    names: Sequence[str],
) -> list[Tensor]:
    """``rate_l / (part + rate_l)`` of every layer's weight and unit part, in slot order.

    Fused into three calls over all layers; the arithmetic is that of ``rate / (part + rate)``
    (PyTorch computes a scalar over a tensor as ``reciprocal(tensor) * scalar``), so the factors
    are bit for bit those of a per-layer loop.
    """
    parts: list[Tensor] = []
    slot_rates: list[float] = []
    for name in names:
        parts += [weight_parts[name], unit_parts[name]]
        slot_rates += [rates[name], rates[name]]
    factors = torch._foreach_add(parts, slot_rates)
    torch._foreach_reciprocal_(factors)
    torch._foreach_mul_(factors, slot_rates)
    return list(factors)


class _SeparableParts(NamedTuple):
    """Per-unit parts of a soft factor whose weight part is ``Agg(out_i, in_j)`` (min or max).

    ``values`` holds, layer by layer, the output-unit values and then (unless the weight part is
    the output side alone) the input-unit values, one value if they are all equal (a layer fed
    by the raw input); ``layer_of`` the layer index of each value. ``layers`` gives per layer
    ``(output units, input values stored (0, 1 or the input units), weight shape)``.
    """

    values: Tensor
    layer_of: Tensor
    layers: list[tuple[int, int, tuple[int, ...]]]
    #: Per aggregation, the :class:`_FactorBuffers` that :func:`_separable_factors` refills when
    #: asked to reuse them.
    buffers: dict[str, _FactorBuffers]


class _FactorBuffers(NamedTuple):
    """Preallocated tensors of :func:`_separable_factors`: the per-unit rates and factors, the
    slot list (views of the factors and per-layer weight factors) and, per layer with input
    units, ``(output view, input view, weight factor)`` for one ``maximum``/``minimum`` call."""

    rate: Tensor
    factors: Tensor
    slots: list[Tensor]
    pairs: list[tuple[Tensor, Tensor, Tensor]]


def _separable_parts(
    hat: HAT, outputs: Mapping[str, Tensor], inputs: Mapping[str, Tensor | None]
) -> _SeparableParts | None:
    """The :class:`_SeparableParts` of per-layer output- and input-unit values, or ``None`` where
    the fused factor would not be the per-weight one bit for bit: a dtype other than float32 and
    float64 (a Python rate rounds otherwise there), a negative value (``r / (x + r)`` is
    decreasing in ``x`` only for ``x + r > 0``), or a weight whose input dimension is not its
    input units (a grouped or depthwise convolution reads input unit ``j`` of output unit ``i``'s
    group, which :func:`~clarena.hat.weight_measure` resolves per weight)."""
    backbone = hat.backbone
    values: list[Tensor] = []
    layers: list[tuple[int, int, tuple[int, ...]]] = []
    index: list[int] = []
    for layer, name in enumerate(backbone.weighted_layer_names):
        weight = layer_weight(backbone, name)
        out, inp = outputs[name], inputs[name]
        if inp is not None and inp.numel() > 1 and bool((inp == inp[0]).all()):
            inp = inp[:1]  # the factor is then a column, broadcast over the inputs
        if inp is not None and inp.numel() > 1 and weight.shape[1] != inp.numel():
            return None
        values.append(out)
        units = out.numel() + (0 if inp is None else inp.numel())
        if inp is not None:
            values.append(inp)
        index += [layer] * units
        layers.append((out.numel(), 0 if inp is None else inp.numel(), tuple(weight.shape)))
    flat = torch.cat(values)
    if flat.dtype not in (torch.float32, torch.float64) or bool((flat < 0).any()):
        return None
    return _SeparableParts(flat, torch.tensor(index, device=flat.device), layers, {})


def _separable_factors(
    parts: _SeparableParts, rates: Sequence[float], aggregation: str, reuse: bool = False
) -> list[Tensor]:
    """``r_l / (Agg(out_i, in_j) + r_l)`` per weight and ``r_l / (out_i + r_l)`` per unit, in slot
    order, from the per-unit factors: ``x -> r / (x + r)`` is decreasing (and its floating-point
    evaluation monotone), so the factor of the min is the max of the factors (of the max, the
    min), bit for bit the per-weight arithmetic of :func:`_soft_factors`, with one dense pass
    per weight instead of three.

    ``reuse``: write into tensors kept with ``parts`` and return them (the same tensors every
    call, valid until the next one): one call per operation and layer, no new views, for a
    caller that applies the factors at once (the gradient functions)."""
    values = parts.values
    per_layer = torch.tensor(rates, dtype=values.dtype).to(values.device)
    pick = torch.maximum if aggregation == "min" else torch.minimum
    if reuse:
        buffers = parts.buffers.get(aggregation)
        if buffers is None:
            buffers = parts.buffers[aggregation] = _factor_buffers(parts, pick)
        torch.index_select(per_layer, 0, parts.layer_of, out=buffers.rate)
        torch.add(values, buffers.rate, out=buffers.factors).reciprocal_().mul_(buffers.rate)
        for out, inp, weight in buffers.pairs:
            pick(out, inp, out=weight)
        return buffers.slots
    rate = per_layer.index_select(0, parts.layer_of)
    factors = (values + rate).reciprocal_().mul_(rate)
    return _factor_slots(parts, factors, pick)[0]


def _factor_slots(
    parts: _SeparableParts, factors: Tensor, pick: Callable[[Tensor, Tensor], Tensor]
) -> tuple[list[Tensor], list[tuple[Tensor, Tensor, Tensor]]]:
    """The slots of per-unit ``factors`` (each layer's weight factor ``pick(out_i, in_j)`` and its
    unit factor), and per layer with input units ``(output view, input view, weight factor)``."""
    slots: list[Tensor] = []
    pairs: list[tuple[Tensor, Tensor, Tensor]] = []
    offset = 0
    for out_units, in_units, shape in parts.layers:
        out = factors[offset : offset + out_units]
        trailing = (1,) * (len(shape) - 2)
        if in_units:
            inp = factors[offset + out_units : offset + out_units + in_units]
            out_view, in_view = out.view(-1, 1), inp.view(1, -1)
            weight = pick(out_view, in_view)
            pairs.append((out_view, in_view, weight))
            weight = weight.view(shape[0], weight.shape[1], *trailing)
        else:
            weight = out.view(-1, 1, *trailing)
        slots += [weight, out]
        offset += out_units + in_units
    return slots, pairs


def _factor_buffers(
    parts: _SeparableParts, pick: Callable[[Tensor, Tensor], Tensor]
) -> _FactorBuffers:
    rate = torch.empty_like(parts.values)
    factors = torch.empty_like(parts.values)
    slots, pairs = _factor_slots(parts, factors, pick)
    return _FactorBuffers(rate, factors, slots, pairs)


def _as_floats(values: Sequence[Tensor | float]) -> list[float]:
    """``[float(v) for v in values]`` with one device-to-host copy when all are tensors."""
    if values and all(isinstance(v, Tensor) for v in values):
        single = [v for v in values if isinstance(v, Tensor) and v.numel() == 1]
        flat = adjacent_view(single) if len(single) == len(values) else None
        if flat is not None:  # layer_sparsity's values: one tensor's elements
            joined: list[float] = flat.tolist()
            return joined
        tensors = [v.detach().reshape(()) for v in values if isinstance(v, Tensor)]
        # float32 (or narrower) values widen exactly to float64, as float() would.
        floats: list[float] = torch.stack(tensors).tolist()
        return floats
    return [float(v) for v in values]


def condition_gradients(backbone: HATTarget) -> None:
    """HAT's hard gradient conditioning by the cumulative mask of the earlier tasks.

    The gradient of the weight between output unit ``i`` and input unit ``j`` is multiplied by
    ``1 - min(a^{<t}_i, a^{<t}_j)``, a bias's and a shared batch norm's affine parameters by
    ``1 - a^{<t}_i``; other tasks' independent batch norms get zero gradient. Call after
    ``backward()`` and before ``optimizer.step()``, once per optimiser step (after all
    micro-batches of an accumulated step).

    The factors change only when a task ends, so they are computed once per task (and after
    ``load_state_dict``) and applied in one fused multiply over all gradients.

    Raises:
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    hat = hat_of(backbone)
    _check_coverage(hat)
    # Each scaled parameter with its factor, cached for the task (None before any stored task).
    pairs = _cached(hat, "hat-pairs", lambda: _hat_pairs(hat))
    if pairs is None:
        return
    parameters, factors, zeroed = pairs
    grads = [parameter.grad for parameter in parameters]
    if any(grad is None for grad in grads):
        kept = [(g, f) for g, f in zip(grads, factors, strict=True) if g is not None]
        grads, factors = [g for g, _ in kept], [f for _, f in kept]
    if grads:
        torch._foreach_mul_(grads, factors)  # type: ignore[arg-type]
    zeroed_grads = [parameter.grad for parameter in zeroed if parameter.grad is not None]
    if zeroed_grads:
        torch._foreach_zero_(zeroed_grads)


def _hat_pairs(hat: HAT) -> tuple[list[Tensor], list[Tensor], list[Tensor]] | None:
    """:func:`_scale_gradients`'s operands for HAT's factors, resolved once per task: the
    :class:`_GradientPlan`'s parameters, each one's factor, and the parameters to zero; ``None``
    with no stored task."""
    if not hat.stored_task_ids:
        return None
    plan = _gradient_plan(hat)
    slots = hat_factor_slots(hat)
    return plan.parameters, [slots[slot] for slot in plan.slots], plan.zeroed


def hat_factor_slots(hat: HAT) -> list[Tensor]:
    """HAT's per-task factors in :class:`_GradientPlan` slot order, cached for the task: slot
    ``2 l`` is ``1 - min(a^{<t}_i, a^{<t}_j)`` (broadcastable to layer ``l``'s weight), slot
    ``2 l + 1`` is ``1 - a^{<t}_i`` (its bias, shared batch norm). A layer fed by the raw input
    gets a column (:func:`~clarena.hat.weight_measure`), not a dense tensor to read every step."""
    network = hat.backbone

    def factors() -> list[Tensor]:
        cumulative = hat.cumulative_mask()
        slots = []
        for name in network.weighted_layer_names:
            slots.append(1 - weight_measure(network, cumulative, name, "min"))
            slots.append(1 - cumulative[name])
        return slots

    return _cached(hat, "hat", factors)


def layer_sparsity(
    mask: Mapping[str, Tensor], cumulative_mask: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Per-layer sparsity term: the share of each layer's free units that the mask takes.

    ``sum_i a^t_i (1 - a^{<t}_i) / sum_i (1 - a^{<t}_i)`` for each layer (0 when no unit is
    free). AdaHAT uses it, detached, as the layer's network sparsity.

    The products of all layers are one multiply (HAT's masks and cumulative mask are pieces of
    flat tensors) and the free-unit counts are cached until the cumulative mask changes; each
    layer's sum and division are those of the per-layer formula, so the values are bit for bit
    its values.

    Returns:
        Layer name → scalar tensor (in the autograd graph of ``mask``).
    """
    if not mask:
        return {}
    pieces = list(mask.values())
    sizes = [piece.numel() for piece in pieces]
    a = _joined(pieces)
    free, counts = _free_units(_joined([cumulative_mask[name] for name in mask]), sizes)
    sums = torch.stack([product.sum() for product in (a * free).split(sizes)])
    return dict(zip(mask, (sums / counts).unbind(), strict=True))


def _free_units(cumulative: Tensor, sizes: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``1 - cumulative`` and each layer's count of free units (at least 1: clamping changes only
    the 0/0 case, to 0), for layers of ``sizes`` units; cached while ``cumulative`` is unchanged."""
    key = tuple(sizes)

    def compute() -> tuple[Tensor, Tensor]:
        free = 1 - cumulative
        return free, torch.stack([piece.sum().clamp_min(1) for piece in free.split(key)])

    return _derived(cumulative, key, compute)


def sparsity_regularization(
    mask: Mapping[str, Tensor], cumulative_mask: Mapping[str, Tensor]
) -> Tensor:
    """HAT's sparsity regulariser over all units: ``sum a^t (1 - a^{<t}) / sum (1 - a^{<t})``.

    For the first task ``a^{<t} = 0`` and this is the mean mask value; with no free unit left it
    is 0.

    Args:
        mask: layer name → ``(units,)`` mask of the current task (from ``forward``).
        cumulative_mask: layer name → ``(units,)`` cumulative mask of the earlier tasks
            (:meth:`HAT.cumulative_mask <clarena.hat.HAT.cumulative_mask>`).

    Returns:
        A scalar tensor to add to the loss (times a regularisation factor); a dot product over
        all units with ``(1 - a^{<t}) / sum (1 - a^{<t})``, so it can differ from a per-layer
        sum in the last bits (within 1e-6 relative in float32).
    """
    if not mask:
        raise ValueError("sparsity regularisation needs a mask of at least one layer; got none.")
    # One dot product over all units with the free units' shares (cached per task) instead of
    # sums per layer: the same value up to rounding, one autograd node.
    a = _joined(list(mask.values()))
    shares = _free_shares(_joined([cumulative_mask[name] for name in mask]))
    return torch.dot(a, shares) if a.dtype == shares.dtype else (a * shares).sum()


def _joined(values: Sequence[Tensor]) -> Tensor:
    """``torch.cat(values)`` of 1-D tensors; without a copy (and without a ``cat`` node in the
    autograd graph) when they are, in order, the pieces one flat tensor was split into, as HAT's
    masks and its cumulative mask are."""
    base = values[0]._base
    if base is not None and base.dim() == 1 and base.stride() == (1,):
        # Views of a tensor that requires grad pass their gradient to it only if made in grad
        # mode (with a grad_fn); made under no_grad they are cut off from it.
        tracked = base.requires_grad
        offset = base.storage_offset()
        for value in values:
            if (
                value._base is not base
                or value.dim() != 1
                or value.stride() != (1,)
                or value.storage_offset() != offset
                or (tracked and value.grad_fn is None)
            ):
                break
            offset += value.numel()
        else:
            if offset == base.storage_offset() + base.numel():
                return base
    return torch.cat(list(values))


def _free_shares(cumulative: Tensor) -> Tensor:
    """``(1 - cumulative) / max(sum(1 - cumulative), 1)``: each free unit's share of the free
    units, cached while ``cumulative`` is unchanged (HAT's cumulative mask changes only when a
    task ends)."""

    def compute() -> Tensor:
        free = 1 - cumulative
        # free is a count of whole units, so clamping at 1 only changes the 0/0 case, to 0.
        return free / free.sum().clamp_min(1)

    return _derived(cumulative, "shares", compute)


#: Per cumulative-mask tensor: key -> ``(tensor version, value derived from it)``.
_DERIVED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _derived(cumulative: Tensor, key: object, compute: Callable[[], _T]) -> _T:
    """``compute()``, a value derived from ``cumulative``, cached under ``key`` until the tensor
    changes in place (its version) or is freed; not cached for a tensor that requires grad."""
    if cumulative.requires_grad:
        return compute()
    entries = _DERIVED.get(cumulative)
    if entries is None:
        entries = _DERIVED[cumulative] = {}
    cached = entries.get(key)
    if cached is None or cached[0] != cumulative._version:
        cached = entries[key] = (cumulative._version, compute())
    value: _T = cached[1]
    return value


def adahat_condition_gradients(
    backbone: HATTarget,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    epsilon: float = 0.1,
    aggregation: str = "min",
) -> None:
    """AdaHAT's soft gradient adjustment (Wang et al., 2024), replacing the hard 0/1 of HAT.

    With the summative mask ``m^{<t,sum}`` (how many earlier tasks used each unit) and the
    layer's network sparsity ``R_l`` (:func:`layer_sparsity` of the current mask), every
    parameter's gradient is multiplied by ``r_l / (m_agg + r_l)`` with ``r_l = alpha / (epsilon +
    R_l)``; ``m_agg`` is the parameter-wise aggregation of the output- and input-unit summative
    masks (raw input units count as used by every earlier task). Parameters no earlier task used
    keep their full gradient; the others move a little, so AdaHAT trades some forgetting for
    plasticity. Call once per optimiser step, after ``backward()`` (and after all micro-batches
    of an accumulated step) and before ``optimizer.step()``; train with SGD
    (:func:`check_adahat_optimizer`): adaptive optimisers cancel the factor.

    Args:
        backbone: the backbone with HAT attached, or the HAT method.
        network_sparsity: layer name → sparsity of the current task's mask in that layer.
        alpha: adjustment intensity (larger → more plasticity on used parameters).
        epsilon: keeps ``r_l`` finite when a layer's sparsity is 0.
        aggregation: ``'min'``, ``'max'`` or ``'mean'`` over the output and input units.

    Raises:
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    hat = hat_of(backbone)
    _check_coverage(hat)
    if not hat.stored_task_ids:
        return
    factors = adahat_factor_slots(hat, network_sparsity, alpha, epsilon, aggregation, reuse=True)
    _scale_gradients(hat, factors)


def adahat_factor_slots(
    hat: HAT,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    epsilon: float,
    aggregation: str,
    reuse: bool = False,
) -> list[Tensor]:
    """AdaHAT's factors ``r_l / (m_agg + r_l)`` of this step in :class:`_GradientPlan` slot order
    (arguments of :func:`adahat_condition_gradients`; at least one stored task), shared by the
    gradient and the update space. For ``min``/``max`` they come per unit where that is exact
    (``r/(x+r)`` decreases in ``x``), else per weight; ``reuse`` as for
    :func:`_separable_factors` (tensors valid until the next call)."""
    num_tasks = len(hat.stored_task_ids)
    network = hat.backbone
    names = network.weighted_layer_names

    def measures() -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        summative = hat.summative_mask()
        weight = {
            name: weight_measure(network, summative, name, aggregation, float(num_tasks))
            for name in names
        }
        return weight, summative

    sparsity = _as_floats([network_sparsity[name] for name in names])
    rates = {name: alpha / (epsilon + value) for name, value in zip(names, sparsity, strict=True)}
    if aggregation != "mean":

        def separable() -> _SeparableParts | None:
            summative = hat.summative_mask()
            inputs = {
                name: input_unit_measure(network, summative, name, float(num_tasks))
                for name in names
            }
            return _separable_parts(hat, summative, inputs)

        parts = _cached(hat, "adahat-separable", separable)
        if parts is not None:
            return _separable_factors(parts, [rates[name] for name in names], aggregation, reuse)
    weight_parts, unit_parts = _cached(hat, f"adahat-{aggregation}", measures)
    return _soft_factors(weight_parts, unit_parts, rates, names)


def compensate_embedding_gradients(
    backbone: HATTarget, s: float, s_max: float, clamp_threshold: float = 50.0
) -> None:
    """HAT's embedding gradient compensation for the annealed gate scale.

    Multiplies each task embedding's gradient by
    ``s_max (cosh(clamp(s e, -thr, thr)) + 1) / (s (cosh(e) + 1))``, so the embedding learns as if
    the gate were always at ``s_max``. Call after ``backward()``, once per optimiser step: the
    factor multiplies the whole accumulated gradient, so every micro-batch of the step must have
    used the same ``s``.

    Args:
        backbone: the backbone with HAT attached, or the HAT method.
        s: the gate scale of this batch (:func:`annealed_scale`).
        s_max: the largest gate scale.
        clamp_threshold: ``thr``, keeps ``cosh`` finite (HAT uses 50).
    """
    by_layer = hat_of(backbone)._embeddings_by_layer
    embeddings = [e for e in by_layer.values() if e.grad is not None]
    if not embeddings:
        return
    # The per-layer formula's operations, in its order, on all layers' units at once (fewer,
    # larger calls; the same factor up to the last bit of cosh). Adding a 0-d tensor 1 is adding
    # the Python 1 (both are a CPU scalar to the kernel) without wrapping it anew each call.
    with torch.no_grad():
        e = torch.cat(embeddings)
    one = _ONE
    numerator = e.mul(s).clamp_(-clamp_threshold, clamp_threshold).cosh_().add_(one)
    numerator.mul_(s_max / s).div_(e.cosh().add_(one))
    grads: list[Tensor] = [embedding.grad for embedding in embeddings]  # type: ignore[misc]
    flat = adjacent_view(grads)
    if flat is not None:
        flat.mul_(numerator)
    else:
        sizes = [embedding.numel() for embedding in embeddings]
        torch._foreach_mul_(grads, list(numerator.split(sizes)))


def adjacent_view(tensors: Sequence[Tensor]) -> Tensor | None:
    """One flat view of ``tensors`` if they are contiguous pieces of one storage, back to back
    in order (as autograd leaves the gradients of the task embeddings, which one concatenation
    produced); otherwise ``None``.

    An in-place operation on the view is that operation on every tensor, in one call.
    """
    first = tensors[0]
    itemsize = first.element_size()
    end = first.data_ptr()
    total = 0
    for tensor in tensors:
        if tensor.data_ptr() != end or tensor.dtype != first.dtype or not tensor.is_contiguous():
            return None
        end += tensor.numel() * itemsize
        total += tensor.numel()
    # Same storage at both ends: pieces back to back between them cannot leave it.
    if tensors[-1].untyped_storage().data_ptr() != first.untyped_storage().data_ptr():
        return None
    return first.as_strided((total,), (1,))


_ONE = torch.ones(())


def clamp_task_embedding(backbone: HATTarget, threshold: float = 6.0) -> None:
    """Clamp the task embedding to ``[-threshold, threshold]`` after ``optimizer.step()``.

    HAT does this so that ``sigmoid(s_max e)`` saturates but ``cosh(e)`` stays finite.
    """
    with torch.no_grad():
        for embedding in hat_of(backbone).task_embedding.values():
            embedding.clamp_(-threshold, threshold)
