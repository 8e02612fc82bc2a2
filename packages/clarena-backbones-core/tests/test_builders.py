"""Registered builders (``make_builder``): depth is data on one class, as in timm."""

from __future__ import annotations

import inspect

import pytest
import torch

from clarena.backbones import MLP, ResNet, ResNet18, ResNet50, ResNet52, make_builder


def test_a_builder_has_the_family_signature_without_what_it_fixes() -> None:
    family = inspect.signature(ResNet).parameters
    builder = inspect.signature(ResNet18).parameters
    assert list(family) == ["depth", *builder]
    for name, parameter in builder.items():
        assert parameter.default == family[name].default
    assert (ResNet18.__name__, ResNet18.__module__) == ("ResNet18", "clarena.backbones.resnet")


def test_a_builder_returns_the_family_at_its_depth() -> None:
    torch.manual_seed(0)
    built = ResNet50(1, 10, small_input=True)
    torch.manual_seed(0)
    direct = ResNet(depth=50, input_channels=1, output_dim=10, small_input=True)
    assert type(built) is ResNet
    assert (built.depth, built.architecture, built.input_channels) == (50, "ResNet50", 1)
    assert ResNet52 is ResNet50
    assert built.state_dict().keys() == direct.state_dict().keys()
    for key, value in built.state_dict().items():
        assert torch.equal(value, direct.state_dict()[key]), key


def test_a_builder_names_itself_in_argument_errors() -> None:
    with pytest.raises(TypeError, match=r"^ResNet18\(\) got an unknown argument 'output_dimm'\."):
        ResNet18(output_dimm=8)
    with pytest.raises(TypeError, match=r"ResNet18\(\) got both 'batch_normalisation'"):
        ResNet18(batch_normalisation=True, batch_normalization=True)
    with pytest.raises(ValueError, match=r"^ResNet18: input_channels must be a positive integer"):
        ResNet18(input_channels=0)


def test_any_family_argument_can_be_fixed() -> None:
    TinyMLP = make_builder(MLP, "TinyMLP", "An MLP with one hidden layer of 3.", hidden_dims=[3])
    assert list(inspect.signature(TinyMLP).parameters)[:2] == ["input_dim", "output_dim"]
    mlp = TinyMLP(4, 2)
    assert (mlp.hidden_dims, mlp.output_dim, TinyMLP.__doc__) == (
        [3],
        2,
        "An MLP with one hidden layer of 3.",
    )
    with pytest.raises(TypeError, match=r"TinyMLP\(\) got an unknown argument 'hidden_dims'"):
        TinyMLP(4, 2, hidden_dims=[5])
