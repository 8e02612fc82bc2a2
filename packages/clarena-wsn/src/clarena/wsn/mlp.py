"""WSN-masked MLP."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from clarena.backbones import MLP
from clarena.backbones.layers import ActivationLayer
from clarena.cl import CLMLP, resolve_batch_norm_mode
from clarena.wsn.backbone import WSNMaskBackbone


class WSNMaskMLP(WSNMaskBackbone, CLMLP):
    """:class:`~clarena.backbones.MLP` whose every weight and bias is selected by WSN masks.

    Args:
        input_dim, hidden_dims, output_dim, activation_layer, bias, dropout: as for ``MLP``.
        batch_normalization: ``None``/``False`` (default, none), ``'shared'``/``True`` (one batch
            norm for all tasks; it leaks) or ``'independent'`` (one per task). Alias
            ``batch_normalisation``.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int],
        output_dim: int,
        activation_layer: ActivationLayer = nn.ReLU,
        batch_normalization: str | bool | None = None,
        bias: bool = True,
        dropout: float | None = None,
    ) -> None:
        mode = resolve_batch_norm_mode(batch_normalization, type(self).__name__)
        MLP.__init__(
            self,
            input_dim=input_dim,
            hidden_dims=hidden_dims,
            output_dim=output_dim,
            activation_layer=activation_layer,
            batch_normalization=mode is not None,
            bias=bias,
            dropout=dropout,
        )
        self._init_task_state()
        self._init_wsn(mode)
