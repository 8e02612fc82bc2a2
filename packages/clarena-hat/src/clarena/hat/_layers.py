"""Typed access to a backbone's weighted layers."""

from __future__ import annotations

from torch import Tensor

from clarena.backbones.base import Backbone


def layer_weight(backbone: Backbone, layer_name: str) -> Tensor:
    """The weight tensor of weighted layer ``layer_name`` (``(out_units, in_units, k...)``).

    Raises:
        TypeError: the layer has no ``weight`` tensor.
    """
    weight = getattr(backbone.get_layer_by_name(layer_name), "weight", None)
    if not isinstance(weight, Tensor):
        raise TypeError(
            f"{type(backbone).__name__}: weighted layer '{layer_name}' has no weight tensor; "
            f"HAT needs a weight on every weighted layer."
        )
    return weight
