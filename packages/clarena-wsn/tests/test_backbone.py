"""WSN attached to a backbone: masks per stage, scores, stored masks, freezing, errors."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clarena.backbones
from clarena.cl import CLMLP, CLBackbone, TaskBatchNorm, unpack_bits
from clarena.wsn import (
    WSN,
    WSNMaskMLP,
    WSNMaskResNet18,
    WSNMaskResNet50,
    WSNMaskResNet52,
    check_optimizer,
    parameter_key,
    top_count,
    wsn_of,
)


def make_mlp(**kwargs: object) -> CLBackbone:
    torch.manual_seed(0)
    return WSNMaskMLP(input_dim=784, hidden_dims=[256, 100], output_dim=64, **kwargs)


def test_scores_shaped_like_every_weight_and_bias() -> None:
    backbone = make_mlp()
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        assert backbone.weight_score[name].shape == layer.weight.shape
        assert backbone.bias_score[name].shape == layer.bias.shape
        assert backbone.weight_score[name].requires_grad


def every_trainable_parameter_is_masked_score_or_norm(backbone: nn.Module) -> None:
    masked = {}
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        masked[id(layer.weight)] = backbone.weight_score[name]
        if layer.bias is not None:
            masked[id(layer.bias)] = backbone.bias_score[name]
    scores = {id(p) for p in backbone.weight_score.values()} | {
        id(p) for p in backbone.bias_score.values()
    }
    norms = {
        id(p)
        for m in backbone.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        for p in m.parameters()
    }
    for name, parameter in backbone.named_parameters():
        assert id(parameter) in masked or id(parameter) in scores or id(parameter) in norms, name
        if id(parameter) in masked:
            assert masked[id(parameter)].shape == parameter.shape, name


def test_every_resnet_parameter_covered_including_shortcuts_and_proj() -> None:
    backbone = WSNMaskResNet18(input_channels=3, output_dim=10, bias=True, small_input=True)
    assert "layer2/0/downsample/0" in backbone.weight_score
    assert "proj" in backbone.weight_score
    assert "proj" in backbone.bias_score
    assert len(backbone.weight_score) == len(backbone.weighted_layer_names) == 21
    every_trainable_parameter_is_masked_score_or_norm(backbone)


def test_every_mlp_parameter_covered() -> None:
    every_trainable_parameter_is_masked_score_or_norm(make_mlp(batch_normalization="shared"))


def test_resnet50_alias_and_registry_names() -> None:
    assert WSNMaskResNet52 is WSNMaskResNet50
    assert clarena.backbones.WSNMaskMLP is WSNMaskMLP
    assert clarena.backbones.WSNMaskResNet52 is WSNMaskResNet50
    for depth in (18, 34, 50, 52, 101, 152):
        assert clarena.backbones.available_backbones()[f"WSNMaskResNet{depth}"] == "clarena-wsn"


def test_train_masks_keep_exactly_round_c_n_per_layer_and_use_masked_weights() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    input = torch.randn(5, 1, 28, 28)
    feature, weight_mask, bias_mask, activations = backbone(input, "train", mask_percentage=0.3)
    assert feature.shape == (5, 64)
    assert set(activations) == {"fc/0", "fc/1", "fc/2"}
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        assert weight_mask[name].shape == layer.weight.shape
        assert bias_mask[name].shape == layer.bias.shape
        assert int(weight_mask[name].sum()) == top_count(0.3, layer.weight.numel())
        assert int(bias_mask[name].sum()) == top_count(0.3, layer.bias.numel())
    x = input.flatten(1)
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        expected = torch.relu(
            F.linear(x, layer.weight * weight_mask[name], layer.bias * bias_mask[name])
        )
        assert torch.equal(expected, activations[name])
        x = activations[name]


def test_straight_through_gradient_reaches_every_score() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    feature, *_ = backbone(torch.randn(16, 784), "train", mask_percentage=0.5)
    feature.pow(2).sum().backward()
    for scores in (backbone.weight_score, backbone.bias_score):
        for name, score in scores.items():
            assert score.grad is not None, name
            assert bool(score.grad.ne(0).any()), name
    # Weights outside the current subnetwork get no gradient from the masked forward.
    layer = backbone.get_layer_by_name("fc/0")
    mask = wsn_of(backbone).get_mask("train", mask_percentage=0.5)[0]["fc/0"]
    assert bool(layer.weight.grad[mask == 0].eq(0).all())


def test_training_gradients_equal_plain_masking_exactly() -> None:
    """The fused node (incoming gradients masked in place) gives plain autograd's gradients."""
    backbone = make_mlp()
    backbone.setup_task_id(1)
    x = torch.randn(16, 784)
    feature, weight_mask, bias_mask, _ = backbone(x, "train", mask_percentage=0.3)
    feature.pow(2).sum().backward()
    reference = make_mlp()
    reference.load_state_dict(backbone.state_dict())
    h = x
    for index, name in enumerate(reference.weighted_layer_names):
        layer = reference.get_layer_by_name(name)
        weight_score = reference.weight_score[name]
        bias_score = reference.bias_score[name]
        # Straight-through: the mask's value in the forward, |score|'s gradient in the backward.
        weight = layer.weight * (
            weight_mask[name] + weight_score.abs() - weight_score.abs().detach()
        )
        bias = layer.bias * (bias_mask[name] + bias_score.abs() - bias_score.abs().detach())
        h = reference.fc_activation[index](F.linear(h, weight, bias))
    h.pow(2).sum().backward()
    for (name, mine), theirs in zip(
        backbone.named_parameters(), reference.parameters(), strict=True
    ):
        assert torch.allclose(mine.grad, theirs.grad, rtol=1e-5, atol=1e-7), name
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        # A weight's gradient is exactly zero outside the subnetwork.
        assert bool(layer.weight.grad[weight_mask[name] == 0].eq(0).all()), name


