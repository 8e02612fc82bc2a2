"""FG-AdaHAT's importance accumulation, summing, scheduler, aggregation and gradient factor.

Plain PyTorch, usable from any training loop.

FG-AdaHAT keeps HAT's masks and AdaHAT's soft gradient adjustment, but scales a gradient by a
data-driven importance carried over from earlier tasks instead of AdaHAT's integer count. For
weight ``ij`` of layer ``l`` while task ``t`` trains::

    g_{l,ij} <- g_{l,ij} * alpha / (c_l * I_{l,ij} + alpha)

with ``I_{l,ij} = Agg(S_{l,i}, S^in_{l,j})`` the carried importance ``S`` aggregated from units
to weights (min / max / mean; input units through the real layer graph, a raw-input layer has no
input side) and ``c_l`` the scheduler (``sparsity_reg``: ``R_l + b_R``; ``linear_sparsity_reg``:
``(R_l + b_R)(t + b_L)``; ``summative_mask_sparsity_reg``: ``(R_l + b_R)(Agg_min(m^{<t,sum}) +
b_L)``, weight-wise), ``R_l`` the layer sparsity of the current mask. Biases and shared batch-norm
affine parameters use ``S_{l,i}``.

Where a training loop (a Lightning algorithm is a thin caller) calls what, for task ``t``::

    hat = hat_of(backbone)  # the backbone's HAT method; every function takes either
    importance = FGAdaHATImportance(hat.layer_units, "add_latest")  # once, a submodule
    # each training step, after backward() (raw gradients, pre-step weights):
    step = step_importance(backbone, "output_weight_abs_sum", activations, head.weight)
    importance.add_step(step, training_mask=mask)  # mask from the train forward
    # once per optimiser step (Lightning: on_before_optimizer_step), instead of AdaHAT:
    sparsity = {k: v.detach() for k, v in layer_sparsity(mask, hat.cumulative_mask()).items()}
    fg_adahat_condition_gradients(backbone, importance, sparsity, alpha=0.1)
    compensate_embedding_gradients(backbone, s, s_max)
    # at the end of the task (Lightning: on_train_end), after hat.end_task(t):
    importance.all_reduce_steps()  # DDP: every rank then closes the task alike
    importance.end_task(t, hat.stored_mask(t))

All state (the running step sum and count, each task's importance, the carried importance) is in
registered buffers, so ``state_dict``, ``.to()``, checkpoints and DDP broadcast see it; a fresh
instance reloads it. Use SGD: Adam-family optimisers divide by the gradient's running RMS, which
cancels any factor that stays constant over steps (see the FG-AdaHAT annex, section 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from clarena.hat.measures import AGGREGATIONS, input_unit_measure, weight_measure
from clarena.hat.mechanics import (
    HATTarget,
    _as_floats,
    _check_coverage,
    _scale_gradients,
    _separable_factors,
    _separable_parts,
    _SeparableParts,
    _soft_factors,
)
from clarena.hat.method import HAT, hat_of

#: How the per-task importances ``I^1 .. I^T`` are summed into the carried importance ``S``.
SUMMING_STRATEGIES: tuple[str, ...] = (
    "add_latest",
    "add_all",
    "add_average",
    "linear_decrease",
    "quadratic_decrease",
    "cubic_decrease",
    "exponential_decrease",
    "log_decrease",
    "factorial_decrease",
)

#: The importance schedulers ``c_l`` of the gradient factor.
SCHEDULERS: tuple[str, ...] = (
    "linear_sparsity_reg",
    "sparsity_reg",
    "summative_mask_sparsity_reg",
)


def minmax_scale(values: Tensor) -> Tensor:
    """``(v - min) / (max - min)`` over a layer's ``(units,)`` values; a constant vector gives 0.

    No epsilon is added to the range, so tiny ranges (squared gradients) still scale to [0, 1].
    """
    low, high = values.min(), values.max()
    span = high - low
    # where() rather than an if: no device-to-host sync per layer and step.
    return torch.where(span > 0, (values - low) / span, torch.zeros_like(values))


def check_summing_strategy(
    strategy: str,
    linear_step: float | None = None,
    exponential_rate: float | None = None,
    log_base: float | None = None,
) -> None:
    """Refuse an unknown strategy or a missing / invalid parameter of the one chosen.

    Raises:
        ValueError: naming the strategy, the parameter and its valid range.
    """
    if strategy not in SUMMING_STRATEGIES:
        raise ValueError(
            f"unknown importance summing strategy {strategy!r}; use one of "
            f"{', '.join(repr(s) for s in SUMMING_STRATEGIES)}."
        )
    required = {
        "linear_decrease": ("linear_step", linear_step, 0.0),
        "exponential_decrease": ("exponential_rate", exponential_rate, 1.0),
        "log_decrease": ("log_base", log_base, 1.0),
    }.get(strategy)
    if required is not None:
        name, value, bound = required
        if value is None or isinstance(value, bool) or not float(value) > bound:
            raise ValueError(
                f"importance summing strategy {strategy!r} needs {name} > {bound:g}; got {value!r}."
            )


def summing_weights(
    strategy: str,
    num_tasks: int,
    linear_step: float | None = None,
    exponential_rate: float | None = None,
    log_base: float | None = None,
) -> Tensor:
    """The weights ``w(T, k)`` of ``S = sum_k w(T, k) I^k`` after ``T = num_tasks`` tasks.

    ``k`` counts the tasks in the order they finished (``1..T``); older tasks weigh more:
    ``add_latest`` 1; ``add_all`` ``T-k+1``; ``add_average`` ``H_T - H_{k-1}`` (harmonic numbers);
    ``linear_decrease`` ``s(T-k)+1``; ``quadratic_decrease`` ``(T-k+1)^2``; ``cubic_decrease``
    ``(T-k+1)^3``; ``exponential_decrease`` ``r^(T-k+1)``; ``log_decrease`` ``log_a(T-k+1)+1``;
    ``factorial_decrease`` ``(T-k+1)!``. The first three are the closed forms of their running
    updates (``S += I^T``, ``S += sum_k I^k``, ``S += mean_k I^k``).

    Returns:
        ``(num_tasks,)`` float64 weights (float64: factorial and exponential weights pass 1e18
        by twenty tasks).
    """
    check_summing_strategy(strategy, linear_step, exponential_rate, log_base)
    k = torch.arange(1, num_tasks + 1, dtype=torch.float64)
    age = num_tasks - k + 1  # T - k + 1, 1 for the latest task
    if strategy == "add_latest":
        return torch.ones_like(k)
    if strategy == "add_all":
        return age
    if strategy == "add_average":
        harmonic = torch.cat([torch.zeros(1, dtype=torch.float64), (1 / k).cumsum(0)])
        return harmonic[num_tasks] - harmonic[:num_tasks]
    if strategy == "linear_decrease":
        assert linear_step is not None  # check_summing_strategy requires it
        return float(linear_step) * (age - 1) + 1
    if strategy == "quadratic_decrease":
        return age**2
    if strategy == "cubic_decrease":
        return age**3
    if strategy == "exponential_decrease":
        assert exponential_rate is not None  # check_summing_strategy requires it
        return float(exponential_rate) ** age
    if strategy == "log_decrease":
        assert log_base is not None  # check_summing_strategy requires it
        return torch.log(age) / math.log(float(log_base)) + 1
    return torch.lgamma(age + 1).exp()


class FGAdaHATImportance(nn.Module):
    """FG-AdaHAT's importance state: this task's running step sum, each task's importance, ``S``.

    Per training step (:meth:`add_step`) each layer's importance is min-max scaled to [0, 1],
    optionally multiplied by the soft training mask, and added to a running sum. At the end of
    task ``t`` (:meth:`end_task`), ``I^t = sum / steps + b_I``, optionally multiplied by the
    task's stored binary mask, and the carried importance ``S`` is recomputed from all tasks'
    importances (:func:`summing_weights`, in float64, clamped to the buffers' dtype range).

    Buffers (flat over all units, in ``layer_units`` order): ``step_sum`` ``(units,)``,
    ``num_steps`` ``()`` int64, ``task_ids`` ``(T,)`` int64, ``task_importance`` ``(T, units)``,
    ``summed`` ``(units,)`` (``S``). A fresh instance built with the same arguments reloads them.

    Args:
        layer_units: layer name → units, in the backbone's order (``hat_of(backbone).layer_units``).
        summing_strategy: one of :data:`SUMMING_STRATEGIES`.
        base_importance: ``b_I >= 0`` added to every unit's task importance.
        filter_unmasked_importance: multiply ``I^t`` by task ``t``'s stored binary mask, so units
            the task did not keep get 0.
        step_multiply_training_mask: multiply each step's scaled importance by the soft training
            mask of that step (then :meth:`add_step` needs ``training_mask``).
        linear_step: ``s > 0`` of ``linear_decrease``.
        exponential_rate: ``r > 1`` of ``exponential_decrease``.
        log_base: ``a > 1`` of ``log_decrease``.

    Raises:
        ValueError: an unknown strategy, a missing or invalid strategy parameter, ``b_I < 0``.
    """

    # Buffers registered in __init__ (and replaced whole as tasks are added).
    step_sum: Tensor
    num_steps: Tensor
    task_ids: Tensor
    task_importance: Tensor
    summed: Tensor

    def __init__(
        self,
        layer_units: Mapping[str, int],
        summing_strategy: str,
        base_importance: float = 0.01,
        filter_unmasked_importance: bool = True,
        step_multiply_training_mask: bool = True,
        linear_step: float | None = None,
        exponential_rate: float | None = None,
        log_base: float | None = None,
    ) -> None:
        super().__init__()
        check_summing_strategy(summing_strategy, linear_step, exponential_rate, log_base)
        if isinstance(base_importance, bool) or not float(base_importance) >= 0:
            raise ValueError(f"base_importance must be >= 0; got {base_importance!r}.")
        self.layer_units: dict[str, int] = dict(layer_units)
        self.num_units: int = sum(self.layer_units.values())
        self.summing_strategy: str = summing_strategy
        self.base_importance: float = float(base_importance)
        self.filter_unmasked_importance: bool = filter_unmasked_importance
        self.step_multiply_training_mask: bool = step_multiply_training_mask
        self.linear_step = linear_step
        self.exponential_rate = exponential_rate
        self.log_base = log_base
        self.register_buffer("step_sum", torch.zeros(self.num_units))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("task_ids", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("task_importance", torch.zeros(0, self.num_units))
        self.register_buffer("summed", torch.zeros(self.num_units))
        #: Bumped whenever ``summed`` changes, so gradient factors can be cached.
        self.version: int = 0
        self.register_load_state_dict_post_hook(_bump_version)

    # ------------------------------------------------------------------ views

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """A flat ``(units,)`` tensor as layer name → ``(layer units,)`` views."""
        return dict(zip(self.layer_units, flat.split(list(self.layer_units.values())), strict=True))

    def _flatten(self, per_layer: Mapping[str, Tensor], what: str) -> Tensor:
        missing = [name for name in self.layer_units if name not in per_layer]
        if missing:
            raise ValueError(f"{what} has no entry for layers {missing}.")
        parts = []
        for name, units in self.layer_units.items():
            value = per_layer[name].detach().reshape(-1)
            if value.numel() != units:
                raise ValueError(
                    f"{what} of layer '{name}' has {value.numel()} values; the layer has {units} "
                    f"units."
                )
            parts.append(value.to(device=self.step_sum.device, dtype=self.step_sum.dtype))
        return torch.cat(parts)

    @property
    def finished_task_ids(self) -> list[int]:
        """Tasks with a stored importance, in the order they finished."""
        return [int(t) for t in self.task_ids.tolist()]

    def task_importance_of(self, task_id: int) -> dict[str, Tensor]:
        """Task ``task_id``'s importance ``I^t``: layer name → ``(units,)``."""
        if task_id not in self.finished_task_ids:
            raise ValueError(
                f"FGAdaHATImportance: task {task_id} has no importance (finished tasks: "
                f"{self.finished_task_ids})."
            )
        return self.split(self.task_importance[self.finished_task_ids.index(task_id)])

    def carried_importance(self) -> dict[str, Tensor]:
        """The carried importance ``S`` of the finished tasks: layer name → ``(units,)``."""
        return self.split(self.summed)

    # ------------------------------------------------------------------ accumulation

    def add_step(
        self, importance: Mapping[str, Tensor], training_mask: Mapping[str, Tensor] | None = None
    ) -> None:
        """Add one training step's importance (layer name → ``(units,)``, any measure).

        Args:
            importance: this step's raw importance of every layer's units.
            training_mask: the soft mask ``sigmoid(s e)`` of this step (detached here); needed
                when ``step_multiply_training_mask``.

        Raises:
            ValueError: a missing layer or a wrong size, or a missing ``training_mask``.
        """
        scaled = {name: minmax_scale(value.detach()) for name, value in importance.items()}
        if self.step_multiply_training_mask:
            missing = [n for n in scaled if training_mask is None or n not in training_mask]
            if missing:
                raise ValueError(
                    f"FGAdaHATImportance: step_multiply_training_mask is set, so add_step needs "
                    f"the training_mask of this step (the mask returned by the train forward); "
                    f"it has none for layers {missing}."
                )
            masks: Mapping[str, Tensor] = training_mask or {}  # None only with no layers
            scaled = {
                name: value * masks[name].detach().to(value.dtype) for name, value in scaled.items()
            }
        self.step_sum += self._flatten(scaled, "the step importance")
        self.num_steps += 1

    def all_reduce_steps(self) -> None:
        """Sum the running step sums and counts over all ranks (no-op without a process group).

        Call on every rank just before :meth:`end_task`, or the ranks' importances differ and
        their gradients are scaled differently.
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.step_sum)
            torch.distributed.all_reduce(self.num_steps)

    def end_task(
        self, task_id: int, stored_mask: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Close task ``task_id``: ``I^t = step_sum / num_steps + b_I`` (times its mask), update ``S``.

        Args:
            task_id: the task that finished.
            stored_mask: the task's stored binary mask (``hat_of(backbone).stored_mask(task_id)``);
                needed when ``filter_unmasked_importance``.

        Returns:
            ``I^t``: layer name → ``(units,)``.

        Raises:
            RuntimeError: no training step was added during the task.
            ValueError: ``filter_unmasked_importance`` without ``stored_mask``.
        """
        steps = int(self.num_steps)
        if steps == 0:
            raise RuntimeError(
                f"FGAdaHATImportance: task {task_id} ended without any add_step call, so it has "
                f"no importance; call add_step after every training backward()."
            )
        task = self.step_sum / steps + self.base_importance
        if self.filter_unmasked_importance:
            if stored_mask is None:
                raise ValueError(
                    "FGAdaHATImportance: filter_unmasked_importance is set, so end_task needs "
                    "the task's stored binary mask (hat_of(backbone).stored_mask(task_id))."
                )
            task = task * self._flatten(stored_mask, "the stored mask")
        self.add_task(task_id, self.split(task))
        return self.task_importance_of(task_id)

    def add_task(self, task_id: int, importance: Mapping[str, Tensor]) -> None:
        """Store ``I^t`` of task ``task_id`` as given, recompute ``S``, reset the step sum.

        A task added again keeps its place in the order and gets the new importance.
        """
        flat = self._flatten(importance, "the task importance")
        ids = self.finished_task_ids
        if task_id in ids:
            rows = self.task_importance.clone()
            rows[ids.index(task_id)] = flat
        else:
            rows = torch.cat([self.task_importance, flat[None]])
            self.task_ids = torch.cat(
                [self.task_ids, torch.tensor([task_id], device=self.task_ids.device)]
            )
        self.task_importance = rows
        weights = summing_weights(
            self.summing_strategy,
            rows.shape[0],
            self.linear_step,
            self.exponential_rate,
            self.log_base,
        ).to(rows.device)
        summed = (weights[:, None] * rows.to(torch.float64)).sum(0)
        self.summed = summed.clamp(max=torch.finfo(rows.dtype).max).to(rows.dtype)
        self.step_sum.zero_()
        self.num_steps.zero_()
        self.version += 1

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The per-task buffers grow with the tasks: take the saved shapes before copying.
        for name in ("task_ids", "task_importance"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                current = self.get_buffer(name)
                self._buffers[name] = torch.zeros(
                    saved.shape, dtype=current.dtype, device=current.device
                )
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _bump_version(module: nn.Module, incompatible_keys: Any) -> None:
    assert isinstance(module, FGAdaHATImportance)  # registered by FGAdaHATImportance itself
    module.version += 1


def _check_factor_arguments(
    alpha: float,
    scheduler: str,
    aggregation: str,
    base_mask_sparsity_reg: float,
    base_linear: float,
) -> None:
    if not alpha > 0:
        raise ValueError(f"adjustment_intensity (alpha) must be > 0; got {alpha!r}.")
    if scheduler not in SCHEDULERS:
        raise ValueError(
            f"unknown importance scheduler {scheduler!r}; use one of "
            f"{', '.join(repr(s) for s in SCHEDULERS)}."
        )
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"unknown neuron-to-weight aggregation {aggregation!r}; use one of "
            f"{', '.join(repr(a) for a in AGGREGATIONS)}."
        )
    if not base_mask_sparsity_reg > 0:
        raise ValueError(f"base_mask_sparsity_reg must be > 0; got {base_mask_sparsity_reg!r}.")
    if not base_linear > 0:
        raise ValueError(f"base_linear must be > 0; got {base_linear!r}.")


def weight_importance(
    backbone: HATTarget,
    importance: FGAdaHATImportance,
    aggregation: str = "min",
    scheduler: str = "sparsity_reg",
    base_linear: float = 10.0,
    filter_by_cumulative_mask: bool = False,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The step-independent part ``P`` of the factor, per weight and per unit.

    ``P_{l,ij} = Agg(S_{l,i}, S^in_{l,j})``, times ``Agg_min(m^{<t,sum}) + b_L`` for the
    ``summative_mask_sparsity_reg`` scheduler and times ``min(m^{<t}_i, m^{<t,in}_j)`` with
    ``filter_by_cumulative_mask``; the unit (bias) part uses ``S_{l,i}`` alike. The factor is
    then ``r_l / (P + r_l)`` with ``r_l = alpha / c_l`` and ``c_l`` the scalar part of the
    scheduler. Cached until the importance, the stored masks, device or dtype change.

    Returns:
        ``(weight part, unit part)``: layer name → ``(out, in)`` or ``(out, in, 1, 1)``, and
        layer name → ``(units,)``, in the layer weights' dtype and device.
    """
    hat = hat_of(backbone)
    network = hat.backbone
    reference = network.get_buffer("_cumulative")
    key = (
        importance.version,
        hat.mask_version,
        reference.device,
        reference.dtype,
        aggregation,
        scheduler == "summative_mask_sparsity_reg",
        float(base_linear),
        filter_by_cumulative_mask,
    )
    cache = network.__dict__.get("_fg_adahat_cache")
    if cache is not None and cache[0] == key and cache[1] is importance:
        return cache[2]
    summed = {
        name: value.to(device=reference.device, dtype=reference.dtype)
        for name, value in importance.carried_importance().items()
    }
    weight_part = {}
    unit_part = {}
    summative = hat.summative_mask()
    cumulative = hat.cumulative_mask()
    for name in network.weighted_layer_names:
        weight = weight_measure(network, summed, name, aggregation, raw_input_value=None)
        unit = summed[name]
        if scheduler == "summative_mask_sparsity_reg":
            count = weight_measure(network, summative, name, "min", raw_input_value=None)
            weight = weight * (count + base_linear)
            unit = unit * (summative[name] + base_linear)
        if filter_by_cumulative_mask:
            weight = weight * weight_measure(network, cumulative, name, "min", None)
            unit = unit * cumulative[name]
        weight_part[name] = weight
        unit_part[name] = unit
    result = (weight_part, unit_part)
    network.__dict__["_fg_adahat_cache"] = (key, importance, result)
    return result


def fg_adahat_condition_gradients(
    backbone: HATTarget,
    importance: FGAdaHATImportance,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    scheduler: str = "sparsity_reg",
    aggregation: str = "min",
    base_mask_sparsity_reg: float = 0.1,
    base_linear: float = 10.0,
    filter_by_cumulative_mask: bool = False,
) -> None:
    """FG-AdaHAT's gradient adjustment: ``g <- g * alpha / (c_l I_ij + alpha)`` (Eq. 1).

    Call once per optimiser step, after ``backward()`` (and after the step's importance was
    taken from the raw gradients), before ``optimizer.step()``. Before any finished task ``S = 0``
    and gradients are unchanged. With ``S`` = the summative mask, ``sparsity_reg`` and ``min``
    this is :func:`~clarena.hat.adahat_condition_gradients` with ``epsilon = b_R``.

    Args:
        backbone: the backbone with HAT attached, or the HAT method (its current task is ``t``
            of ``linear_sparsity_reg``).
        importance: the carried importance ``S`` of the finished tasks.
        network_sparsity: layer name → ``R_l`` (:func:`~clarena.hat.layer_sparsity`, detached).
        alpha: adjustment intensity ``alpha > 0``.
        scheduler: one of :data:`SCHEDULERS`.
        aggregation: ``'min'``, ``'max'`` or ``'mean'`` of the output- and input-unit importance.
        base_mask_sparsity_reg: ``b_R > 0`` (AdaHAT's ``epsilon``).
        base_linear: ``b_L > 0``.
        filter_by_cumulative_mask: multiply ``I`` by the cumulative mask of the weight's units.

    Raises:
        ValueError: an invalid argument.
        RuntimeError: the backbone has a trainable parameter no mask covers.
    """
    _check_factor_arguments(alpha, scheduler, aggregation, base_mask_sparsity_reg, base_linear)
    hat = hat_of(backbone)
    _check_coverage(hat)
    if importance.task_ids.numel() == 0:
        return
    factors = fg_adahat_factor_slots(
        hat,
        importance,
        network_sparsity,
        alpha,
        scheduler,
        aggregation,
        base_mask_sparsity_reg,
        base_linear,
        filter_by_cumulative_mask,
        reuse=True,
    )
    _scale_gradients(hat, factors)


def fg_adahat_factor_slots(
    hat: HAT,
    importance: FGAdaHATImportance,
    network_sparsity: Mapping[str, Tensor | float],
    alpha: float,
    scheduler: str,
    aggregation: str,
    base_mask_sparsity_reg: float,
    base_linear: float,
    filter_by_cumulative_mask: bool,
    reuse: bool = False,
) -> list[Tensor]:
    """FG-AdaHAT's factors ``alpha / (c_l I_ij + alpha)`` of this step in the gradient plan's slot
    order (checked arguments of :func:`fg_adahat_condition_gradients`; at least one finished
    task's importance), shared by the gradient and the update space; ``reuse``: the separable
    factors are written into tensors kept for the next call (valid until then)."""
    task_term = 1.0
    if scheduler == "linear_sparsity_reg":
        task_term = hat.backbone.check_task_id_ready() + base_linear
    names = hat.backbone.weighted_layer_names
    rates = {}
    for name, sparsity in zip(names, _as_floats([network_sparsity[n] for n in names]), strict=True):
        coefficient = sparsity + base_mask_sparsity_reg
        if scheduler == "linear_sparsity_reg":
            coefficient = coefficient * task_term
        rates[name] = alpha / coefficient
    if (
        aggregation != "mean"
        and scheduler != "summative_mask_sparsity_reg"
        and not filter_by_cumulative_mask
    ):
        parts = _separable_importance(hat, importance)
        if parts is not None:
            return _separable_factors(parts, [rates[name] for name in names], aggregation, reuse)
    weight_part, unit_part = weight_importance(
        hat, importance, aggregation, scheduler, base_linear, filter_by_cumulative_mask
    )
    return _soft_factors(weight_part, unit_part, rates, names)


def _separable_importance(hat: HAT, importance: FGAdaHATImportance) -> _SeparableParts | None:
    """The carried importance as :class:`~clarena.hat.mechanics._SeparableParts` (the weight part
    ``Agg(S_i, S^in_j)``, the output side alone for a layer fed by the raw input), cached as
    :func:`weight_importance`."""
    network = hat.backbone
    reference = network.get_buffer("_cumulative")
    key = (importance.version, hat.mask_version, reference.device, reference.dtype)
    cache = network.__dict__.get("_fg_adahat_separable_cache")
    if cache is not None and cache[0] == key and cache[1] is importance:
        parts: _SeparableParts | None = cache[2]
        return parts
    summed = {
        name: value.to(device=reference.device, dtype=reference.dtype)
        for name, value in importance.carried_importance().items()
    }
    inputs = {
        name: input_unit_measure(network, summed, name, 0.0)
        if network.input_layer_names(name)
        else None
        for name in network.weighted_layer_names
    }
    parts = _separable_parts(hat, summed, inputs)
    network.__dict__["_fg_adahat_separable_cache"] = (key, importance, parts)
    return parts
