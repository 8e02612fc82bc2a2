"""Continual-learning ResNets."""

from __future__ import annotations

import os

from torch import nn

from clarena.backbones import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.layers import ActivationLayer
from clarena.cl.base import CLBackbone


class CLResNet(CLBackbone, ResNet):
    """:class:`~clarena.backbones.ResNet` shared across tasks. Arguments as for ``ResNet``."""

    def __init__(
        self,
        input_channels: int = 3,
        output_dim: int = 512,
        activation_layer: ActivationLayer = nn.ReLU,
        batch_normalization: bool = True,
        bias: bool = False,
        pretrained_weights: str | os.PathLike[str] | None = None,
        small_input: bool = False,
    ) -> None:
        ResNet.__init__(
            self,
            input_channels=input_channels,
            output_dim=output_dim,
            activation_layer=activation_layer,
            batch_normalization=batch_normalization,
            bias=bias,
            pretrained_weights=pretrained_weights,
            small_input=small_input,
        )
        self._init_task_state()


class CLResNet18(CLResNet, ResNet18):
    """Continual-learning ResNet-18."""


class CLResNet34(CLResNet, ResNet34):
    """Continual-learning ResNet-34."""


class CLResNet50(CLResNet, ResNet50):
    """Continual-learning ResNet-50 (the docs' "CLResNet52")."""


class CLResNet101(CLResNet, ResNet101):
    """Continual-learning ResNet-101."""


class CLResNet152(CLResNet, ResNet152):
    """Continual-learning ResNet-152."""
