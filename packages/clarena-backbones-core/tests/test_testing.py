"""The reusable contract suite catches backbones that break the contract."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.backbones import MLP
from clarena.backbones.testing import BackboneContract


class _MLPWithStrayParameter(MLP):
    def __init__(self, input_dim: int, hidden_dims: list[int], output_dim: int) -> None:
        super().__init__(input_dim, hidden_dims, output_dim)
        self.temperature = nn.Parameter(torch.ones(1))


class _StrayContract(BackboneContract):
    def make_backbone(self):
        return _MLPWithStrayParameter(4, [3], 2)

    def example_input(self):
        return torch.randn(2, 4)


def test_a_stray_trainable_parameter_is_reported():
    contract = _StrayContract()
    with pytest.raises(AssertionError, match=r"\['temperature'\]"):
        contract.test_every_trainable_parameter_belongs_to_a_layer(contract.make_backbone())


def test_declared_extra_parameters_are_allowed():
    contract = _StrayContract()
    contract.extra_parameter_prefixes = ("temperature",)
    contract.test_every_trainable_parameter_belongs_to_a_layer(contract.make_backbone())


def test_a_missing_activation_is_reported():
    contract = _StrayContract()
    backbone = contract.make_backbone()
    input = torch.randn(2, 4)
    feature, activations = backbone(input)
    del activations["fc/0"]
    with pytest.raises(AssertionError):
        contract.test_activations_cover_the_weighted_layers(backbone, (input, feature, activations))


def test_make_backbone_must_be_implemented():
    with pytest.raises(NotImplementedError, match="make_backbone"):
        BackboneContract().make_backbone()
