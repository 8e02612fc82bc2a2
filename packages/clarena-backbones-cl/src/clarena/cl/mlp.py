"""Continual-learning MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from clarena.backbones import MLP
from clarena.backbones.layers import ActivationLayer
from clarena.cl.base import CLBackbone


class CLMLP(CLBackbone, MLP):
    """:class:`~clarena.backbones.MLP` shared across tasks. Arguments as for ``MLP``."""

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
        MLP.__init__(
            self,
            input_dim=input_dim,
            hidden_dims=hidden_dims,
            output_dim=output_dim,
            activation_layer=activation_layer,
            batch_normalization=batch_normalization,
            bias=bias,
            dropout=dropout,
        )
        self._init_task_state()
