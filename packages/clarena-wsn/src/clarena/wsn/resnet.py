"""WSN-masked ResNets: every convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

from typing import Any

from clarena.backbones import extends_arguments
from clarena.backbones.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
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


class WSNMaskResNet18(WSNMaskResNet, ResNet18):
    """WSN-masked ResNet-18."""


class WSNMaskResNet34(WSNMaskResNet, ResNet34):
    """WSN-masked ResNet-34."""


class WSNMaskResNet50(WSNMaskResNet, ResNet50):
    """WSN-masked ResNet-50 (the docs' "WSNMaskResNet52")."""


class WSNMaskResNet101(WSNMaskResNet, ResNet101):
    """WSN-masked ResNet-101."""


class WSNMaskResNet152(WSNMaskResNet, ResNet152):
    """WSN-masked ResNet-152."""


#: The published docs call the 50-layer ResNet "WSNMaskResNet52".
WSNMaskResNet52 = WSNMaskResNet50
