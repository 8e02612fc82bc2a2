"""``WSNMaskMLP``: a :class:`~clarena.cl.CLMLP` with :class:`~clarena.wsn.WSN` attached."""

from __future__ import annotations

from clarena.cl import CLMLP
from clarena.wsn._builder import wsn_builder

WSNMaskMLP = wsn_builder("WSNMaskMLP", CLMLP, batch_norm_default=None)
WSNMaskMLP.__doc__ = """:class:`~clarena.cl.CLMLP` whose every weight and bias is selected by WSN masks.

Args:
    input_dim, hidden_dims, output_dim, activation_layer, bias, dropout: as for ``MLP``.
    batch_normalization: ``None``/``False`` (default, none), ``'shared'``/``True`` (one batch
        norm for all tasks; it leaks) or ``'independent'`` (one per task). Alias
        ``batch_normalisation``.

Returns:
    ``CLMLP(...).attach(WSN(batch_normalization=...))``; reach the method with
    :func:`clarena.wsn.wsn_of` or ``backbone.mask_method``.
"""
