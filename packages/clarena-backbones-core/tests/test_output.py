"""BackboneOutput: one typed output that unpacks as the published tuples."""

from __future__ import annotations

import pytest
import torch

from clarena.backbones import MLP, BackboneOutput


def test_plain_backbone_output_unpacks_as_feature_and_activations():
    backbone = MLP(input_dim=4, hidden_dims=[3], output_dim=2).eval()
    output = backbone(torch.ones(2, 4))
    assert isinstance(output, BackboneOutput)
    feature, activations = output
    assert feature is output.feature
    assert activations is output.activations
    assert len(output) == 2
    assert output[0] is feature
    assert output[1] is activations
    assert list(activations) == ["fc/0", "fc/1"]


def test_method_fields_unpack_in_the_published_order():
    feature, mask, activations = (
        torch.zeros(1, 2),
        {"fc/0": torch.ones(3)},
        {"fc/0": torch.ones(1, 3)},
    )
    output = BackboneOutput(
        feature, activations, extras={"mask": mask}, fields=("feature", "mask", "activations")
    )
    unpacked = tuple(output)
    assert unpacked[0] is feature
    assert unpacked[1] is mask
    assert unpacked[2] is activations
    assert output.get("mask") is mask
    assert output[-1] is activations


def test_unknown_field_is_refused_naming_what_the_output_holds():
    with pytest.raises(ValueError, match=r"fields \['mask'\] are neither"):
        BackboneOutput(torch.zeros(1), {}, fields=("feature", "mask"))
    output = BackboneOutput(torch.zeros(1), {}, extras={"weight_mask": {}})
    with pytest.raises(KeyError, match=r"no 'mask'; it holds feature, activations, weight_mask"):
        output.get("mask")


def test_plain_backbone_refuses_step_arguments_by_name():
    backbone = MLP(input_dim=4, hidden_dims=[3], output_dim=2)
    with pytest.raises(TypeError, match=r"MLP.forward got step arguments s_max"):
        backbone(torch.ones(2, 4), "train", s_max=400)
