"""WSN as a mask method: attached by hand or by the builders, entry point, step arguments."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from clarena.backbones import BackboneOutput
from clarena.cl import CLMLP, available_mask_methods, resolve_mask_method
from clarena.wsn import FIELDS, WSN, WSNMaskMLP, wsn_of


def small(**arguments: object) -> CLMLP:
    return CLMLP(input_dim=6, hidden_dims=[5], output_dim=4, **arguments)


def test_registered_in_the_mask_methods_entry_point_group() -> None:
    assert resolve_mask_method("wsn") is WSN
    assert available_mask_methods()["wsn"] == "clarena-wsn"
    assert WSN.name == "wsn"


def test_attaching_by_hand_builds_what_the_builder_builds_bit_for_bit() -> None:
    torch.manual_seed(3)
    built = WSNMaskMLP(
        input_dim=6, hidden_dims=[5], output_dim=4, batch_normalization="independent"
    )
    torch.manual_seed(3)
    by_hand = small(batch_normalization=True).attach(WSN(batch_normalization="independent"))
    assert type(built) is type(by_hand) is CLMLP
    mine, theirs = built.state_dict(), by_hand.state_dict()
    assert list(mine) == list(theirs)
    for key, value in mine.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, theirs[key]), key
        else:
            assert value == theirs[key], key


def test_state_dict_keys_are_those_wsn_backbones_always_saved() -> None:
    backbone = WSNMaskMLP(input_dim=6, hidden_dims=[5], output_dim=4)
    backbone.setup_task_id(1)
    backbone(torch.randn(2, 6), "train", mask_percentage=0.5)
    wsn_of(backbone).end_task(1)  # at the mask_percentage the task trained with
    layers = ("fc/0", "fc/1")
    expected = {"_extra_state", "fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias"}
    for layer in layers:
        expected |= {f"weight_score.{layer}", f"bias_score.{layer}"}
        for kind in ("weight", "bias"):
            expected |= {f"cumulative_masks.{layer}/{kind}", f"task_masks.tasks.1.{layer}/{kind}"}
    assert set(backbone.state_dict()) == expected
    assert backbone.state_dict()["_extra_state"] == {
        "task_id": 1,
        "processed_task_ids": [1],
        "mask_percentage": 0.5,
    }


def test_forward_returns_the_typed_output_unpacking_as_the_published_tuple() -> None:
    backbone = WSNMaskMLP(input_dim=6, hidden_dims=[5], output_dim=4)
    backbone.setup_task_id(1)
    output = backbone(torch.randn(3, 6), "train", mask_percentage=0.5)
    assert isinstance(output, BackboneOutput)
    assert output.fields == FIELDS == ("feature", "weight_mask", "bias_mask", "activations")
    feature, weight_mask, bias_mask, activations = output
    assert feature is output.feature
    assert activations is output.activations
    assert weight_mask is output.extras["weight_mask"]
    assert bias_mask is output.extras["bias_mask"]
    assert set(weight_mask) == set(bias_mask) == {"fc/0", "fc/1"}


def test_task_id_and_test_task_id_select_the_same_stored_mask() -> None:
    backbone = WSNMaskMLP(input_dim=6, hidden_dims=[5], output_dim=4)
    wsn = wsn_of(backbone)
    for task in (1, 2):
        backbone.setup_task_id(task)
        wsn.initialize_parameter_score("N01")
        wsn.store_mask(0.5)
    x = torch.randn(3, 6)
    by_test_task_id = backbone(x, "test", test_task_id=1)
    by_task_id = backbone(x, "test", task_id=1)
    assert torch.equal(by_test_task_id.feature, by_task_id.feature)
    assert not torch.equal(by_task_id.feature, backbone(x, "test").feature)  # current: task 2
    with pytest.raises(ValueError, match=r"task_id=1 and test_task_id=2; pass one of them"):
        backbone(x, "test", task_id=1, test_task_id=2)
    with pytest.raises(ValueError, match=r"stage 'train' runs the current task's subnetwork"):
        backbone(x, "train", task_id=1, mask_percentage=0.5)
    with pytest.raises(TypeError, match=r"unknown step arguments s_max; WSN takes mask_percentage"):
        backbone(x, "train", mask_percentage=0.5, s_max=400)


def test_a_layer_wsn_cannot_mask_is_refused_by_name_before_anything_is_registered() -> None:
    backbone = small()
    backbone.fc[0] = nn.Bilinear(6, 6, 5)
    wsn = WSN()
    with pytest.raises(
        TypeError,
        match=re.escape("weighted layer 'fc/0' of CLMLP is a Bilinear; WSN masks only nn.Linear"),
    ):
        backbone.attach(wsn)
    assert backbone.mask_method is None
    assert not hasattr(backbone, "weight_score")


def test_batch_norm_modes_when_attaching_by_hand() -> None:
    with pytest.raises(ValueError, match=r"has batch norms but batch_normalization=None"):
        small(batch_normalization=True).attach(WSN(batch_normalization=None))
    with pytest.raises(ValueError, match=r"WSN: batch_normalization must be null, 'shared' or"):
        WSN(batch_normalization="per-task")
    assert wsn_of(small(batch_normalization=True).attach(WSN("shared"))).batch_norm_mode == "shared"
    assert wsn_of(small().attach(WSN())).batch_norm_mode is None  # nothing to make per task


def test_wsn_of_a_backbone_without_wsn_says_how_to_get_one() -> None:
    with pytest.raises(TypeError, match=r"CLMLP has no mask method attached, not WSN; build it"):
        wsn_of(small())


def test_published_backbone_calls_reach_the_attached_method():
    # SPEC §4: users' code calls initialize_parameter_score (and the mask accessors) on the
    # backbone.
    backbone = WSNMaskMLP(input_dim=4, hidden_dims=[3], output_dim=2)
    wsn = wsn_of(backbone)
    backbone.setup_task_id(1)
    backbone.initialize_parameter_score("U01")
    assert all(bool((s >= 0).all() and (s <= 1).all()) for s in backbone.weight_score.values())
    backbone.store_mask(0.5)
    assert backbone.capacity() == wsn.capacity()
    assert set(type(wsn).backbone_api) <= set(vars(backbone))
