"""Every WSN builder takes exactly its family's arguments (batch norm takes WSN's modes)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

import clarena.backbones
from clarena.backbones.testing import constructor_arguments
from clarena.wsn import (
    WSNMaskMLP,
    WSNMaskResNet18,
    WSNMaskResNet34,
    WSNMaskResNet50,
    WSNMaskResNet52,
    WSNMaskResNet101,
    WSNMaskResNet152,
)


def family_arguments(family: Callable[..., Any]) -> dict[str, object]:
    """The core family's constructor arguments, name -> default (class or builder)."""
    if isinstance(family, type):
        return constructor_arguments(family)
    return {name: p.default for name, p in inspect.signature(family).parameters.items()}


@pytest.mark.parametrize(
    ("variant", "family", "batch_norm_default"),
    [(WSNMaskMLP, "MLP", None)]
    + [
        (builder, f"ResNet{depth}", "independent")
        for builder, depth in (
            (WSNMaskResNet18, 18),
            (WSNMaskResNet34, 34),
            (WSNMaskResNet50, 50),
            (WSNMaskResNet52, 52),
            (WSNMaskResNet101, 101),
            (WSNMaskResNet152, 152),
        )
    ],
)
def test_wsn_builder_takes_exactly_the_core_arguments(
    variant: Callable[..., Any], family: str, batch_norm_default: object
) -> None:
    # The family's arguments in its order, batch_normalization keeping its place with WSN's
    # default (as assert_extends_arguments checks for classes).
    expected = {
        **family_arguments(getattr(clarena.backbones, family)),
        "batch_normalization": batch_norm_default,
    }
    actual = {name: p.default for name, p in inspect.signature(variant).parameters.items()}
    assert actual == expected
    assert list(actual) == list(expected)


def test_builder_takes_positional_arguments_and_checks_names() -> None:
    backbone = WSNMaskMLP(4, [3], 2, batch_normalisation="independent")
    assert backbone.weighted_layer_names == ["fc/0", "fc/1"]
    assert backbone.output_dim == 2
    assert backbone.get_layer_by_name("fc/0").in_features == 4
    with pytest.raises(TypeError, match=r"WSNMaskMLP\(\) got an unknown argument 'hiden_dims'"):
        WSNMaskMLP(input_dim=4, hiden_dims=[3], output_dim=2)
    with pytest.raises(
        TypeError, match=r"got both 'batch_normalisation' and 'batch_normalization'"
    ):
        WSNMaskMLP(4, [3], 2, batch_normalisation=None, batch_normalization=None)
