"""``HATMaskResNet18`` ...: the CL ResNets with :class:`~clarena.hat.HAT` attached; every
convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

from clarena.cl.resnet import CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152
from clarena.hat.builders import hat_builder

_DOC = """HAT-masked ResNet-{depth}: ``CLResNet{depth}(...).attach(HAT(gate, batch_normalization))``.

    Args:
        input_channels, output_dim, activation_layer, bias, pretrained_weights, small_input: as
            for ``ResNet``.
        batch_normalization: ``'independent'`` (default; one batch norm per task, no leak),
            ``'shared'``/``True`` (one for all tasks; leaks through its running statistics) or
            ``None``/``False``. Alias ``batch_normalisation``. With ``'independent'``, each task's
            batch norm starts fresh (pretrained batch-norm statistics are not carried over).
        gate: the mask gate; only ``'sigmoid'`` is supported.

    Returns:
        The ``CLResNet{depth}``; its HAT method is ``backbone.mask_method``
        (:func:`clarena.hat.hat_of`).
    """

HATMaskResNet18 = hat_builder("HATMaskResNet18", CLResNet18, "independent", _DOC.format(depth=18))
"""Builder: ``CLResNet18(...)`` with :class:`~clarena.hat.HAT` attached."""
HATMaskResNet34 = hat_builder("HATMaskResNet34", CLResNet34, "independent", _DOC.format(depth=34))
"""Builder: ``CLResNet34(...)`` with :class:`~clarena.hat.HAT` attached."""
HATMaskResNet50 = hat_builder("HATMaskResNet50", CLResNet50, "independent", _DOC.format(depth=50))
"""Builder: ``CLResNet50(...)`` with :class:`~clarena.hat.HAT` attached (the docs'
``HATMaskResNet52``)."""
HATMaskResNet101 = hat_builder(
    "HATMaskResNet101", CLResNet101, "independent", _DOC.format(depth=101)
)
"""Builder: ``CLResNet101(...)`` with :class:`~clarena.hat.HAT` attached."""
HATMaskResNet152 = hat_builder(
    "HATMaskResNet152", CLResNet152, "independent", _DOC.format(depth=152)
)
"""Builder: ``CLResNet152(...)`` with :class:`~clarena.hat.HAT` attached."""
HATMaskResNet52 = HATMaskResNet50
"""The published docs call the 50-layer ResNet "HATMaskResNet52": the same builder."""
