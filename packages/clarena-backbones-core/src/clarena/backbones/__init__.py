"""clarena backbone networks.

Core backbones (:class:`Backbone`, :class:`MLP`, :class:`ResNet` and its depth builders
:func:`ResNet18` ...) live here; the ResNets load on first access, so ``import clarena.backbones``
imports neither timm nor torchvision. Every other backbone name (``CLMLP``, ``HATMaskResNet18``,
``WSNMaskMLP`` ...) resolves on first access from the ``clarena.backbones`` entry-point group of
the installed distributions, so configs can always say ``_target_: clarena.backbones.<Name>``.
:func:`available_backbones` lists what is installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clarena.backbones._arguments import checked_keywords, extends_arguments, make_builder
from clarena.backbones._version import __version__
from clarena.backbones.base import Backbone
from clarena.backbones.mlp import MLP
from clarena.backbones.output import BackboneOutput
from clarena.backbones.registry import (
    BackboneNotInstalledError,
    available_backbones,
    resolve_backbone,
)

if TYPE_CHECKING:
    from clarena.backbones.resnet import (
        ResNet,
        ResNet18,
        ResNet34,
        ResNet50,
        ResNet52,
        ResNet101,
        ResNet152,
    )

__all__ = [
    "MLP",
    "Backbone",
    "BackboneNotInstalledError",
    "BackboneOutput",
    "ResNet",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet52",
    "ResNet101",
    "ResNet152",
    "__version__",
    "available_backbones",
    "checked_keywords",
    "extends_arguments",
    "make_builder",
    "resolve_backbone",
]


def __getattr__(name: str) -> Any:
    # ResNets resolve lazily like every registered name: importing timm loads torchvision, which
    # users of the MLP alone should not pay for.
    if name.startswith("__"):
        raise AttributeError(name)
    if name == "ResNet":
        from clarena.backbones.resnet import ResNet

        return ResNet
    backbone = resolve_backbone(name)
    globals()[name] = backbone
    return backbone
