"""WSN-masked MLP."""

from __future__ import annotations

from typing import Any

from clarena.backbones import MLP, extends_arguments
from clarena.cl import CLMLP
from clarena.wsn.backbone import WSNMaskBackbone


class WSNMaskMLP(WSNMaskBackbone, CLMLP):
    """:class:`~clarena.backbones.MLP` whose every weight and bias is selected by WSN masks.

    Args:
        input_dim, hidden_dims, output_dim, activation_layer, bias, dropout: as for ``MLP``.
        batch_normalization: ``None``/``False`` (default, none), ``'shared'``/``True`` (one batch
            norm for all tasks; it leaks) or ``'independent'`` (one per task). Alias
            ``batch_normalisation``.
    """

    @extends_arguments(MLP)
    def __init__(self, *, batch_normalization: str | bool | None = None, **arguments: Any) -> None:
        self._init_wsn(self._build_family(MLP, batch_normalization, arguments))
