"""Neuron-wise importance measures of FG-AdaHAT that need no attribution library.

For weighted layer ``l`` with weight ``W_l`` of shape ``(N_l, N_in, k...)`` (dim 0 = units), its
gradient ``G_l``, its recorded activation ``h_l`` of shape ``(batch, N_l, spatial...)`` and the
set ``C(l)`` of layers that read its units (:meth:`clarena.cl.CLBackbone.output_layer_names`,
plus the head when ``l`` is summed into the feature):

- ``Win_i = sum_{j,k} |W_{l,i,j,k}|``, ``Wout_i = sum_{M in C(l)} sum_{m,k} |W_{M,m,i,k}|``;
- ``Gin_p``, ``Gout_p``: the same sums over ``|G|^p``;
- ``A_i = mean_{batch, spatial} |h_{l,:,i,:}|``.

The types (numbered as in the FG-AdaHAT annex): (1) ``input_weight_abs_sum`` = Win,
(2) ``output_weight_abs_sum`` = Wout, (3) ``input_weight_gradient_abs_sum`` = Gin_1 (IG),
(4) ``output_weight_gradient_abs_sum`` = Gout_1 (OG), (5) ``activation_abs`` = A,
(6) ``input_weight_abs_sum_x_activation_abs`` = Win·A (ICU),
(7) ``output_weight_abs_sum_x_activation_abs`` = Wout·A (CU),
(9) ``input_weight_gradient_square_sum`` = Gin_2, (10) ``output_weight_gradient_square_sum`` =
Gout_2, (11) ``input_weight_gradient_square_sum_x_activation_abs`` = Gin_2·A (AFI),
(12) ``output_weight_gradient_square_sum_x_activation_abs`` = Gout_2·A,
(22) ``cbp_adaptation`` = 1/Win, (23) ``cbp_adaptive_contribution`` = Wout·A/Win.
The attribution types (8, 13-21) need captum and are computed outside this package; their
per-layer results feed :class:`clarena.hat.FGAdaHATImportance` the same way.

Gradient types read ``.grad``: call :func:`step_importance` after ``backward()`` and before any
gradient conditioning or optimiser step, so the gradients are raw and the weights pre-step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from clarena.cl import CLBackbone
from clarena.hat._layers import layer_weight
from clarena.hat.method import HAT

#: Types computed here from weights, gradients and activations.
PLAIN_IMPORTANCE_TYPES: tuple[str, ...] = (
    "input_weight_abs_sum",
    "output_weight_abs_sum",
    "input_weight_gradient_abs_sum",
    "output_weight_gradient_abs_sum",
    "activation_abs",
    "input_weight_abs_sum_x_activation_abs",
    "output_weight_abs_sum_x_activation_abs",
    "input_weight_gradient_square_sum",
    "output_weight_gradient_square_sum",
    "input_weight_gradient_square_sum_x_activation_abs",
    "output_weight_gradient_square_sum_x_activation_abs",
    "cbp_adaptation",
    "cbp_adaptive_contribution",
)

#: Types that attribute the true-class logit to a layer's output with captum.
ATTRIBUTION_IMPORTANCE_TYPES: tuple[str, ...] = (
    "gradient_x_activation_abs",
    "conductance_abs",
    "internal_influence_abs",
    "gradcam_abs",
    "deeplift_abs",
    "deepliftshap_abs",
    "gradientshap_abs",
    "integrated_gradients_abs",
    "feature_ablation_abs",
    "lrp_abs",
)

#: All 23 FG-AdaHAT importance types.
IMPORTANCE_TYPES: tuple[str, ...] = PLAIN_IMPORTANCE_TYPES + ATTRIBUTION_IMPORTANCE_TYPES

# type -> (factor, power) terms multiplied together. A factor is "in"/"out" (weight or gradient
# sums on the input/output side), "act" (A) or "inv_in" (1 / input weight sum).
_TERMS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "input_weight_abs_sum": (("in", "w1"),),
    "output_weight_abs_sum": (("out", "w1"),),
    "input_weight_gradient_abs_sum": (("in", "g1"),),
    "output_weight_gradient_abs_sum": (("out", "g1"),),
    "activation_abs": (("act", None),),
    "input_weight_abs_sum_x_activation_abs": (("in", "w1"), ("act", None)),
    "output_weight_abs_sum_x_activation_abs": (("out", "w1"), ("act", None)),
    "input_weight_gradient_square_sum": (("in", "g2"),),
    "output_weight_gradient_square_sum": (("out", "g2"),),
    "input_weight_gradient_square_sum_x_activation_abs": (("in", "g2"), ("act", None)),
    "output_weight_gradient_square_sum_x_activation_abs": (("out", "g2"), ("act", None)),
    "cbp_adaptation": (("inv_in", "w1"),),
    "cbp_adaptive_contribution": (("out", "w1"), ("act", None), ("inv_in", "w1")),
}


def check_importance_type(importance_type: str) -> None:
    """Raise ``ValueError`` unless ``importance_type`` is one of :data:`IMPORTANCE_TYPES`."""
    if importance_type not in IMPORTANCE_TYPES:
        raise ValueError(
            f"unknown importance_type {importance_type!r}; use one of "
            f"{', '.join(repr(t) for t in IMPORTANCE_TYPES)}."
        )


def _elementwise(tensor: Tensor, kind: str, owner: str) -> Tensor:
    """``|W|`` (``w1``), ``|G|`` (``g1``) or ``G^2`` (``g2``) of a weight ``tensor``."""
    if kind == "w1":
        return tensor.detach().abs()
    grad = tensor.grad
    if grad is None:
        raise RuntimeError(
            f"{owner} has no gradient; compute gradient importance after backward() and before "
            f"optimizer.zero_grad()."
        )
    return grad.abs() if kind == "g1" else grad.square()


def input_side_sum(weight: Tensor, kind: str = "w1") -> Tensor:
    """``(N_l,)``: per unit, the sum over its incoming weights (dims 1..) of ``|W|``/``|G|``/``G²``.

    Args:
        weight: a layer's weight ``(N_l, N_in, k...)``.
        kind: ``'w1'`` weights, ``'g1'`` absolute gradients, ``'g2'`` squared gradients.
    """
    values = _elementwise(weight, kind, "input weight")
    return values.sum(dim=tuple(range(1, values.ndim)))


def output_side_sum(
    reader_weights: list[Tensor], num_units: int, kind: str = "w1"
) -> Tensor | None:
    """``(num_units,)``: per unit, the sum over the weights that read it in every reader.

    Args:
        reader_weights: each reader's weight ``(N_M, num_units, k...)`` (dim 1 = the units read).
        num_units: units of the layer being read.
        kind: as for :func:`input_side_sum`.

    Returns:
        The sum, or ``None`` when there is no reader.

    Raises:
        ValueError: a reader whose input width is not ``num_units``.
    """
    total: Tensor | None = None
    for weight in reader_weights:
        if weight.shape[1] != num_units:
            raise ValueError(
                f"a reader's weight of shape {tuple(weight.shape)} does not read {num_units} "
                f"units (dim 1 must match)."
            )
        values = _elementwise(weight, kind, "a reader's weight")
        dims = (0, *range(2, values.ndim))
        term = values.sum(dim=dims)
        total = term if total is None else total + term
    return total


def activation_abs(activation: Tensor) -> Tensor:
    """``(units,)``: mean of ``|h|`` over the batch and spatial dims of ``(batch, units, ...)``."""
    h = activation.detach().abs()
    return h.mean(dim=(0, *range(2, h.ndim)))


def _safe_inverse(values: Tensor) -> Tensor:
    # 1/0 would be inf and turn into NaN in min-max scaling; a unit with no input weight gets the
    # largest finite value instead (the most adaptable unit).
    largest = torch.finfo(values.dtype).max
    inverse = torch.where(values > 0, 1 / values, torch.full_like(values, largest))
    return inverse.clamp(max=largest)


def _layer_graph(backbone: CLBackbone) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """``(feature layers, layer -> readers)``, computed once per backbone (the graph is fixed)."""
    cached = backbone.__dict__.get("_importance_layer_graph")
    if cached is None:
        readers = {
            name: backbone.output_layer_names(name) for name in backbone.weighted_layer_names
        }
        cached = (backbone.feature_layer_names(), readers)
        backbone.__dict__["_importance_layer_graph"] = cached
    return cached


def step_importance(
    backbone: CLBackbone | HAT,
    importance_type: str,
    activations: Mapping[str, Tensor] | None = None,
    head_weight: Tensor | None = None,
) -> dict[str, Tensor]:
    """One training step's importance of every unit of every weighted layer.

    Args:
        backbone: the network (its layers' weights, and ``.grad`` for gradient types), or the
            HAT method attached to it.
        importance_type: one of :data:`PLAIN_IMPORTANCE_TYPES`.
        activations: layer name → recorded activation ``(batch, units, ...)`` (the third output
            of a HAT forward); needed by activation types.
        head_weight: ``(classes, output_dim)`` weight of the head that reads the feature (the
            current task's head), read as an extra reader of :meth:`feature_layer_names`; its
            ``.grad`` for gradient types. Needed by output-side types.

    Returns:
        Layer name → ``(units,)`` importance, detached, in the weights' dtype.

    Raises:
        ValueError: an unknown or attribution type, or a missing input the type needs.
    """
    if isinstance(backbone, HAT):
        backbone = backbone.backbone
    check_importance_type(importance_type)
    if importance_type not in PLAIN_IMPORTANCE_TYPES:
        raise ValueError(
            f"importance_type {importance_type!r} attributes with captum, which clarena.hat does "
            f"not do; compute it outside and pass it to FGAdaHATImportance.add_step, or use one "
            f"of {', '.join(repr(t) for t in PLAIN_IMPORTANCE_TYPES)}."
        )
    terms = _TERMS[importance_type]
    factors = {factor for factor, _ in terms}
    if "act" in factors and activations is None:
        raise ValueError(
            f"importance_type {importance_type!r} needs the activations of the forward pass."
        )
    feature_layers: tuple[str, ...] = ()
    readers_of: dict[str, tuple[str, ...]] = {}
    if "out" in factors:
        if head_weight is None:
            raise ValueError(
                f"importance_type {importance_type!r} reads the weights that leave each unit, "
                f"so it needs head_weight, the weight of the head reading the feature."
            )
        feature_layers, readers_of = _layer_graph(backbone)
    result = {}
    for name in backbone.weighted_layer_names:
        weight = layer_weight(backbone, name)
        num_units = weight.shape[0]
        importance: Tensor | None = None
        for factor, kind in terms:
            if factor == "act":
                assert activations is not None  # checked above when "act" in factors
                value = activation_abs(activations[name])
            elif kind is None:
                raise AssertionError(f"importance term {factor!r} has no weight kind")
            elif factor == "out":
                readers = [layer_weight(backbone, r) for r in readers_of[name]]
                if name in feature_layers:
                    assert head_weight is not None  # checked above when "out" in factors
                    readers.append(head_weight)
                summed = output_side_sum(readers, num_units, kind)
                if summed is None:
                    summed = torch.zeros(num_units, dtype=weight.dtype, device=weight.device)
                value = summed
            else:
                value = input_side_sum(weight, kind)
                if factor == "inv_in":
                    value = _safe_inverse(value)
            importance = value if importance is None else importance * value
        assert importance is not None
        if "inv_in" in factors:
            importance = importance.clamp(max=torch.finfo(importance.dtype).max)
        result[name] = importance.to(device=weight.device, dtype=weight.dtype)
    return result
