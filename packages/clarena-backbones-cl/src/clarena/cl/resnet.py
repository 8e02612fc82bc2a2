"""Continual-learning ResNets: :class:`CLResNet` of any depth and its registered builders."""

from __future__ import annotations

from typing import Any

from clarena.backbones import extends_arguments, make_builder
from clarena.backbones.resnet import ResNet
from clarena.cl.base import CLBackbone


class CLResNet(CLBackbone, ResNet):
    """:class:`~clarena.backbones.ResNet` shared across tasks. Arguments as for ``ResNet``."""

    @extends_arguments(ResNet)
    def __init__(self, **arguments: Any) -> None:
        super().__init__(**arguments)


CLResNet18 = make_builder(CLResNet, "CLResNet18", "Continual-learning ResNet-18.", depth=18)
CLResNet34 = make_builder(CLResNet, "CLResNet34", "Continual-learning ResNet-34.", depth=34)
CLResNet50 = make_builder(
    CLResNet, "CLResNet50", 'Continual-learning ResNet-50 (the docs\' "CLResNet52").', depth=50
)
CLResNet101 = make_builder(CLResNet, "CLResNet101", "Continual-learning ResNet-101.", depth=101)
CLResNet152 = make_builder(CLResNet, "CLResNet152", "Continual-learning ResNet-152.", depth=152)
#: The published docs call the 50-layer ResNet "CLResNet52".
CLResNet52 = CLResNet50
