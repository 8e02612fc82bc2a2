"""HAT-masked MLP."""

from __future__ import annotations

from typing import Any

from torch import nn

from clarena.backbones import MLP, extends_arguments
from clarena.cl import CLMLP
from clarena.hat.base import HATMaskBackbone, check_zero_preserving
from clarena.hat.masked_batch_norm import MaskedBatchNorm1d


class HATMaskMLP(HATMaskBackbone, CLMLP):
    """:class:`~clarena.backbones.MLP` with HAT unit masks on every layer ``fc/0`` ... ``fc/L``.

    Args:
        input_dim, hidden_dims, output_dim, activation_layer, bias, dropout: as for ``MLP``.
        batch_normalization: ``None``/``False`` (none), ``'shared'``/``True`` (one batch norm for
            all tasks; leaks through its running statistics) or ``'independent'`` (one per task).
            Alias ``batch_normalisation``.
        gate: the mask gate; only ``'sigmoid'`` is supported.
    """

    @extends_arguments(MLP)
    def __init__(
        self,
        *,
        batch_normalization: str | bool | None = None,
        gate: str = "sigmoid",
        **arguments: Any,
    ) -> None:
        mode = self._build_family(MLP, batch_normalization, arguments)
        check_zero_preserving(self.fc_activation[0], type(self).__name__)
        self._init_hat(gate, mode)

    def _norm_layer(self, num_features: int) -> nn.Module:
        """Batch norm with the HAT mask folded into its affine transform."""
        return MaskedBatchNorm1d(num_features)

    def normalization_layer(self, layer_name: str) -> nn.Module | None:
        """The batch norm after ``fc/i`` (``None`` without batch norm)."""
        norm = self.fc_bn[self.weighted_layer_names.index(layer_name)]
        return None if isinstance(norm, nn.Identity) else norm
