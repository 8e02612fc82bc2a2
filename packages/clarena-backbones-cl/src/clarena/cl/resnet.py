"""Continual-learning ResNets."""

from __future__ import annotations

from typing import Any

from clarena.backbones import extends_arguments
from clarena.backbones.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.cl.base import CLBackbone


class CLResNet(CLBackbone, ResNet):
    """:class:`~clarena.backbones.ResNet` shared across tasks. Arguments as for ``ResNet``."""

    @extends_arguments(ResNet)
    def __init__(self, **arguments: Any) -> None:
        ResNet.__init__(self, **arguments)
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


#: The published docs call the 50-layer ResNet "CLResNet52".
CLResNet52 = CLResNet50
