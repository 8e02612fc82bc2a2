"""``extends_arguments``: a variant's signature is its family's plus its own, and calls bind to it."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from clarena.backbones import MLP
from clarena.backbones._arguments import extends_arguments
from clarena.backbones.resnet import ResNet, ResNet18


class _GatedMLP(MLP):
    @extends_arguments(MLP)
    def __init__(self, *, bias: bool = False, gate: str = "sigmoid", **arguments: Any) -> None:
        self.received = {"bias": bias, "gate": gate, **arguments}
        MLP.__init__(self, bias=bias, **arguments)


def test_signature_is_the_family_signature_with_overrides_in_place_and_new_ones_last() -> None:
    family = inspect.signature(MLP.__init__).parameters
    variant = inspect.signature(_GatedMLP.__init__).parameters
    assert list(variant) == [*family, "gate"]
    assert variant["bias"].default is False
    assert family["bias"].default is True
    assert variant["gate"].kind is inspect.Parameter.KEYWORD_ONLY


def test_positional_and_keyword_calls_reach_the_variant_by_keyword_with_defaults() -> None:
    mlp = _GatedMLP(4, [3], 2, gate="hard")
    assert mlp.received == {
        "input_dim": 4,
        "hidden_dims": [3],
        "output_dim": 2,
        "activation_layer": inspect.signature(MLP.__init__).parameters["activation_layer"].default,
        "batch_normalization": False,
        "bias": False,
        "dropout": None,
        "gate": "hard",
    }
    assert mlp.fc[0].bias is None


def test_unknown_and_alias_arguments_are_checked_against_the_merged_signature() -> None:
    with pytest.raises(TypeError, match=r"unknown argument 'gait'\. Did you mean 'gate'"):
        _GatedMLP(4, [3], 2, gait="hard")
    assert _GatedMLP(4, [3], 2, batch_normalisation=True).batch_normalization is True


def test_resnet_depths_are_data_on_one_class() -> None:
    resnet = ResNet18(small_input=True)
    assert type(resnet) is ResNet
    assert (resnet.depth, resnet.architecture) == (18, "ResNet18")
    assert [len(getattr(resnet, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    with pytest.raises(ValueError, match=r"ResNet: depth must be one of 18, 34, 50, 101, 152"):
        ResNet(depth=19)
