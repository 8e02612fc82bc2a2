"""``WSNMaskResNet18`` ...: CL ResNets with :class:`~clarena.wsn.WSN` attached.

Masked: ``conv1``, every block convolution, every shortcut convolution
(``layer*/0/downsample/0``) and ``proj``. Batch-norm affine parameters are not masked; with
``'independent'`` batch norm each task has its own.
"""

from __future__ import annotations

from clarena.cl.resnet import CLResNet18, CLResNet34, CLResNet50, CLResNet101, CLResNet152
from clarena.wsn._builder import wsn_builder

_DOC = """WSN-masked ResNet-{depth}: ``CLResNet{depth}(...)`` with WSN attached.

Args:
    input_channels, output_dim, activation_layer, bias, pretrained_weights, small_input: as for
        ``ResNet{depth}``.
    batch_normalization: ``'independent'`` (default; one batch norm per task, no leak),
        ``'shared'``/``True`` (one for all tasks; leaks through its statistics and affine
        parameters) or ``None``/``False``. Alias ``batch_normalisation``. With
        ``'independent'``, each task's batch norm starts fresh (pretrained batch-norm statistics
        are not carried over).
"""

WSNMaskResNet18 = wsn_builder("WSNMaskResNet18", CLResNet18, batch_norm_default="independent")
WSNMaskResNet34 = wsn_builder("WSNMaskResNet34", CLResNet34, batch_norm_default="independent")
WSNMaskResNet50 = wsn_builder("WSNMaskResNet50", CLResNet50, batch_norm_default="independent")
WSNMaskResNet101 = wsn_builder("WSNMaskResNet101", CLResNet101, batch_norm_default="independent")
WSNMaskResNet152 = wsn_builder("WSNMaskResNet152", CLResNet152, batch_norm_default="independent")
for _depth, _builder in (
    (18, WSNMaskResNet18),
    (34, WSNMaskResNet34),
    (50, WSNMaskResNet50),
    (101, WSNMaskResNet101),
    (152, WSNMaskResNet152),
):
    _builder.__doc__ = _DOC.format(depth=_depth)

#: The published docs call the 50-layer ResNet "WSNMaskResNet52".
WSNMaskResNet52 = WSNMaskResNet50
