"""Multi-layer perceptron backbone."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from clarena.backbones.base import Backbone, check_batch
from clarena.backbones.layers import ActivationLayer, resolve_activation_layer


class MLP(Backbone):
    """Multi-layer perceptron: every layer is linear → batch norm → activation → dropout.

    Weighted layers are ``fc/0`` ... ``fc/{len(hidden_dims)}``; the last one outputs the
    ``output_dim`` feature. Inputs of any shape that flattens to ``input_dim`` features per sample
    are accepted (``(batch, 1, 28, 28)`` for ``input_dim=784``).

    Args:
        input_dim: features per input sample.
        hidden_dims: widths of the hidden layers, input to output.
        output_dim: width of the output feature.
        activation_layer: activation after each layer (``nn.ReLU`` by default; a class, a
            factory, a timm name such as ``'relu'``, or ``None``).
        batch_normalization: add ``BatchNorm1d`` after each linear layer (alias
            ``batch_normalisation``).
        bias: linear layers have a bias.
        dropout: dropout probability after each activation; ``None`` or 0 for none.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        output_dim: int,
        activation_layer: ActivationLayer = nn.ReLU,
        batch_normalization: bool = False,
        bias: bool = True,
        dropout: float | None = None,
    ) -> None:
        Backbone.__init__(self, output_dim)
        owner = type(self).__name__
        self.input_dim: int = _positive_int(input_dim, "input_dim", owner)
        dims = [_positive_int(d, "hidden_dims entry", owner) for d in _as_list(hidden_dims, owner)]
        if not isinstance(batch_normalization, bool):
            raise TypeError(
                f"{owner}: batch_normalization must be true or false; got {batch_normalization!r}."
            )
        if dropout is not None and not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"{owner}: dropout must be in [0, 1); got {dropout!r}.")
        self.hidden_dims: list[int] = dims
        self.batch_normalization: bool = batch_normalization
        make_activation = resolve_activation_layer(activation_layer, owner)

        widths = [self.input_dim, *dims, output_dim]
        self.fc = nn.ModuleList()
        self.fc_bn = nn.ModuleList()
        self.fc_activation = nn.ModuleList()
        self.fc_dropout = nn.ModuleList()
        previous: tuple[str, ...] = ()
        for index, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            self.fc.append(nn.Linear(width_in, width_out, bias=bias))
            self.fc_bn.append(self._norm_layer(width_out) if batch_normalization else nn.Identity())
            self.fc_activation.append(make_activation())
            self.fc_dropout.append(nn.Dropout(float(dropout)) if dropout else nn.Identity())
            name = f"fc/{index}"
            self._add_weighted_layer(name, previous)
            previous = (name,)

    def _norm_layer(self, num_features: int) -> nn.Module:
        """The normalisation module after a linear layer; subclasses may keep one per task."""
        return nn.BatchNorm1d(num_features)

    def _features(self, input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        check_batch(input, type(self).__name__)
        if input.ndim < 2 or input[0].numel() != self.input_dim:
            raise ValueError(
                f"{type(self).__name__} expects a batch of inputs with {self.input_dim} features "
                f"per sample (any shape that flattens to (batch, {self.input_dim})); got shape "
                f"{tuple(input.shape)}. Check input_dim against your dataset."
            )
        x = input.flatten(1)
        activations: dict[str, Tensor] = {}
        for index, name in enumerate(self.weighted_layer_names):
            x = self.layer_forward(name, self.fc[index], x)
            x = self.fc_bn[index](x)
            x = self.unit_gate(name, x)
            x = self.fc_activation[index](x)
            x = self.fc_dropout[index](x)
            activations[name] = x
        return x, activations


def _as_list(values: Sequence[int], owner: str) -> list[int]:
    if isinstance(values, int | str) or not hasattr(values, "__iter__"):
        raise TypeError(f"{owner}: hidden_dims must be a list of layer widths; got {values!r}.")
    return list(values)


def _positive_int(value: object, what: str, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {what} must be a positive integer; got {value!r}.")
    return value
