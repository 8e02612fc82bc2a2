"""HAT as a mask method: attached by hand, found by name, the algorithm's scale, what it refuses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.backbones import BackboneOutput
from clarena.cl import CLMLP, TaskBatchNorm, available_mask_methods, resolve_mask_method
from clarena.hat import HAT, HATMaskMLP, HATMaskResNet18, annealed_scale, hat_of
from clarena.hat.masked_batch_norm import MaskedBatchNorm1d, MaskedBatchNorm2d


def test_hat_is_registered_as_a_mask_method():
    assert resolve_mask_method("hat") is HAT
    assert available_mask_methods()["hat"] == "clarena-hat"


@pytest.mark.parametrize("mode", ["independent", "shared", None])
def test_attaching_by_hand_is_the_builder(mode):
    torch.manual_seed(0)
    built = HATMaskMLP(12, [8, 6], 4, batch_normalization=mode)
    torch.manual_seed(0)
    by_hand = CLMLP(12, [8, 6], 4, batch_normalization=mode is not None).attach(
        HAT(batch_normalization=mode)
    )
    assert type(built) is type(by_hand) is CLMLP
    assert hat_of(by_hand).batch_norm_mode == hat_of(built).batch_norm_mode == mode
    x = torch.randn(5, 12)
    for backbone in (built, by_hand):
        torch.manual_seed(1)  # the new task's N(0, 1) embedding
        backbone.setup_task_id(1)
    assert list(built.state_dict()) == list(by_hand.state_dict())
    for key, value in built.state_dict().items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, by_hand.state_dict()[key]), key
    a, b = built(x, "train", scale=3.0), by_hand(x, "train", scale=3.0)
    assert torch.equal(a.feature, b.feature)


def test_the_algorithms_scale_gives_the_published_annealing_bit_for_bit():
    torch.manual_seed(0)
    backbone = HATMaskMLP(12, [8, 6], 4, batch_normalization="independent")
    backbone.setup_task_id(1)
    x = torch.randn(5, 12)
    for batch_idx in (1, 3, 7):
        published = backbone(x, "train", s_max=400.0, batch_idx=batch_idx, num_batches=7)
        scaled = backbone(x, "train", scale=annealed_scale(400.0, batch_idx, 7))
        assert isinstance(scaled, BackboneOutput)
        assert scaled.fields == ("feature", "mask", "activations")
        assert torch.equal(scaled.feature, published.feature)
        for name, mask in published.get("mask").items():
            assert torch.equal(scaled.extras["mask"][name], mask), name
    validation = backbone(x, "validation", s_max=400.0)
    assert torch.equal(backbone(x, "validation", scale=400.0).feature, validation.feature)


def test_step_arguments_are_checked():
    backbone = HATMaskMLP(12, [8], 4)
    backbone.setup_task_id(1)
    x = torch.randn(2, 12)
    with pytest.raises(TypeError, match=r"unknown step argument 'scal'.*Did you mean 'scale'"):
        backbone(x, "train", scal=2.0)
    with pytest.raises(ValueError, match=r"got scale and batch_idx; pass either the gate scale"):
        backbone(x, "train", scale=2.0, batch_idx=1)
    with pytest.raises(ValueError, match=r"scale must be a positive number; got -1.0"):
        backbone(x, "train", scale=-1.0)
    with pytest.raises(ValueError, match=r"got task_id=1 and test_task_id=2; pass one of them"):
        backbone(x, "test", 1, test_task_id=2)


def test_test_stage_takes_the_task_id_of_the_backbone_forward():
    torch.manual_seed(0)
    backbone = HATMaskMLP(12, [8], 4)
    x = torch.randn(3, 12)
    for task_id in (1, 2):
        backbone.setup_task_id(task_id)
        hat_of(backbone).end_task(task_id)
    for task_id in (1, 2):
        by_keyword = backbone(x, "test", test_task_id=task_id)
        by_task = backbone(x, "test", task_id)
        assert torch.equal(by_task.feature, by_keyword.feature)
        for name, mask in hat_of(backbone).stored_mask(task_id).items():
            assert torch.equal(by_task.get("mask")[name], mask), name


@pytest.mark.parametrize("mode", ["shared", "independent"])
def test_attach_swaps_batch_norms_keeping_their_parameters_and_buffers(mode):
    torch.manual_seed(0)
    plain = CLMLP(12, [8], 4, batch_normalization=True)
    with torch.no_grad():
        for norm in plain.fc_bn:
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_()
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    saved = {key: value.clone() for key, value in plain.state_dict().items() if "fc_bn" in key}
    x = torch.randn(5, 12)
    hat_backbone = CLMLP(12, [8], 4, batch_normalization=True)
    hat_backbone.load_state_dict(plain.state_dict())
    hat_backbone.attach(HAT(batch_normalization=mode))
    plain.setup_task_id(1)
    plain.eval()
    expected = plain(x, "test").feature
    if mode == "shared":
        assert all(type(norm) is MaskedBatchNorm1d for norm in hat_backbone.fc_bn)
        for key, value in saved.items():
            assert torch.equal(hat_backbone.state_dict()[key], value), key
    else:
        assert all(isinstance(norm, TaskBatchNorm) for norm in hat_backbone.fc_bn)
    # With every unit open the masked network is the plain one, bit for bit (shared: same BN).
    hat_backbone.setup_task_id(1)
    hat_of(hat_backbone).initialize_task_embedding("unmasked")
    hat_of(hat_backbone).end_task(1)
    hat_backbone.eval()
    if mode == "shared":
        assert torch.equal(hat_backbone(x, "test", test_task_id=1).feature, expected)


def test_resnet_batch_norms_become_masked_2d_ones_with_the_same_statistics():
    torch.manual_seed(0)
    backbone = HATMaskResNet18(
        input_channels=3, output_dim=10, small_input=True, batch_normalization="shared"
    )
    hat = hat_of(backbone)
    assert type(backbone.bn1) is MaskedBatchNorm2d
    assert hat.normalization_layer("layer2/0/downsample/0") is backbone.layer2[0].downsample[1]
    assert hat.normalization_layer("proj") is None
    assert hat.fused_layers == frozenset(backbone.weighted_layer_names) - {"proj"}


def test_a_weighted_layer_hat_cannot_cover_is_refused_by_name():
    backbone = CLMLP(12, [8], 4)
    backbone.fc[1] = nn.Sequential(nn.Linear(8, 4))
    with pytest.raises(TypeError, match=r"weighted layer 'fc/1' \(Sequential\) has neither"):
        backbone.attach(HAT())


def test_a_backbone_with_batch_norms_needs_a_batch_norm_mode():
    with pytest.raises(ValueError, match=r"has batch norms but HAT got batch_normalization=None"):
        CLMLP(12, [8], 4, batch_normalization=True).attach(HAT(batch_normalization=None))


def test_an_activation_that_does_not_keep_zero_is_refused():
    with pytest.raises(ValueError, match=r"activation Sigmoid maps 0 to 0.5"):
        CLMLP(12, [8], 4, activation_layer=nn.Sigmoid).attach(HAT())


def test_hat_of_names_what_is_missing():
    with pytest.raises(TypeError, match=r"CLMLP has no mask method attached, not HAT"):
        hat_of(CLMLP(12, [8], 4))
    method = HAT()
    assert hat_of(method) is method
    with pytest.raises(RuntimeError, match=r"HAT is not attached to a backbone"):
        method.cumulative_mask()


def test_regularization_and_conditioning_through_the_method():
    torch.manual_seed(0)
    backbone = HATMaskMLP(12, [8], 4)
    hat = hat_of(backbone)
    backbone.setup_task_id(1)
    hat.end_task(1)
    backbone.setup_task_id(2)
    output = backbone(torch.randn(3, 12), "train", scale=2.0)
    from clarena.hat import condition_gradients, sparsity_regularization

    regularization = hat.regularization(output)
    assert regularization is not None
    assert torch.equal(
        regularization, sparsity_regularization(output.get("mask"), hat.cumulative_mask())
    )
    (output.feature.sum() + regularization).backward()
    reference = {name: p.grad.clone() for name, p in backbone.named_parameters()}
    condition_gradients(backbone)
    expected = {name: p.grad.clone() for name, p in backbone.named_parameters()}
    for name, parameter in backbone.named_parameters():
        parameter.grad = reference[name].clone()
    hat.condition_gradients()
    for name, parameter in backbone.named_parameters():
        assert torch.equal(parameter.grad, expected[name]), name


def test_published_backbone_calls_reach_the_attached_method():
    # SPEC §4: users' code calls initialize_task_embedding (and the mask accessors) on the backbone.
    backbone = HATMaskMLP(input_dim=4, hidden_dims=[3], output_dim=2)
    hat = hat_of(backbone)
    backbone.setup_task_id(1)
    backbone.initialize_task_embedding("masked")
    assert all(bool((e == -1).all()) for e in hat.task_embedding.values())
    backbone.store_mask()
    assert hat.stored_task_ids == [1]
    assert backbone.capacity() == hat.capacity() == 0.0
    assert all(
        torch.equal(backbone.stored_mask(1)[name], mask)
        for name, mask in hat.stored_mask(1).items()
    )
    assert set(type(hat).backbone_api) <= set(vars(backbone))
