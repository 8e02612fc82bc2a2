"""clarena HAT: hard attention to the task (Serra et al., 2018), AdaHAT and FG-AdaHAT, in plain PyTorch.

HAT is a mask method (:class:`HAT`, entry point ``hat`` of ``clarena.mask_methods``) attached to
a continual-learning backbone: ``CLMLP(...).attach(HAT())``. The published names
``HATMaskMLP``, ``HATMaskResNet18`` ... are builders that do just that, also reachable as
``clarena.backbones.HATMaskMLP`` ... through the registry; :func:`hat_of` returns a backbone's
HAT method.
The training-loop functions live in :mod:`clarena.hat.mechanics`; FG-AdaHAT's importance
measures in :mod:`clarena.hat.importance` and its accumulation and factor in
:mod:`clarena.hat.fg_adahat`.
"""

from __future__ import annotations

from clarena.hat._version import __version__
from clarena.hat.fg_adahat import (
    SCHEDULERS,
    SUMMING_STRATEGIES,
    FGAdaHATImportance,
    fg_adahat_condition_gradients,
    minmax_scale,
    summing_weights,
    weight_importance,
)
from clarena.hat.importance import (
    ATTRIBUTION_IMPORTANCE_TYPES,
    IMPORTANCE_TYPES,
    PLAIN_IMPORTANCE_TYPES,
    step_importance,
)
from clarena.hat.mask_store import PackedMaskStore
from clarena.hat.masked_batch_norm import MaskedBatchNorm1d, MaskedBatchNorm2d
from clarena.hat.measures import (
    AGGREGATIONS,
    input_unit_measure,
    parameter_measures,
    weight_measure,
)
from clarena.hat.mechanics import (
    HATTarget,
    adahat_condition_gradients,
    check_adahat_optimizer,
    check_optimizer,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    layer_sparsity,
    sparsity_regularization,
    uncovered_parameters,
)
from clarena.hat.method import (
    EMBEDDING_INIT_MODES,
    GATES,
    HAT,
    STEP_ARGUMENTS,
    annealed_scale,
    hat_of,
    zero_subnormal_gates,
)
from clarena.hat.mlp import HATMaskMLP
from clarena.hat.protection import (
    adahat_update_factors,
    fg_adahat_update_factors,
    protection_factors,
    update_parameters,
)
from clarena.hat.resnet import (
    HATMaskResNet18,
    HATMaskResNet34,
    HATMaskResNet50,
    HATMaskResNet52,
    HATMaskResNet101,
    HATMaskResNet152,
)

__all__ = [
    "AGGREGATIONS",
    "ATTRIBUTION_IMPORTANCE_TYPES",
    "EMBEDDING_INIT_MODES",
    "GATES",
    "HAT",
    "IMPORTANCE_TYPES",
    "PLAIN_IMPORTANCE_TYPES",
    "SCHEDULERS",
    "STEP_ARGUMENTS",
    "SUMMING_STRATEGIES",
    "FGAdaHATImportance",
    "HATMaskMLP",
    "HATMaskResNet18",
    "HATMaskResNet34",
    "HATMaskResNet50",
    "HATMaskResNet52",
    "HATMaskResNet101",
    "HATMaskResNet152",
    "HATTarget",
    "MaskedBatchNorm1d",
    "MaskedBatchNorm2d",
    "PackedMaskStore",
    "__version__",
    "adahat_condition_gradients",
    "adahat_update_factors",
    "annealed_scale",
    "check_adahat_optimizer",
    "check_optimizer",
    "clamp_task_embedding",
    "compensate_embedding_gradients",
    "condition_gradients",
    "fg_adahat_condition_gradients",
    "fg_adahat_update_factors",
    "hat_of",
    "input_unit_measure",
    "layer_sparsity",
    "minmax_scale",
    "parameter_measures",
    "protection_factors",
    "sparsity_regularization",
    "step_importance",
    "summing_weights",
    "uncovered_parameters",
    "update_parameters",
    "weight_importance",
    "weight_measure",
    "zero_subnormal_gates",
]
