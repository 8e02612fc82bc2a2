"""WSN-masked ResNets: every convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

from typing import Any

from clarena.backbones import extends_arguments, make_builder
from clarena.backbones.resnet import ResNet
from clarena.cl.resnet import CLResNet
from clarena.wsn.backbone import WSNMaskBackbone


class WSNMaskResNet(WSNMaskBackbone, CLResNet):
    """:class:`~clarena.backbones.ResNet` whose every weight and bias is selected by WSN masks.

    Use a depth class (:class:`WSNMaskResNet18` ...). Masked: ``conv1``, every block
    convolution, every shortcut convolution (``layer*/0/downsample/0``) and ``proj``. Batch-norm
    affine parameters are not masked; with ``'independent'`` batch norm each task has its own.

    Args:
        input_channels, output_dim, activation_layer, bias, pretrained_weights, small_input: as
            for ``ResNet``.
        batch_normalization: ``'independent'`` (default; one batch norm per task, no leak),
            ``'shared'``/``True`` (one for all tasks; leaks through its statistics and affine
            parameters) or ``None``/``False``. Alias ``batch_normalisation``. With
            ``'independent'``, each task's batch norm starts fresh (pretrained batch-norm
            statistics are not carried over).
    """

    @extends_arguments(ResNet)
    def __init__(
        self, *, batch_normalization: str | bool | None = "independent", **arguments: Any
    ) -> None:
        self._init_wsn(self._build_family(ResNet, batch_normalization, arguments))


# Depth builders over WSNMaskResNet(depth=...) (transitional, until #24's builders attach the method).
WSNMaskResNet18 = make_builder(WSNMaskResNet, "WSNMaskResNet18", "WSN-masked ResNet-18.", depth=18)
WSNMaskResNet34 = make_builder(WSNMaskResNet, "WSNMaskResNet34", "WSN-masked ResNet-34.", depth=34)
WSNMaskResNet50 = make_builder(WSNMaskResNet, "WSNMaskResNet50", "WSN-masked ResNet-50.", depth=50)
WSNMaskResNet101 = make_builder(
    WSNMaskResNet, "WSNMaskResNet101", "WSN-masked ResNet-101.", depth=101
)
WSNMaskResNet152 = make_builder(
    WSNMaskResNet, "WSNMaskResNet152", "WSN-masked ResNet-152.", depth=152
)
WSNMaskResNet52 = WSNMaskResNet50
