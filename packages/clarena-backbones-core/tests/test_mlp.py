"""MLP: the contract, layer naming, input checks and constructor options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.backbones import MLP
from clarena.backbones.testing import BackboneContract


class TestMLPContract(BackboneContract):
    def make_backbone(self):
        return MLP(784, [256, 100], 64)

    def example_input(self):
        return torch.randn(4, 1, 28, 28)


class TestMLPWithBatchNormAndDropoutContract(BackboneContract):
    def make_backbone(self):
        return MLP(20, [16, 8, 12], 5, batch_normalization=True, dropout=0.3)

    def example_input(self):
        return torch.randn(3, 20)


def test_weighted_layers_form_a_chain():
    mlp = MLP(784, [256, 100], 64)
    assert mlp.weighted_layer_names == ["fc/0", "fc/1", "fc/2"]
    assert mlp.input_layer_names("fc/0") == ()
    assert mlp.input_layer_names("fc/1") == ("fc/0",)
    assert mlp.input_layer_names("fc/2") == ("fc/1",)
    shapes = [tuple(mlp.get_layer_by_name(n).weight.shape) for n in mlp.weighted_layer_names]
    assert shapes == [(256, 784), (100, 256), (64, 100)]


def test_activations_have_layer_widths():
    _, activations = MLP(784, [256, 100], 64)(torch.randn(2, 784), stage="train")
    assert {name: tuple(a.shape) for name, a in activations.items()} == {
        "fc/0": (2, 256),
        "fc/1": (2, 100),
        "fc/2": (2, 64),
    }


def test_unknown_layer_name_lists_the_valid_ones():
    with pytest.raises(KeyError, match="fc/0, fc/1"):
        MLP(4, [3], 2).get_layer_by_name("fc/7")


def test_wrong_input_size_states_the_expected_feature_count():
    mlp = MLP(784, [256, 100], 64)
    with pytest.raises(ValueError, match=r"784 features.*\(2, 3, 28, 28\)"):
        mlp(torch.randn(2, 3, 28, 28), stage="train")
    with pytest.raises(ValueError, match="784 features"):
        mlp(torch.randn(784), stage="train")


@pytest.mark.parametrize("stage", ["training", "eval", "TEST"])
def test_unknown_stage_is_rejected(stage):
    with pytest.raises(ValueError, match="stage must be one of 'train', 'validation', 'test'"):
        MLP(4, [3], 2)(torch.randn(2, 4), stage=stage)


@pytest.mark.parametrize("stage", ["train", "validation", "test", None])
def test_every_stage_gives_the_same_feature_in_eval_mode(stage):
    torch.manual_seed(0)
    mlp = MLP(4, [3], 2, batch_normalization=True, dropout=0.5).eval()
    input = torch.randn(2, 4)
    torch.testing.assert_close(mlp(input, stage=stage)[0], mlp(input)[0])


def test_batch_normalization_adds_batchnorm1d_per_layer():
    assert not any(isinstance(m, nn.BatchNorm1d) for m in MLP(4, [3, 3], 2).modules())
    mlp = MLP(4, [3, 5], 2, batch_normalization=True)
    assert [m.num_features for m in mlp.modules() if isinstance(m, nn.BatchNorm1d)] == [3, 5, 2]


def test_bias_false_leaves_linear_layers_without_bias():
    mlp = MLP(4, [3], 2, bias=False)
    assert all(mlp.get_layer_by_name(n).bias is None for n in mlp.weighted_layer_names)


def test_dropout_is_added_and_range_checked():
    assert sum(isinstance(m, nn.Dropout) for m in MLP(4, [3], 2, dropout=0.2).modules()) == 2
    assert not any(isinstance(m, nn.Dropout) for m in MLP(4, [3], 2, dropout=0.0).modules())
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        MLP(4, [3], 2, dropout=1.5)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_dim": 0}, ValueError, "input_dim must be a positive integer"),
        ({"output_dim": 0}, ValueError, "output_dim must be a positive integer"),
        ({"output_dim": True}, ValueError, "output_dim must be a positive integer"),
        ({"hidden_dims": 100}, TypeError, "hidden_dims must be a list"),
        ({"hidden_dims": [100, -1]}, ValueError, "hidden_dims entry must be a positive"),
        ({"batch_normalization": "yes"}, TypeError, "batch_normalization must be true or false"),
    ],
)
def test_invalid_constructor_values_are_rejected(kwargs, error, message):
    arguments = {"input_dim": 4, "hidden_dims": [3], "output_dim": 2, **kwargs}
    with pytest.raises(error, match=message):
        MLP(**arguments)


@pytest.mark.parametrize(
    ("activation_layer", "expected"),
    [("gelu", "GELU"), (None, "Identity"), (nn.Tanh, "Tanh"), (nn.ReLU, "ReLU")],
)
def test_activation_layer_forms(activation_layer, expected):
    mlp = MLP(4, [3], 2, activation_layer=activation_layer)
    assert [type(m).__name__ for m in mlp.fc_activation] == [expected, expected]
    feature, _ = mlp(torch.randn(2, 4), stage="train")
    assert feature.shape == (2, 2)


def test_activation_none_makes_the_mlp_linear():
    mlp = MLP(4, [3], 2, activation_layer=None)
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    torch.testing.assert_close(mlp(x + y)[0], mlp(x)[0] + mlp(y)[0] - mlp(torch.zeros(2, 4))[0])


def test_unknown_activation_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown activation_layer 'relux'"):
        MLP(4, [3], 2, activation_layer="relux")
