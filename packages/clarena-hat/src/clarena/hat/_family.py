"""Where HAT finds a backbone family's batch norms and activation (MLP, ResNet).

A weighted layer's batch norm must be found to fold the mask into it and to protect its affine
parameters; the activation must map 0 to 0 so a masked unit passes nothing on. The core families
name these modules by convention; a backbone of another family with batch norms defines
``normalization_layer(layer_name)`` itself.
"""

from __future__ import annotations

import sys

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from clarena.backbones.base import Backbone
from clarena.backbones.mlp import MLP


def _resnet_class() -> type | None:
    # Not imported here: importing the ResNets loads timm; a ResNet instance implies the module.
    module = sys.modules.get("clarena.backbones.resnet")
    return None if module is None else module.ResNet


def _module_path(backbone: Backbone, layer_name: str) -> str | None:
    """The module path of the normalisation after ``layer_name`` in a core family, by convention."""
    if isinstance(backbone, MLP):
        return f"fc_bn.{backbone.weighted_layer_names.index(layer_name)}"
    resnet = _resnet_class()
    if resnet is not None and isinstance(backbone, resnet):
        if layer_name == "proj":
            return None
        if layer_name == "conv1":
            return "bn1"
        stage, block, *rest = layer_name.split("/")
        if rest == ["downsample", "0"]:
            return f"{stage}.{block}.downsample.1"
        return f"{stage}.{block}.{rest[0].replace('conv', 'bn')}"
    raise LookupError(layer_name)


def normalization_paths(backbone: Backbone, owner: str) -> dict[str, str | None]:
    """Each weighted layer's normalisation module path (``None``: no batch norm after it).

    Raises:
        TypeError: a backbone of another family has batch norms and no ``normalization_layer``.
    """
    custom = getattr(backbone, "normalization_layer", None)
    paths: dict[str, str | None] = {}
    named = {id(module): name for name, module in backbone.named_modules()}
    for layer_name in backbone.weighted_layer_names:
        if custom is not None:
            module = custom(layer_name)
            paths[layer_name] = None if module is None else named[id(module)]
            continue
        try:
            path = _module_path(backbone, layer_name)
        except LookupError:
            norms = [name for name, m in backbone.named_modules() if isinstance(m, _BatchNorm)]
            if norms:
                raise TypeError(
                    f"{owner}: cannot tell which batch norm follows each weighted layer of "
                    f"{type(backbone).__name__} (batch norms: {', '.join(norms)}); define "
                    f"normalization_layer(layer_name) on it, returning the module or None."
                ) from None
            return dict.fromkeys(backbone.weighted_layer_names)
        if path is not None and isinstance(backbone.get_submodule(path), nn.Identity):
            path = None
        paths[layer_name] = path
    return paths


def activations_to_check(backbone: Backbone) -> list[nn.Module]:
    """The activation modules HAT checks map 0 to 0 (one per family: all are of one kind).

    None for a backbone whose layer graph already accounts for them (``zero_preserving_graph``,
    timm backbones: a layer after an activation with ``f(0) != 0`` has no input layers, so its
    weights are conditioned on their output units alone).
    """
    if getattr(backbone, "zero_preserving_graph", False):
        return []
    if isinstance(backbone, MLP):
        return [backbone.fc_activation[0]]
    resnet = _resnet_class()
    if resnet is not None and isinstance(backbone, resnet):
        return [backbone.get_submodule("act1")]
    activation_module = "torch.nn.modules.activation"
    return [m for m in backbone.modules() if type(m).__module__ == activation_module]