def test_validation_uses_scores_and_test_uses_stored_mask() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    backbone.eval()
    input = torch.randn(4, 784)
    with torch.no_grad():
        validation = backbone(input, "validation", mask_percentage=0.5)
        stored_weight, stored_bias = wsn_of(backbone).store_mask()
        nn.init.normal_(backbone.weight_score["fc/0"])  # scores move; the stored mask does not
        test = backbone(input, "test", test_task_id=1)
        moved = backbone(input, "validation", mask_percentage=0.5)
    assert torch.equal(validation[0], test[0])
    assert not torch.equal(validation[0], moved[0])
    assert torch.equal(test[1]["fc/0"], stored_weight["fc/0"].float())
    assert torch.equal(test[2]["fc/2"], stored_bias["fc/2"].float())


@pytest.mark.parametrize("mode", ["default", "N01", "U01"])
def test_initialize_parameter_score_modes(mode: str) -> None:
    backbone = make_mlp()
    wsn_of(backbone).initialize_parameter_score(mode)
    weight = backbone.weight_score["fc/0"].detach()
    bias = backbone.bias_score["fc/0"].detach()
    if mode == "default":
        bound = 1 / math.sqrt(784)  # kaiming_uniform(a=sqrt(5)) and nn.Linear's bias bound
        assert float(weight.abs().max()) <= bound
        assert float(bias.abs().max()) <= bound
        assert float(weight.abs().max()) > 0.9 * bound
    elif mode == "N01":
        assert abs(float(weight.mean())) < 0.01
        assert abs(float(weight.std()) - 1) < 0.01
    else:
        assert float(weight.min()) >= 0
        assert float(weight.max()) <= 1
        assert abs(float(weight.mean()) - 0.5) < 0.01


def test_store_mask_packs_one_bit_per_parameter_and_unpacks_exactly() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    weight_mask, bias_mask = wsn_of(backbone).store_mask(0.5)
    for name in backbone.weighted_layer_names:
        for kind, mask in (("weight", weight_mask[name]), ("bias", bias_mask[name])):
            packed = backbone.task_masks.tasks["1"].get_buffer(parameter_key(name, kind))
            assert packed.dtype == torch.uint8
            assert packed.numel() <= mask.numel() / 8 + 1
            assert torch.equal(unpack_bits(packed, mask.shape), mask)
    # MLP(784, [256, 100], 64): 233,124 parameters -> 29,141 bytes (float32 masks: 932,496).
    assert backbone.task_masks.nbytes(1) == 29_141
    assert backbone.task_masks.nbytes(1) <= 30_000


