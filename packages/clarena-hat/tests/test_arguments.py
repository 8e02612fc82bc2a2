"""Every HAT variant takes exactly its family's arguments plus HAT's own."""

from __future__ import annotations

import inspect

import pytest

from clarena.backbones import MLP
from clarena.backbones.resnet import ResNet
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    HATMaskResNet34,
    HATMaskResNet50,
    HATMaskResNet52,
    HATMaskResNet101,
    HATMaskResNet152,
)


def _arguments(cls: type) -> dict[str, object]:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(cls.__init__).parameters.items()
        if name != "self"
    }


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
    expected = {**_arguments(family), "batch_normalization": batch_norm_default}
    assert _arguments(variant) == {**expected, "gate": "sigmoid"}
    assert list(_arguments(variant)) == [*_arguments(family), "gate"]
