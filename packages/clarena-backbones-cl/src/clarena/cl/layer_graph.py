"""Who reads a weighted layer's units: the inverse of :meth:`Backbone.input_layer_names`.

Importance measures that look at a unit's *outgoing* weights (FG-AdaHAT's output-weight and
contribution-utility measures) need, for each weighted layer, the layers whose input sums that
layer's unit outputs, and the layers summed into the feature the heads read. In a residual
network neither follows list order: ``layer2/0/conv2`` is read by ``layer2/1/conv1`` and, through
the identity shortcut of ``layer2/1``, by ``layer3/0/conv1`` and ``layer3/0/downsample/0``.
"""

from __future__ import annotations

import sys

from clarena.backbones import MLP, Backbone


def output_layer_names(backbone: Backbone, layer_name: str) -> tuple[str, ...]:
    """Weighted layers whose input channels are (or sum) the unit outputs of ``layer_name``.

    Args:
        backbone: the network.
        layer_name: one of ``backbone.weighted_layer_names``.

    Returns:
        The readers in ``weighted_layer_names`` order; empty for a layer only the heads read.
        Layer ``M`` is listed exactly when ``layer_name`` is in ``backbone.input_layer_names(M)``.

    Raises:
        KeyError: ``layer_name`` is not a weighted layer of ``backbone``.
    """
    backbone.input_layer_names(layer_name)  # validates the name
    return tuple(
        name
        for name in backbone.weighted_layer_names
        if layer_name in backbone.input_layer_names(name)
    )


def feature_layer_names(backbone: Backbone) -> tuple[str, ...]:
    """Weighted layers whose unit outputs are summed into the feature the heads read.

    The feature's unit ``i`` is (a pooled) sum of unit ``i`` of each listed layer: the last layer
    of an MLP; the projection ``proj`` of a ResNet that has one; otherwise the last block's last
    convolution plus its shortcut (its downsample convolution, or the layers summed into the
    block's input when the shortcut is the identity).

    Raises:
        TypeError: a backbone family this function does not know; override
            :meth:`clarena.cl.CLBackbone.feature_layer_names` for it.
    """
    if isinstance(backbone, MLP):
        return (backbone.weighted_layer_names[-1],)
    # A ResNet instance means its module is loaded; importing it otherwise would load timm.
    resnet = sys.modules.get("clarena.backbones.resnet")
    if resnet is not None and isinstance(backbone, resnet.ResNet):
        if backbone.proj is not None:
            return ("proj",)
        block = backbone.layer4[-1]
        last = f"{block.layer_prefix}/{block.conv_names[-1]}"
        if block.downsample is not None:
            return (last, f"{block.layer_prefix}/downsample/0")
        return (last, *backbone.input_layer_names(f"{block.layer_prefix}/{block.conv_names[0]}"))
    raise TypeError(
        f"feature_layer_names does not know the layer graph of {type(backbone).__name__}; "
        f"override feature_layer_names() in it to return the layers summed into its feature."
    )
