"""The public layers module siblings build on, and its old private path."""

from __future__ import annotations

import pytest
from torch import nn

from clarena.backbones import _layers, layers


def test_timm_name_and_class_resolve_to_the_same_activation() -> None:
    by_name = layers.resolve_activation_layer("relu", "MLP")()
    by_class = layers.resolve_activation_layer(nn.ReLU, "MLP")()
    assert type(by_name) is type(by_class) is nn.ReLU


def test_unknown_activation_name_names_the_fix() -> None:
    with pytest.raises(ValueError, match="MLP: unknown activation_layer 'rleu'"):
        layers.resolve_activation_layer("rleu", "MLP")


def test_old_private_path_reexports_the_public_names() -> None:
    assert _layers.ActivationLayer is layers.ActivationLayer
    assert _layers.resolve_activation_layer is layers.resolve_activation_layer
