"""ResNet feature extractors built from timm's residual blocks.

Parameter names follow timm and torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``), so their ResNet checkpoints load without a mapping table. The
classifier ``fc`` is not part of a backbone; when ``output_dim`` differs from the trunk width a
linear projection ``proj`` is the last weighted layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar, cast

import torch
from timm.layers import SelectAdaptivePool2d
from timm.models.resnet import BasicBlock, Bottleneck, downsample_conv
from torch import Tensor, nn

from clarena.backbones._arguments import make_builder
from clarena.backbones._pretrained import load_trunk_state_dict
from clarena.backbones.base import Backbone, check_batch
from clarena.backbones.layers import ActivationLayer, resolve_activation_layer


class _GatedBlock:
    """Forward pass shared by the residual blocks of clarena ResNets.

    :meth:`gated_forward` runs timm's block with each convolution through
    ``backbone.layer_forward`` and each normalised output through ``backbone.unit_gate``, so mask
    methods act inside timm's blocks without copying them. timm's own ``forward(x)`` is left as
    it is. The residual sum is out of place so recorded activations stay as they were.
    """

    layer_prefix: str
    downsample: nn.Module | None

    def _gated_conv(
        self, backbone: Backbone, name: str, conv: nn.Module, norm: nn.Module, x: Tensor
    ) -> Tensor:
        full_name = f"{self.layer_prefix}/{name}"
        return backbone.unit_gate(full_name, norm(backbone.layer_forward(full_name, conv, x)))

    def _shortcut(self, backbone: Backbone, x: Tensor, activations: dict[str, Tensor]) -> Tensor:
        if self.downsample is None:
            return x
        # timm's downsample_conv is an nn.Sequential of the convolution ("0") and its norm ("1").
        conv, norm = self.downsample.get_submodule("0"), self.downsample.get_submodule("1")
        shortcut = self._gated_conv(backbone, "downsample/0", conv, norm, x)
        activations[f"{self.layer_prefix}/downsample/0"] = shortcut
        return shortcut


class ResNetBasicBlock(_GatedBlock, BasicBlock):
    """timm ``BasicBlock`` (two 3x3 convolutions) whose forward routes through the backbone."""

    # create_aa gives an nn.Identity when anti-aliasing is off; timm annotates it Optional.
    aa: nn.Module
    conv_names: ClassVar[tuple[str, ...]] = ("conv1", "conv2")

    def gated_forward(
        self, x: Tensor, backbone: Backbone, activations: dict[str, Tensor]
    ) -> Tensor:
        """Map ``(batch, inplanes, H, W)`` to ``(batch, planes, H/stride, W/stride)``."""
        p = self.layer_prefix
        shortcut = self._shortcut(backbone, x, activations)
        x = self._gated_conv(backbone, "conv1", self.conv1, self.bn1, x)
        x = self.aa(self.act1(self.drop_block(x)))
        activations[f"{p}/conv1"] = x
        x = self._gated_conv(backbone, "conv2", self.conv2, self.bn2, x)
        activations[f"{p}/conv2"] = x
        return self.act2(x + shortcut)


class ResNetBottleneck(_GatedBlock, Bottleneck):
    """timm ``Bottleneck`` (1x1, 3x3, 1x1 convolutions) whose forward routes through the backbone."""

    # create_aa gives an nn.Identity when anti-aliasing is off; timm annotates it Optional.
    aa: nn.Module
    conv_names: ClassVar[tuple[str, ...]] = ("conv1", "conv2", "conv3")

    def gated_forward(
        self, x: Tensor, backbone: Backbone, activations: dict[str, Tensor]
    ) -> Tensor:
        """Map ``(batch, inplanes, H, W)`` to ``(batch, 4 * planes, H/stride, W/stride)``."""
        p = self.layer_prefix
        shortcut = self._shortcut(backbone, x, activations)
        x = self.act1(self._gated_conv(backbone, "conv1", self.conv1, self.bn1, x))
        activations[f"{p}/conv1"] = x
        x = self._gated_conv(backbone, "conv2", self.conv2, self.bn2, x)
        x = self.aa(self.act2(self.drop_block(x)))
        activations[f"{p}/conv2"] = x
        x = self._gated_conv(backbone, "conv3", self.conv3, self.bn3, x)
        activations[f"{p}/conv3"] = x
        return self.act3(x + shortcut)


#: Block type and blocks per stage of each ResNet depth (He et al., 2016; timm's ``resnet*``).
RESNET_DEPTHS: dict[int, tuple[type[ResNetBasicBlock | ResNetBottleneck], tuple[int, ...]]] = {
    18: (ResNetBasicBlock, (2, 2, 2, 2)),
    34: (ResNetBasicBlock, (3, 4, 6, 3)),
    50: (ResNetBottleneck, (3, 4, 6, 3)),
    101: (ResNetBottleneck, (3, 4, 23, 3)),
    152: (ResNetBottleneck, (3, 8, 36, 3)),
}


class ResNet(Backbone):
    """ResNet trunk (stem, four stages of residual blocks, global average pool) of any depth.

    The depth is data (:data:`RESNET_DEPTHS`), as in timm: ``ResNet(depth=18)`` is what the
    builder :func:`ResNet18` returns.

    Args:
        depth: 18, 34, 50, 101 or 152. 18 and 34 use basic blocks (trunk width 512), 50, 101 and
            152 bottlenecks (trunk width 2048).
        input_channels: channels of the input images (3 for RGB, 1 for grey).
        output_dim: width of the output feature. When it differs from the trunk width a linear
            projection ``proj`` maps the pooled trunk to ``output_dim``.
        activation_layer: activation class used throughout (``nn.ReLU``; a class, a factory or a
            timm name).
        batch_normalization: ``BatchNorm2d`` after every convolution (alias
            ``batch_normalisation``); ``False`` leaves the convolutions unnormalised.
        bias: convolutions have a bias (torchvision's have none).
        pretrained_weights: a local checkpoint path (works offline) or a timm pretrained tag such
            as ``'resnet18.a1_in1k'`` (needs the network or a local Hugging Face cache). Only the
            trunk is loaded; a checkpoint's classifier ``fc`` is ignored.
        small_input: 3x3 stride-1 stem without max pool, for 32x32 inputs (CIFAR, crops).

    Raises:
        ValueError: ``depth`` is not one of :data:`RESNET_DEPTHS`, or ``input_channels`` is not a
            positive integer.
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        depth: int,
        input_channels: int = 3,
        output_dim: int = 512,
        activation_layer: ActivationLayer = nn.ReLU,
        batch_normalization: bool = True,
        bias: bool = False,
        pretrained_weights: str | os.PathLike[str] | None = None,
        small_input: bool = False,
    ) -> None:
        if isinstance(depth, bool) or depth not in RESNET_DEPTHS:
            raise ValueError(
                f"{type(self).__name__}: depth must be one of "
                f"{', '.join(map(str, RESNET_DEPTHS))}; got {depth!r}."
            )
        self.depth: int = depth
        Backbone.__init__(self, output_dim)
        owner = self.architecture
        _check_arguments(
            owner,
            input_channels,
            batch_normalization=batch_normalization,
            bias=bias,
            small_input=small_input,
        )
        self.input_channels: int = input_channels
        self.batch_normalization: bool = batch_normalization
        self.small_input: bool = small_input
        act_layer = resolve_activation_layer(activation_layer, owner)
        norm_layer = _norm_factory(self._norm_layer) if batch_normalization else _no_norm
        self._make_stem(input_channels, act_layer, norm_layer, bias)
        block_input = self._make_stages(act_layer, norm_layer)
        if bias:
            _give_convolutions_a_bias(self)
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.proj: nn.Linear | None = None
        if output_dim != self.trunk_width:
            self.proj = nn.Linear(self.trunk_width, output_dim)
            self._add_weighted_layer("proj", block_input)
        if pretrained_weights is not None:
            load_trunk_state_dict(self, pretrained_weights)

    @property
    def architecture(self) -> str:
        """The class name with the depth, as the published names say it (``CLResNet18``)."""
        return f"{type(self).__name__}{self.depth}"

    def _make_stem(
        self,
        input_channels: int,
        act_layer: Callable[..., nn.Module],
        norm_layer: Callable[..., nn.Module],
        bias: bool,
    ) -> None:
        """``conv1``, ``bn1``, ``act1``, ``maxpool``: 7x7 stride 2 and max pool, or 3x3 stride 1."""
        if self.small_input:
            self.conv1 = nn.Conv2d(
                input_channels, 64, kernel_size=3, stride=1, padding=1, bias=bias
            )
        else:
            self.conv1 = nn.Conv2d(
                input_channels, 64, kernel_size=7, stride=2, padding=3, bias=bias
            )
        self.bn1 = norm_layer(64)
        self.act1 = act_layer(inplace=True)
        self.maxpool = (
            nn.Identity() if self.small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
        self._add_weighted_layer("conv1", ())

    def _make_stages(
        self, act_layer: Callable[..., nn.Module], norm_layer: Callable[..., nn.Module]
    ) -> tuple[str, ...]:
        """``layer1`` ... ``layer4`` from the block type and stage depths of :attr:`depth`.

        Sets :attr:`trunk_width` and returns the weighted layers summed into the trunk output.
        """
        block_type, stage_depths = RESNET_DEPTHS[self.depth]
        block_input: tuple[str, ...] = ("conv1",)
        inplanes = 64
        # timm annotates layer arguments as classes but only calls them, so factories work.
        timm_act_layer = cast("type[nn.Module]", act_layer)
        timm_norm_layer = cast("type[nn.Module]", norm_layer)
        for stage_index, (planes, depth) in enumerate(
            zip((64, 128, 256, 512), stage_depths, strict=True)
        ):
            blocks = []
            for block_index in range(depth):
                stride = 2 if stage_index > 0 and block_index == 0 else 1
                outplanes = planes * block_type.expansion
                downsample = None
                if stride != 1 or inplanes != outplanes:
                    downsample = downsample_conv(
                        inplanes,
                        outplanes,
                        kernel_size=1,
                        stride=stride,
                        norm_layer=timm_norm_layer,
                    )
                block = block_type(
                    inplanes,
                    planes,
                    stride=stride,
                    downsample=downsample,
                    act_layer=timm_act_layer,
                    norm_layer=timm_norm_layer,
                )
                block.layer_prefix = f"layer{stage_index + 1}/{block_index}"
                block_input = self._register_block(block, block_input)
                blocks.append(block)
                inplanes = outplanes
            self.add_module(f"layer{stage_index + 1}", nn.Sequential(*blocks))
        self.trunk_width: int = inplanes
        return block_input

    def _register_block(
        self, block: ResNetBasicBlock | ResNetBottleneck, block_input: tuple[str, ...]
    ) -> tuple[str, ...]:
        """Add ``block``'s weighted layers; return the weighted layers summed into its output."""
        prefix = block.layer_prefix
        previous = block_input
        for conv_name in block.conv_names:
            self._add_weighted_layer(f"{prefix}/{conv_name}", previous)
            previous = (f"{prefix}/{conv_name}",)
        if block.downsample is None:
            return (previous[0], *block_input)
        self._add_weighted_layer(f"{prefix}/downsample/0", block_input)
        return (previous[0], f"{prefix}/downsample/0")

    def _norm_layer(self, num_features: int) -> nn.Module:
        """The normalisation module after a convolution; subclasses may keep one per task."""
        return nn.BatchNorm2d(num_features)

    def _features(self, input: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        check_batch(input, self.architecture)
        if input.ndim != 4 or input.shape[1] != self.input_channels:
            raise ValueError(
                f"{self.architecture} expects images of shape (batch, {self.input_channels}, "
                f"height, width); got shape {tuple(input.shape)}. Set input_channels to your "
                f"images' channel count."
            )
        activations: dict[str, Tensor] = {}
        x = self.unit_gate("conv1", self.bn1(self.layer_forward("conv1", self.conv1, input)))
        x = self.act1(x)
        activations["conv1"] = x
        x = self.maxpool(x)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in cast("list[ResNetBasicBlock | ResNetBottleneck]", stage):
                x = block.gated_forward(x, self, activations)
        x = self.global_pool(x)
        if self.proj is not None:
            x = self.unit_gate("proj", self.layer_forward("proj", self.proj, x))
            activations["proj"] = x
        return x, activations


def _check_arguments(owner: str, input_channels: object, **flags: object) -> None:
    if (
        isinstance(input_channels, bool)
        or not isinstance(input_channels, int)
        or input_channels < 1
    ):
        raise ValueError(
            f"{owner}: input_channels must be a positive integer; got {input_channels!r}."
        )
    for flag_name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{owner}: {flag_name} must be true or false; got {flag!r}.")


def _no_norm(num_features: int, **_: object) -> nn.Module:
    return nn.Identity()


def _norm_factory(make: Callable[[int], nn.Module]) -> Callable[..., nn.Module]:
    """Adapt a ``make(num_features)`` method to timm's ``norm_layer(num_features, **dd)`` calls."""

    def norm_layer(num_features: int, **_: object) -> nn.Module:
        return make(num_features)

    return norm_layer


def _give_convolutions_a_bias(module: nn.Module) -> None:
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d) and conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels))


ResNet18 = make_builder(
    ResNet,
    "ResNet18",
    "ResNet-18: basic blocks, stage depths (2, 2, 2, 2), trunk width 512.",
    depth=18,
)
ResNet34 = make_builder(
    ResNet,
    "ResNet34",
    "ResNet-34: basic blocks, stage depths (3, 4, 6, 3), trunk width 512.",
    depth=34,
)
ResNet50 = make_builder(
    ResNet,
    "ResNet50",
    'ResNet-50 (the docs\' "ResNet52"): bottlenecks, depths (3, 4, 6, 3), trunk width 2048.',
    depth=50,
)
ResNet101 = make_builder(
    ResNet,
    "ResNet101",
    "ResNet-101: bottlenecks, depths (3, 4, 23, 3), trunk width 2048.",
    depth=101,
)
ResNet152 = make_builder(
    ResNet,
    "ResNet152",
    "ResNet-152: bottlenecks, depths (3, 8, 36, 3), trunk width 2048.",
    depth=152,
)
#: The published docs call the 50-layer ResNet "ResNet52".
ResNet52 = ResNet50
