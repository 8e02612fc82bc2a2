"""HAT-masked ResNets: every convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

from typing import Any

from torch import nn

from clarena.backbones import extends_arguments
from clarena.backbones.resnet import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.cl.resnet import CLResNet
from clarena.hat.base import HATMaskBackbone, check_zero_preserving
from clarena.hat.masked_batch_norm import MaskedBatchNorm2d


class HATMaskResNet(HATMaskBackbone, CLResNet):
    """:class:`~clarena.backbones.ResNet` with HAT unit masks on every weighted layer.

    Use a depth class (:class:`HATMaskResNet18` ...).

    Args:
        input_channels, output_dim, activation_layer, bias, pretrained_weights, small_input: as
            for ``ResNet``.
        batch_normalization: ``'independent'`` (default; one batch norm per task, no leak),
            ``'shared'``/``True`` (one for all tasks; leaks through its running statistics) or
            ``None``/``False``. Alias ``batch_normalisation``. With ``'independent'``, each task's
            batch norm starts fresh (pretrained batch-norm statistics are not carried over).
        gate: the mask gate; only ``'sigmoid'`` is supported.
    """

    @extends_arguments(ResNet)
    def __init__(
        self,
        *,
        batch_normalization: str | bool | None = "independent",
        gate: str = "sigmoid",
        **arguments: Any,
    ) -> None:
        mode = self._build_family(ResNet, batch_normalization, arguments)
        check_zero_preserving(self.act1, type(self).__name__)
        self._init_hat(gate, mode)

    def _norm_layer(self, num_features: int) -> nn.Module:
        """Batch norm with the HAT mask folded into its affine transform."""
        return MaskedBatchNorm2d(num_features)

    def normalization_layer(self, layer_name: str) -> nn.Module | None:
        """The batch norm after convolution ``layer_name`` (``None`` for ``proj`` / no batch norm)."""
        self._check_layer_name(layer_name)
        if layer_name == "proj":
            return None
        if layer_name == "conv1":
            norm = self.bn1
        else:
            stage, block_index, *rest = layer_name.split("/")
            block = getattr(self, stage)[int(block_index)]
            if rest == ["downsample", "0"]:
                norm = block.downsample[1]
            else:
                norm = getattr(block, rest[0].replace("conv", "bn"))
        return None if isinstance(norm, nn.Identity) else norm


class HATMaskResNet18(HATMaskResNet, ResNet18):
    """HAT-masked ResNet-18."""


class HATMaskResNet34(HATMaskResNet, ResNet34):
    """HAT-masked ResNet-34."""


class HATMaskResNet50(HATMaskResNet, ResNet50):
    """HAT-masked ResNet-50 (the docs' "HATMaskResNet52")."""


class HATMaskResNet101(HATMaskResNet, ResNet101):
    """HAT-masked ResNet-101."""


class HATMaskResNet152(HATMaskResNet, ResNet152):
    """HAT-masked ResNet-152."""


#: The published docs call the 50-layer ResNet "HATMaskResNet52".
HATMaskResNet52 = HATMaskResNet50
