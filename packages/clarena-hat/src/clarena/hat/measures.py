"""Parameter-wise measures built from neuron-wise (unit) measures.

A weight connects output unit ``i`` of layer ``l`` to input unit ``j``; its measure aggregates
the measure of unit ``i`` of ``l`` and that of input unit ``j``. The input units of a layer are
the output units of every layer summed into its input (:meth:`Backbone.input_layer_names`:
in a ResNet a block's output is its last convolution plus its shortcut), combined by elementwise
max; a layer fed by the raw input sees a constant ``raw_input_value``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from clarena.backbones import Backbone
from clarena.hat._layers import layer_weight

#: Ways to combine the output-unit and input-unit measures of a weight.
AGGREGATIONS: tuple[str, ...] = ("min", "max", "mean")


def input_unit_measure(
    backbone: Backbone,
    unit_measure: Mapping[str, Tensor],
    layer_name: str,
    raw_input_value: float = 1.0,
) -> Tensor:
    """The measure of the input units of ``layer_name``.

    Args:
        backbone: the network.
        unit_measure: layer name → ``(units,)`` measure of that layer's output units.
        layer_name: the weighted layer.
        raw_input_value: the measure of raw input units (1 for binary masks: the input is always
            used; the number of tasks for summative masks).

    Returns:
        ``(input units,)``: elementwise max over the layers feeding ``layer_name``.
    """
    names = backbone.input_layer_names(layer_name)
    if not names:
        weight = layer_weight(backbone, layer_name)
        reference = unit_measure[layer_name]
        groups = int(getattr(backbone.get_layer_by_name(layer_name), "groups", 1))
        return torch.full(
            (weight.shape[1] * groups,),
            raw_input_value,
            dtype=reference.dtype,
            device=reference.device,
        )
    measure = unit_measure[names[0]]
    for name in names[1:]:
        measure = torch.maximum(measure, unit_measure[name])
    return measure


def weight_measure(
    backbone: Backbone,
    unit_measure: Mapping[str, Tensor],
    layer_name: str,
    aggregation: str = "min",
    raw_input_value: float | None = 1.0,
) -> Tensor:
    """The measure of ``layer_name``'s weight, broadcastable to the weight.

    ``raw_input_value=None`` gives a layer fed by the raw input no input side: its weight measure
    is the output-unit measure, whatever the aggregation (FG-AdaHAT's importance).

    Returns:
        ``(out, in)`` for a linear layer, ``(out, in, 1, 1)`` for a convolution: aggregate of the
        output-unit measure ``i`` and the input-unit measure ``j``. A layer fed by the raw input
        has one input measure for every ``j``, so its measure is the column ``(out, 1)``
        (``(out, 1, 1, 1)``), broadcast over the inputs.

    Raises:
        ValueError: an unknown aggregation, or input units that do not match the weight.

    A grouped (depthwise) convolution's weight ``(out, in / groups, k...)`` connects output unit
    ``i`` to the input units of its group only: entry ``(i, j)`` to input unit
    ``(i // (out / groups)) * (in / groups) + j``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"unknown aggregation {aggregation!r}; use one of "
            f"{', '.join(repr(a) for a in AGGREGATIONS)}."
        )
    weight = layer_weight(backbone, layer_name)
    out = unit_measure[layer_name]
    if raw_input_value is None and not backbone.input_layer_names(layer_name):
        if weight.shape[0] != out.numel():
            raise ValueError(
                f"layer '{layer_name}': weight of shape {tuple(weight.shape)} does not have "
                f"{out.numel()} output units."
            )
        measure = out[:, None].expand(-1, weight.shape[1])
        return measure.reshape(*measure.shape, *(1,) * (weight.ndim - 2))
    # raw_input_value is only read for a layer without input layers, handled above when None.
    inp = input_unit_measure(backbone, unit_measure, layer_name, raw_input_value or 0.0)
    groups = int(getattr(backbone.get_layer_by_name(layer_name), "groups", 1))
    if (
        weight.shape[0] != out.numel()
        or weight.shape[1] * groups != inp.numel()
        or out.numel() % groups
    ):
        raise ValueError(
            f"layer '{layer_name}': weight of shape {tuple(weight.shape)} in {groups} group(s) "
            f"does not connect {out.numel()} output units to {inp.numel()} input units."
        )
    out = out[:, None]
    if not backbone.input_layer_names(layer_name):
        inp = inp[None, :1]  # every raw input unit measures raw_input_value: a column
    elif groups == 1:
        inp = inp[None, :]
    else:
        # A grouped convolution's weight (out, in / groups, k...): output unit i reads the input
        # channels of its group, g = i // (out / groups): entry (i, j) connects input unit
        # g * (in / groups) + j.
        inp = inp.view(groups, 1, -1).expand(-1, out.numel() // groups, -1)
        inp = inp.reshape(out.numel(), weight.shape[1])
    if aggregation == "min":
        measure = torch.minimum(out, inp)
    elif aggregation == "max":
        measure = torch.maximum(out, inp)
    else:
        measure = (out + inp) / 2
    return measure.view(*measure.shape, *(1,) * (weight.ndim - 2))


def parameter_measures(
    backbone: Backbone,
    unit_measure: Mapping[str, Tensor],
    aggregation: str = "min",
    raw_input_value: float = 1.0,
) -> dict[str, tuple[Tensor, Tensor | None]]:
    """Parameter-wise measures of every weighted layer from a neuron-wise ``unit_measure``.

    Args:
        backbone: the network.
        unit_measure: layer name → ``(units,)`` measure (a mask, a cumulative or summative mask).
        aggregation: ``'min'``, ``'max'`` or ``'mean'`` of the output- and input-unit measures.
        raw_input_value: measure of the raw input units (see :func:`input_unit_measure`).

    Returns:
        Layer name → ``(weight measure, bias measure)``, shaped exactly like the weight (a
        convolution's measure is broadcast over its kernel) and the bias (``None`` without bias).
    """
    measures: dict[str, tuple[Tensor, Tensor | None]] = {}
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        weight = weight_measure(backbone, unit_measure, name, aggregation, raw_input_value)
        bias = unit_measure[name] if getattr(layer, "bias", None) is not None else None
        measures[name] = (weight.expand_as(layer_weight(backbone, name)), bias)
    return measures