def test_cumulative_mask_is_the_union_and_freezing_zeroes_exactly_its_gradients() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    first = wsn_of(backbone).store_mask(0.2)[0]
    wsn_of(backbone).initialize_parameter_score("N01")
    backbone.setup_task_id(2)
    second = wsn_of(backbone).store_mask(0.2)[0]
    cumulative = wsn_of(backbone).cumulative_mask()[0]
    for name in backbone.weighted_layer_names:
        assert torch.equal(cumulative[name], first[name] | second[name])
    union = sum(int(m.count_nonzero()) for m in backbone.cumulative_masks.buffers())
    assert wsn_of(backbone).capacity() == union / 233_124
    assert 0.2 < wsn_of(backbone).capacity() < 0.4
    with pytest.warns(DeprecationWarning, match=r"use capacity_per_layer\(\)"):
        assert set(wsn_of(backbone).layer_capacity()) == set(backbone.weighted_layer_names)

    backbone.setup_task_id(3)
    feature, *_ = backbone(torch.randn(8, 784), "train", mask_percentage=1.0)
    feature.sum().backward()
    wsn_of(backbone).condition_gradients()
    weight_grad = backbone.get_layer_by_name("fc/1").weight.grad
    assert bool(weight_grad[cumulative["fc/1"]].eq(0).all())
    assert bool(weight_grad[~cumulative["fc/1"]].ne(0).any())


def test_independent_batch_norm_per_task_and_shared_mode() -> None:
    independent = make_mlp(batch_normalisation="independent")
    assert isinstance(independent.fc_bn[0], TaskBatchNorm)
    independent.setup_task_id(1)
    independent.setup_task_id(2)
    assert sorted(independent.fc_bn[0].norms) == ["1", "2"]
    shared = make_mlp(batch_normalization=True)
    assert wsn_of(shared).batch_norm_mode == "shared"
    assert isinstance(shared.fc_bn[0], nn.BatchNorm1d)
    resnet = WSNMaskResNet18(input_channels=1, output_dim=512, small_input=True)
    assert wsn_of(resnet).batch_norm_mode == "independent"
    assert isinstance(resnet.bn1, TaskBatchNorm)


def test_hydra_instantiate() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = OmegaConf.create(
        "_target_: clarena.backbones.WSNMaskMLP\n"
        "input_dim: 784\n"
        "hidden_dims: [256, 100]\n"
        "output_dim: 64\n"
        "batch_normalisation: independent\n"
    )
    backbone = instantiate(config)
    assert type(backbone) is CLMLP
    assert type(backbone.mask_method) is WSN
    assert wsn_of(backbone).batch_norm_mode == "independent"
    backbone.setup_task_id(1)
    feature, *_ = backbone(torch.randn(2, 1, 28, 28), "train", mask_percentage=0.5)
    assert feature.shape == (2, 64)


# ---------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "stage 'train' needs mask_percentage, the fraction c in (0, 1]"),
        (0.0, "mask_percentage must be a fraction c with 0 < c <= 1"),
        (1.5, "got 1.5"),
        (50, "For 50% pass 0.5"),
        (True, "got True"),
        ("0.5", "got '0.5'"),
    ],
)
def test_bad_mask_percentage(value: object, message: str) -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    with pytest.raises(ValueError, match=re.escape(message)):
        backbone(torch.randn(2, 784), "train", mask_percentage=value)


def test_test_stage_without_stored_mask() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    wsn_of(backbone).store_mask(0.5)
    backbone.setup_task_id(2)
    with pytest.raises(ValueError, match=r"no mask is stored for task 2 \(stored: \[1\]\)"):
        backbone(torch.randn(2, 784), "test")
    with pytest.raises(ValueError, match=r"no mask is stored for task 7 .* call store_mask\(\)"):
        backbone(torch.randn(2, 784), "test", test_task_id=7)


def test_other_errors() -> None:
    backbone = make_mlp()
    with pytest.raises(RuntimeError, match=r"call setup_task_id\(task_id\) before forward"):
        backbone(torch.randn(2, 784), "train", mask_percentage=0.5)
    backbone.setup_task_id(1)
    with pytest.raises(ValueError, match="stage must be one of 'train', 'validation', 'test'"):
        backbone(torch.randn(2, 784), None, mask_percentage=0.5)
    with pytest.raises(ValueError, match="unknown parameter score init mode 'kaiming'"):
        wsn_of(backbone).initialize_parameter_score("kaiming")
    with pytest.raises(ValueError, match="store_mask needs mask_percentage"):
        wsn_of(backbone).store_mask()
    with pytest.raises(RuntimeError, match="weighted layers run only inside forward"):
        backbone._features(torch.randn(2, 784))
    with pytest.raises(ValueError, match="batch_normalization must be null, 'shared' or"):
        make_mlp(batch_normalization="per-task")
    with pytest.raises(TypeError, match="Did you mean 'batch_normalization'"):
        make_mlp(batch_normalizaton="independent")


