"""HAT, AdaHAT and FG-AdaHAT protection in update space (SPEC §9).

Instead of scaling the gradient the optimiser reads, the method's factor ``f`` scales the step the
optimiser takes, ``θ ← θ + f ⊙ (θ' − θ)`` (:class:`clarena.cl.UpdateSpaceProtection`), so the
protection holds under any optimiser: momentum, Adam's moments and decoupled weight decay included.

- HAT: :func:`protection_factors` are the same per-task factors :func:`~clarena.hat.
  condition_gradients` multiplies the gradients by (``1 - min(a^{<t}_i, a^{<t}_j)`` for weights,
  ``1 - a^{<t}_i`` for biases and shared batch norms, 0 for other tasks' batch norms), shared with
  its cache. They are constant within a task: build the protection once per task.
- AdaHAT and FG-AdaHAT: the soft factor depends on the step's network sparsity, so it is computed
  every step (:func:`adahat_update_factors`, :func:`fg_adahat_update_factors`), in the order of
  :func:`update_parameters`, for :meth:`UpdateSpaceProtection.per_step
  <clarena.cl.UpdateSpaceProtection.per_step>`. The arithmetic of the factors is that of the
  gradient-space functions, so under SGD the two modes take the same steps (up to rounding of
  ``θ + f (θ' − θ)`` against ``θ − lr f g``).

A training step in update space (task ``t`` with earlier tasks stored)::

    protection = UpdateSpaceProtection(hat.protection_factors())          # HAT, once per task
    # or UpdateSpaceProtection.per_step(update_parameters(hat))           # AdaHAT
    loss.backward()
    condition_gradients(backbone)        # HAT only: zeroes what the step will not move anyway
    compensate_embedding_gradients(backbone, s, s_max)
    protection.before_step()
    optimizer.step()
    protection.after_step()              # AdaHAT: after_step(adahat_update_factors(...))
    clamp_task_embedding(backbone)
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from clarena.hat.fg_adahat import (
    FGAdaHATImportance,
    _check_factor_arguments,
    fg_adahat_factor_slots,
)
from clarena.hat.mechanics import (
    HATTarget,
    _check_coverage,
    _gradient_plan,
    adahat_factor_slots,
    hat_factor_slots,
)
from clarena.hat.method import hat_of

__all__ = [
    "adahat_update_factors",
    "fg_adahat_update_factors",
    "protection_factors",
    "update_parameters",
]


def protection_factors(backbone: HATTarget) -> dict[nn.Parameter, Tensor]:
    """HAT's per-task protection factor of every covered parameter (empty before any stored task).

    The factors are the ones :func:`~clarena.hat.condition_gradients` uses (the same cached
    tensors, broadcastable to the parameters: ``(out, in)`` or ``(out, in, 1, 1)`` for weights,
    ``(units,)`` for biases and shared batch norms), plus a 0-d zero for every parameter of
    another task's independent batch norm.

    Raises:
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    hat = hat_of(backbone)
    _check_coverage(hat)
    if not hat.stored_task_ids:
        return {}
    plan = _gradient_plan(hat)
    slots = hat_factor_slots(hat)
    factors: dict[nn.Parameter, Tensor] = {}
    for parameter, slot in zip(plan.parameters, plan.slots, strict=True):
        assert isinstance(parameter, nn.Parameter)  # layer weights, biases and norms
        factors[parameter] = slots[slot]
    for parameter in plan.zeroed:
        assert isinstance(parameter, nn.Parameter)
        factors[parameter] = parameter.new_zeros(())
    return factors


def update_parameters(backbone: HATTarget) -> list[nn.Parameter]:
    """The parameters AdaHAT's and FG-AdaHAT's per-step factors apply to, in the order of
    :func:`adahat_update_factors`: every covered parameter, then other tasks' batch norms."""
    hat = hat_of(backbone)
    _check_coverage(hat)
    plan = _gradient_plan(hat)
    parameters = [*plan.parameters, *plan.zeroed]
    assert all(isinstance(p, nn.Parameter) for p in parameters)
    return parameters  # type: ignore[return-value]  # checked just above


def _per_parameter(hat_target: HATTarget, slot_factors: list[Tensor]) -> list[Tensor]:
    plan = _gradient_plan(hat_of(hat_target))
    factors = [slot_factors[slot] for slot in plan.slots]
    if plan.zeroed:
        zero = slot_factors[0].new_zeros(())
        factors += [zero] * len(plan.zeroed)
    return factors


def adahat_update_factors(
    backbone: HATTarget,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    epsilon: float = 0.1,
    aggregation: str = "min",
) -> list[Tensor]:
    """AdaHAT's soft factor ``r_l / (m_agg + r_l)`` of this step, one per :func:`update_parameters`.

    The arguments and the arithmetic are those of :func:`~clarena.hat.adahat_condition_gradients`
    (fused over all layers); other tasks' batch norms get 0.

    Raises:
        ValueError: no earlier task is stored (nothing to protect: skip the protection).
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    hat = hat_of(backbone)
    _check_coverage(hat)
    if not hat.stored_task_ids:
        raise ValueError("AdaHAT update factors need a stored earlier task; none is stored yet.")
    slots = adahat_factor_slots(hat, network_sparsity, alpha, epsilon, aggregation)
    return _per_parameter(hat, slots)


def fg_adahat_update_factors(
    backbone: HATTarget,
    importance: FGAdaHATImportance,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    scheduler: str = "sparsity_reg",
    aggregation: str = "min",
    base_mask_sparsity_reg: float = 0.1,
    base_linear: float = 10.0,
    filter_by_cumulative_mask: bool = False,
) -> list[Tensor]:
    """FG-AdaHAT's factor ``alpha / (c_l I_ij + alpha)`` of this step, one per
    :func:`update_parameters` (arguments and arithmetic of
    :func:`~clarena.hat.fg_adahat_condition_gradients`); other tasks' batch norms get 0.

    Raises:
        ValueError: an invalid argument, or no finished task's importance yet (nothing to
            protect: skip the protection).
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    _check_factor_arguments(alpha, scheduler, aggregation, base_mask_sparsity_reg, base_linear)
    hat = hat_of(backbone)
    _check_coverage(hat)
    if importance.task_ids.numel() == 0:
        raise ValueError(
            "FG-AdaHAT update factors need a finished task's importance; none is stored yet."
        )
    slots = fg_adahat_factor_slots(
        hat,
        importance,
        network_sparsity,
        alpha,
        scheduler,
        aggregation,
        base_mask_sparsity_reg,
        base_linear,
        filter_by_cumulative_mask,
    )
    return _per_parameter(hat, slots)
