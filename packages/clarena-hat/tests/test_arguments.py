"""Every HAT variant takes exactly its family's arguments plus HAT's own."""

from __future__ import annotations

import pytest

from clarena.backbones import MLP
from clarena.backbones.resnet import ResNet
from clarena.backbones.testing import assert_extends_arguments
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    HATMaskResNet34,
    HATMaskResNet50,
    HATMaskResNet52,
    HATMaskResNet101,
    HATMaskResNet152,
)


@pytest.mark.parametrize(
    ("variant", "family", "batch_norm_default"),
    [(HATMaskMLP, MLP, None)]
    + [
        (cls, ResNet, "independent")
        for cls in (
            HATMaskResNet18,
            HATMaskResNet34,
            HATMaskResNet50,
            HATMaskResNet52,
            HATMaskResNet101,
            HATMaskResNet152,
        )
    ],
)
def test_hat_variant_takes_the_core_arguments_plus_gate(
    variant: type, family: type, batch_norm_default: object
) -> None:
    assert_extends_arguments(
        variant, family, {"batch_normalization": batch_norm_default, "gate": "sigmoid"}
    )