def test_check_optimizer_refuses_weight_decay_and_carried_state() -> None:
    backbone = make_mlp()
    wsn = wsn_of(backbone)
    wsn.check_optimizer(torch.optim.SGD(backbone.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"weight_decay=0.0001; weight decay moves the parameters"):
        wsn.check_optimizer(torch.optim.SGD(backbone.parameters(), lr=0.1, weight_decay=1e-4))
    with pytest.raises(ValueError, match=r"AdamW parameter group 0 has weight_decay=0.01"):
        wsn.check_optimizer(torch.optim.AdamW(backbone.parameters()))
    optimizer = torch.optim.Adam(backbone.parameters())
    backbone.setup_task_id(1)
    feature, *_ = backbone(torch.randn(2, 784), "train", mask_percentage=0.5)
    feature.sum().backward()
    optimizer.step()
    wsn.check_optimizer(optimizer, at_task_start=False)
    with pytest.raises(ValueError, match=r"already holds state .* create a fresh optimiser"):
        wsn.check_optimizer(optimizer, at_task_start=True)
    with pytest.raises(ValueError, match=r"already holds state .* create a fresh optimiser"):
        wsn.check_optimizer(optimizer)  # the contract's default: at a task's start


def test_deprecated_check_optimizer_warns_and_checks_the_same() -> None:
    backbone = make_mlp()
    with pytest.warns(DeprecationWarning, match=r"wsn_of\(backbone\)\.check_optimizer"):
        check_optimizer(torch.optim.SGD(backbone.parameters(), lr=0.1))
    with (
        pytest.warns(DeprecationWarning, match="is deprecated"),
        pytest.raises(ValueError, match=r"WSN: SGD parameter group 0 has weight_decay=0.0001"),
    ):
        check_optimizer(torch.optim.SGD(backbone.parameters(), lr=0.1, weight_decay=1e-4))


def test_mask_percentage_that_keeps_nothing_of_a_parameter_warns_naming_it() -> None:
    backbone = make_mlp()
    backbone.setup_task_id(1)
    input = torch.randn(3, 1, 28, 28)
    # round(0.005 * 100) = round(0.5) = 0 and round(0.005 * 64) = 0; fc/0's 256 biases keep 1.
    assert wsn_of(backbone).empty_mask_parameters(0.005) == {"fc/1/bias": 100, "fc/2/bias": 64}
    with pytest.warns(
        UserWarning,
        match=r"mask_percentage=0\.005 keeps no parameter of "
        r"fc/1/bias, fc/2/bias .*above 0\.0078",
    ):
        _, _, bias_mask, _ = backbone(input, "train", mask_percentage=0.005)
    assert int(bias_mask["fc/1"].sum()) == 0
    assert int(bias_mask["fc/2"].sum()) == 0
    assert int(bias_mask["fc/0"].sum()) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backbone(input, "train", mask_percentage=0.005)  # warned once per value, not per step
        backbone(input, "train", mask_percentage=0.5)


def test_a_weighted_layer_wsn_cannot_mask_is_a_clear_error() -> None:
    backbone = WSNMaskMLP(input_dim=4, hidden_dims=[3], output_dim=2)
    backbone.setup_task_id(1)
    layer = backbone.get_layer_by_name("fc/0")
    # The masked parameters a forward pass would hand to the layer, then an unsupported layer.
    wsn_of(backbone)._forward_parameters = {"fc/0": (layer.weight, layer.bias)}
    output = backbone.layer_forward("fc/0", layer, torch.ones(2, 4))
    assert torch.equal(output, layer(torch.ones(2, 4)))
    with pytest.raises(TypeError, match=r"'fc/0' is a Bilinear; WSN masks only Linear and Conv"):
        backbone.layer_forward("fc/0", nn.Bilinear(4, 4, 3), torch.ones(2, 4))
