"""Every HAT builder takes exactly its family's arguments plus HAT's own."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import pytest

from clarena.backbones import MLP
from clarena.backbones.resnet import ResNet
from clarena.backbones.testing import constructor_arguments
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
    variant: Callable[..., object], family: type, batch_norm_default: object
) -> None:
    # An own argument the family also takes keeps the family's place with the builder's default;
    # the others follow the family's.
    own = {"batch_normalization": batch_norm_default, "gate": "sigmoid"}
    expected = {**constructor_arguments(family), **own}
    arguments = {name: p.default for name, p in inspect.signature(variant).parameters.items()}
    assert arguments == expected
    assert list(arguments) == list(expected)
