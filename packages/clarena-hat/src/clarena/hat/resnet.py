"""HAT-masked ResNets: every convolution, shortcut convolution and the projection is masked."""

from __future__ import annotations

from typing import Any

from torch import nn

from clarena.backbones import extends_arguments, make_builder
from clarena.backbones.resnet import ResNet
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


# Depth builders over HATMaskResNet(depth=...) (transitional, until #24's builders attach the method).
HATMaskResNet18 = make_builder(HATMaskResNet, "HATMaskResNet18", "HAT-masked ResNet-18.", depth=18)
HATMaskResNet34 = make_builder(HATMaskResNet, "HATMaskResNet34", "HAT-masked ResNet-34.", depth=34)
HATMaskResNet50 = make_builder(HATMaskResNet, "HATMaskResNet50", "HAT-masked ResNet-50.", depth=50)
HATMaskResNet101 = make_builder(
    HATMaskResNet, "HATMaskResNet101", "HAT-masked ResNet-101.", depth=101
)
HATMaskResNet152 = make_builder(
    HATMaskResNet, "HATMaskResNet152", "HAT-masked ResNet-152.", depth=152
)
HATMaskResNet52 = HATMaskResNet50
