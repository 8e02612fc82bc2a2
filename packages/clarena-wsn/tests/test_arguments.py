"""Every WSN variant takes exactly its family's arguments (batch norm takes WSN's modes)."""

from __future__ import annotations

import pytest

from clarena.backbones import MLP
from clarena.backbones.resnet import ResNet
from clarena.backbones.testing import assert_extends_arguments
from clarena.wsn import (
    WSNMaskMLP,
    WSNMaskResNet18,
    WSNMaskResNet34,
    WSNMaskResNet50,
    WSNMaskResNet52,
    WSNMaskResNet101,
    WSNMaskResNet152,
)


@pytest.mark.parametrize(
    ("variant", "family", "batch_norm_default"),
    [(WSNMaskMLP, MLP, None)]
    + [
        (cls, ResNet, "independent")
        for cls in (
            WSNMaskResNet18,
            WSNMaskResNet34,
            WSNMaskResNet50,
            WSNMaskResNet52,
            WSNMaskResNet101,
            WSNMaskResNet152,
        )
    ],
)
def test_wsn_variant_takes_exactly_the_core_arguments(
    variant: type, family: type, batch_norm_default: object
) -> None:
    assert_extends_arguments(variant, family, {"batch_normalization": batch_norm_default})
