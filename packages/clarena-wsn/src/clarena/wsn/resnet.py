"""WSN-masked ResNets: every convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

import os

from torch import nn

from clarena.backbones import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.layers import ActivationLayer
from clarena.cl import CLResNet, resolve_batch_norm_mode
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

    def __init__(
        self,
        input_channels: int = 3,
        output_dim: int = 512,
        activation_layer: ActivationLayer = nn.ReLU,
        batch_normalization: str | bool | None = "independent",
        bias: bool = False,
        pretrained_weights: str | os.PathLike[str] | None = None,
        small_input: bool = False,
    ) -> None:
        mode = resolve_batch_norm_mode(batch_normalization, type(self).__name__)
        ResNet.__init__(
            self,
            input_channels=input_channels,
            output_dim=output_dim,
            activation_layer=activation_layer,
            batch_normalization=mode is not None,
            bias=bias,
            pretrained_weights=pretrained_weights,
            small_input=small_input,
        )
        self._init_task_state()
        self._init_wsn(mode)


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
