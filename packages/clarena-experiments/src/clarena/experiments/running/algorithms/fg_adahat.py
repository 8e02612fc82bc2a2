"""FG-AdaHAT (fine-grained AdaHAT) as a Lightning algorithm.

FG-AdaHAT keeps HAT's masks and AdaHAT's soft gradient adjustment, but scales each gradient by a
data-driven neuron importance carried over from earlier tasks instead of AdaHAT's integer count
(FG-AdaHAT annex, section 1). The importance state and the factor live in
:mod:`clarena.hat.fg_adahat` (plain PyTorch); this module calls them at these points of
Lightning's loop:

- ``training_step``: the annealed mask forward of HAT; the detached mask and (for activation
  types) each layer's mean ``|h|`` of the micro-batch are kept;
- ``on_before_optimizer_step`` (once per optimiser step, after gradient accumulation and
  mixed-precision unscaling): first this step's importance from the **raw** accumulated gradients
  and the pre-step weights (:func:`clarena.hat.step_importance`, or the captum attributions of
  :mod:`clarena.experiments.algorithms.fg_adahat_attribution` on the step's inputs, then
  :meth:`~clarena.hat.FGAdaHATImportance.add_step`), then the FG-AdaHAT factor in place of
  AdaHAT's, then HAT's embedding gradient compensation;
- ``on_train_end``: store the task's binary mask, all-reduce the step sums over the ranks, close
  the task's importance (:meth:`~clarena.hat.FGAdaHATImportance.end_task`).

All importance state is in buffers of the ``importance`` submodule, so it is in ``state_dict``,
the saved model, the resume state and the DDP broadcast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from typing_extensions import override

from clarena.backbones.resnet import ResNet
from clarena.cl import HeadDIL
from clarena.experiments.running.algorithms.base import CLConfigError
from clarena.experiments.running.algorithms.fg_adahat_attribution import (
    attribution_importance,
    require_captum,
)
from clarena.experiments.running.algorithms.hat import AdaHAT
from clarena.hat import (
    AGGREGATIONS,
    ATTRIBUTION_IMPORTANCE_TYPES,
    PLAIN_IMPORTANCE_TYPES,
    SCHEDULERS,
    SUMMING_STRATEGIES,
    FGAdaHATImportance,
    fg_adahat_condition_gradients,
    layer_sparsity,
    step_importance,
    update_parameters,
)
from clarena.hat.importance import activation_abs
from clarena.hat.protection import fg_adahat_update_factors

#: A custom importance: ``(backbone, activations, head_weight) -> layer name -> (units,)``.
ImportanceFunction = Callable[[nn.Module, Mapping[str, Tensor], Tensor], Mapping[str, Tensor]]

#: Plain importance types that read the layers' activations.
_ACTIVATION_TYPES = frozenset(
    t for t in PLAIN_IMPORTANCE_TYPES if "activation" in t or t == "cbp_adaptive_contribution"
)

#: The summing strategies that need a parameter: strategy -> (argument, lower bound).
_STRATEGY_PARAMETERS: dict[str, tuple[str, float]] = {
    "linear_decrease": ("importance_summing_strategy_linear_step", 0.0),
    "exponential_decrease": ("importance_summing_strategy_exponential_rate", 1.0),
    "log_decrease": ("importance_summing_strategy_log_base", 1.0),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_fg_adahat_arguments(arguments: Mapping[str, Any]) -> None:
    """Refuse an invalid FG-AdaHAT hyperparameter, one message naming it and its valid values.

    Args:
        arguments: the hyperparameters by their :class:`FGAdaHAT` argument names.

    Raises:
        CLConfigError: the first invalid hyperparameter.
    """

    def refuse(message: str) -> None:
        raise CLConfigError(f"FGAdaHAT: {message}")

    alpha = arguments["adjustment_intensity"]
    if not _is_number(alpha) or not alpha > 0:
        refuse(f"adjustment_intensity (alpha) must be a number > 0; got {alpha!r}.")
    importance_type = arguments["importance_type"]
    if importance_type in ATTRIBUTION_IMPORTANCE_TYPES:
        require_captum(importance_type)
    elif not callable(importance_type) and importance_type not in PLAIN_IMPORTANCE_TYPES:
        refuse(
            f"unknown importance_type {importance_type!r}; use one of "
            f"{', '.join(PLAIN_IMPORTANCE_TYPES + ATTRIBUTION_IMPORTANCE_TYPES)}."
        )
    choices = {
        "importance_summing_strategy": SUMMING_STRATEGIES,
        "importance_scheduler_type": SCHEDULERS,
        "neuron_to_weight_importance_aggregation_mode": AGGREGATIONS,
    }
    for name, valid in choices.items():
        if arguments[name] not in valid:
            refuse(f"{name} must be one of {', '.join(valid)}; got {arguments[name]!r}.")
    bounds = {
        "base_importance": (0.0, ">="),
        "base_mask_sparsity_reg": (0.0, ">"),
        "base_linear": (0.0, ">"),
    }
    for name, (bound, relation) in bounds.items():
        value = arguments[name]
        ok = _is_number(value) and (value >= bound if relation == ">=" else value > bound)
        if not ok:
            refuse(f"{name} must be a number {relation} {bound:g}; got {value!r}.")
    for name in (
        "filter_by_cumulative_mask",
        "filter_unmasked_importance",
        "step_multiply_training_mask",
    ):
        if not isinstance(arguments[name], bool):
            refuse(f"{name} must be true or false; got {arguments[name]!r}.")
    strategy = arguments["importance_summing_strategy"]
    for needing, (name, bound) in _STRATEGY_PARAMETERS.items():
        value = arguments[name]
        if strategy == needing:
            if value is None:
                refuse(
                    f"importance_summing_strategy {needing!r} needs {name} (a number > {bound:g})."
                )
            if not _is_number(value) or not value > bound:
                refuse(f"{name} must be a number > {bound:g}; got {value!r}.")
        elif value is not None:
            refuse(
                f"{name} is used only by importance_summing_strategy {needing!r}, but the "
                f"strategy is {strategy!r}; remove it or set it to null."
            )


class FGAdaHAT(AdaHAT):
    """FG-AdaHAT: AdaHAT with a data-driven, fine-grained importance in the gradient factor.

    For weight ``ij`` of layer ``l`` while task ``t`` trains, ``g <- g * alpha / (c_l I_ij +
    alpha)``, with ``I_ij = Agg(S_i, S^in_j)`` the importance carried from earlier tasks and
    ``c_l`` the scheduler (see :mod:`clarena.hat.fg_adahat`). Task-incremental or
    domain-incremental (the test stage needs the task's stored mask). As AdaHAT: with
    ``protection='update'`` (the default) the factor scales the optimiser's step, under any
    optimiser; with ``protection='gradient'`` it scales the gradient, and an adaptive optimiser,
    which cancels it, gets a warning. Every hyperparameter is checked at construction.

    HAT's arguments (``backbone``, ``heads``, ``optimizer``, ``lr_scheduler``, ``s_max``,
    ``clamp_threshold``, ``mask_sparsity_reg_factor``, ``task_embedding_init_mode``,
    ``embedding_clamp``, ``protection``) pass through, plus:

    Args:
        adjustment_intensity: ``alpha > 0``; larger keeps more plasticity on important weights.
        importance_type: the per-step neuron importance: one of the 13 plain types of
            :data:`clarena.hat.PLAIN_IMPORTANCE_TYPES` (e.g. ``input_weight_gradient_abs_sum``,
            the paper's IG), or one of the 10 attribution types of
            :data:`clarena.hat.ATTRIBUTION_IMPORTANCE_TYPES` (e.g. ``deeplift_abs``), which need
            the extra ``clarena-experiments[captum]``. A callable ``(backbone, activations,
            head_weight) -> {layer: (units,)}`` is accepted for custom measures.
        importance_summing_strategy: how the tasks' importances sum into the carried importance
            (``add_latest``, ``add_all``, ``add_average``, ``linear_decrease``,
            ``quadratic_decrease``, ``cubic_decrease``, ``exponential_decrease``,
            ``log_decrease``, ``factorial_decrease``; older tasks weigh more).
        importance_scheduler_type: the scheduler ``c_l``: ``sparsity_reg`` (``R_l + b_R``),
            ``linear_sparsity_reg`` (``(R_l + b_R)(t + b_L)``) or
            ``summative_mask_sparsity_reg`` (``(R_l + b_R)(min(m^{<t,sum}) + b_L)``).
        neuron_to_weight_importance_aggregation_mode: ``min``, ``max`` or ``mean`` of a weight's
            output- and input-unit importance.
        base_importance: ``b_I >= 0`` added to each unit's task importance.
        base_mask_sparsity_reg: ``b_R > 0`` added to the layer sparsity (AdaHAT's ``epsilon``).
        base_linear: ``b_L > 0`` of the linear and summative schedulers.
        filter_by_cumulative_mask: multiply the weight importance by the cumulative mask of its
            units.
        filter_unmasked_importance: multiply each task's importance by its stored binary mask,
            so units the task did not keep get 0.
        step_multiply_training_mask: multiply each step's scaled importance by that step's soft
            training mask.
        importance_summing_strategy_linear_step: ``s > 0``; required by, and only by,
            ``linear_decrease``.
        importance_summing_strategy_exponential_rate: ``r > 1``; required by, and only by,
            ``exponential_decrease``.
        importance_summing_strategy_log_base: ``a > 1``; required by, and only by,
            ``log_decrease``.

    Raises:
        CLConfigError: an invalid hyperparameter, weight decay with ``protection='gradient'``, a
            backbone without HAT masks, or class-incremental heads.
    """

    def __init__(
        self,
        *args: Any,
        adjustment_intensity: float,
        importance_type: str | ImportanceFunction,
        importance_summing_strategy: str,
        importance_scheduler_type: str,
        neuron_to_weight_importance_aggregation_mode: str,
        base_importance: float = 0.01,
        base_mask_sparsity_reg: float = 0.1,
        base_linear: float = 10.0,
        filter_by_cumulative_mask: bool = False,
        filter_unmasked_importance: bool = True,
        step_multiply_training_mask: bool = True,
        importance_summing_strategy_linear_step: float | None = None,
        importance_summing_strategy_exponential_rate: float | None = None,
        importance_summing_strategy_log_base: float | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = {
            "adjustment_intensity": adjustment_intensity,
            "importance_type": importance_type,
            "importance_summing_strategy": importance_summing_strategy,
            "importance_scheduler_type": importance_scheduler_type,
            "neuron_to_weight_importance_aggregation_mode": (
                neuron_to_weight_importance_aggregation_mode
            ),
            "base_importance": base_importance,
            "base_mask_sparsity_reg": base_mask_sparsity_reg,
            "base_linear": base_linear,
            "filter_by_cumulative_mask": filter_by_cumulative_mask,
            "filter_unmasked_importance": filter_unmasked_importance,
            "step_multiply_training_mask": step_multiply_training_mask,
            "importance_summing_strategy_linear_step": importance_summing_strategy_linear_step,
            "importance_summing_strategy_exponential_rate": (
                importance_summing_strategy_exponential_rate
            ),
            "importance_summing_strategy_log_base": importance_summing_strategy_log_base,
        }
        check_fg_adahat_arguments(arguments)
        super().__init__(
            *args,
            adjustment_intensity=adjustment_intensity,
            epsilon=base_mask_sparsity_reg,
            aggregation=neuron_to_weight_importance_aggregation_mode,
            **kwargs,
        )
        if importance_type == "lrp_abs" and isinstance(self.backbone, ResNet):
            raise CLConfigError(
                f"FGAdaHAT: importance_type 'lrp_abs' works with HATMaskMLP only; captum's LRP "
                f"cannot propagate relevance through {type(self.backbone).__name__}'s residual "
                f"blocks. Use deeplift_abs or another importance type."
            )
        self.importance_type = importance_type
        self.importance_scheduler_type = importance_scheduler_type
        self.base_mask_sparsity_reg = float(base_mask_sparsity_reg)
        self.base_linear = float(base_linear)
        self.filter_by_cumulative_mask = filter_by_cumulative_mask
        self.importance = FGAdaHATImportance(
            self.hat.layer_units,
            importance_summing_strategy,
            base_importance=base_importance,
            filter_unmasked_importance=filter_unmasked_importance,
            step_multiply_training_mask=step_multiply_training_mask,
            linear_step=importance_summing_strategy_linear_step,
            exponential_rate=importance_summing_strategy_exponential_rate,
            log_base=importance_summing_strategy_log_base,
        )
        self._needs_activations = callable(importance_type) or importance_type in _ACTIVATION_TYPES
        self._attributes = importance_type in ATTRIBUTION_IMPORTANCE_TYPES
        # Per optimiser step, for attribution types: its micro-batches' inputs and targets.
        self._step_inputs: list[Tensor] = []
        self._step_targets: list[Tensor] = []
        # Per optimiser step: the sum over its micro-batches of each layer's mean |h|, and their
        # count (all micro-batches of a step have the same size but the epoch's last).
        self._activation_sum: dict[str, Tensor] = {}
        self._activation_batches = 0

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        if self._attributes:
            input, labels = batch
            self._step_inputs.append(input.detach())
            self._step_targets.append(self.targets(labels, self.task_id))
        return super().training_step(batch, batch_idx)

    @override
    def regularization(self, extras: dict[str, Any]) -> Tensor | None:
        if self._needs_activations:
            for name, activation in extras["activations"].items():
                if name not in self.hat.layer_units:
                    continue
                value = activation_abs(activation)
                previous = self._activation_sum.get(name)
                self._activation_sum[name] = value if previous is None else previous + value
            self._activation_batches += 1
        return super().regularization(extras)

    def _head_weight(self) -> Tensor:
        """The weight of the head reading the feature for the current task."""
        if isinstance(self.heads, HeadDIL):
            return self.heads.get_head().weight
        return self.heads.heads[str(self.task_id)].weight

    def add_step_importance(self) -> None:
        """This optimiser step's importance from the raw gradients, into the running sum."""
        activations = None
        if self._needs_activations:
            # (1, units) means: the importance measures average over dim 0 again, unchanged.
            activations = {
                name: (value / self._activation_batches)[None]
                for name, value in self._activation_sum.items()
            }
        head_weight = self._head_weight()
        if self._attributes:
            # captum's hooks are added after the backbone was compiled, and dynamo does not
            # guard on hooks: a compiled graph would run without them. Attribution runs eager.
            with torch.compiler.set_stance("force_eager"):
                step = attribution_importance(
                    self,
                    self.importance_type,
                    torch.cat(self._step_inputs),
                    torch.cat(self._step_targets),
                    scale=self.step_scale,
                )
            self._step_inputs, self._step_targets = [], []
        elif callable(self.importance_type):
            step = self.importance_type(self.backbone, activations or {}, head_weight)
        else:
            step = step_importance(self.hat, self.importance_type, activations, head_weight)
        self.importance.add_step(step, training_mask=self._mask)
        self._activation_sum = {}
        self._activation_batches = 0

    @override
    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        # The importance first: it reads the raw gradients, before the factor rewrites them.
        self.add_step_importance()
        super().on_before_optimizer_step(optimizer)

    @override
    def condition_gradients(self) -> None:
        if self._mask is None:
            raise RuntimeError("FGAdaHAT: no mask from the training step to measure sparsity.")
        with torch.no_grad():
            sparsity = layer_sparsity(self._mask, self.hat.cumulative_mask())
        fg_adahat_condition_gradients(
            self.hat,
            self.importance,
            sparsity,
            alpha=self.adjustment_intensity,
            scheduler=self.importance_scheduler_type,
            aggregation=self.aggregation,
            base_mask_sparsity_reg=self.base_mask_sparsity_reg,
            base_linear=self.base_linear,
            filter_by_cumulative_mask=self.filter_by_cumulative_mask,
        )

    @override
    def per_step_parameters(self) -> list[Any] | None:
        if self.importance.task_ids.numel() == 0:
            return None
        return list(update_parameters(self.hat))

    @override
    def step_factors(self) -> list[Tensor]:
        return fg_adahat_update_factors(
            self.hat,
            self.importance,
            self.step_sparsity(),
            alpha=self.adjustment_intensity,
            scheduler=self.importance_scheduler_type,
            aggregation=self.aggregation,
            base_mask_sparsity_reg=self.base_mask_sparsity_reg,
            base_linear=self.base_linear,
            filter_by_cumulative_mask=self.filter_by_cumulative_mask,
        )

    @override
    def on_train_end(self) -> None:
        super().on_train_end()  # stores the task's mask, which the importance filter reads
        task_id = self.backbone.check_task_id_ready()
        self.importance.all_reduce_steps()
        self.importance.end_task(task_id, self.hat.stored_mask(task_id))
