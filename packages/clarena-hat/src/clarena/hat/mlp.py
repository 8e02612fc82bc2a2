"""``HATMaskMLP``: :class:`~clarena.cl.CLMLP` with :class:`~clarena.hat.HAT` attached."""

from __future__ import annotations

from clarena.cl import CLMLP
from clarena.hat.builders import hat_builder

HATMaskMLP = hat_builder(
    "HATMaskMLP",
    CLMLP,
    None,
    """:class:`~clarena.backbones.MLP` with HAT unit masks on every layer ``fc/0`` ... ``fc/L``:
    ``CLMLP(...).attach(HAT(gate, batch_normalization))``.

    Args:
        input_dim, hidden_dims, output_dim, activation_layer, bias, dropout: as for ``MLP``.
        batch_normalization: ``None``/``False`` (none), ``'shared'``/``True`` (one batch norm for
            all tasks; leaks through its running statistics) or ``'independent'`` (one per task).
            Alias ``batch_normalisation``.
        gate: the mask gate; only ``'sigmoid'`` is supported.

    Returns:
        The ``CLMLP``; its HAT method is ``backbone.mask_method`` (:func:`clarena.hat.hat_of`).
    """,
)
"""Builder: ``CLMLP(...)`` with :class:`~clarena.hat.HAT` attached (``batch_normalization``
defaults to ``None``)."""
