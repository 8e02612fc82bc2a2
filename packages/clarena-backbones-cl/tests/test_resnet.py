"""CL ResNets: same trunks as the core ResNets, task-aware forward."""

from __future__ import annotations

import pytest
import torch

from clarena import backbones as core
from clarena import cl

DEPTHS = [
    (cl.CLResNet18, core.ResNet18, 512),
    (cl.CLResNet34, core.ResNet34, 512),
    (cl.CLResNet50, core.ResNet50, 2048),
    (cl.CLResNet101, core.ResNet101, 2048),
    (cl.CLResNet152, core.ResNet152, 2048),
]


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(("cl_class", "core_class", "trunk_width"), DEPTHS)
def test_cl_resnet_matches_its_core_counterpart(cl_class, core_class, trunk_width):
    torch.manual_seed(0)
    backbone = cl_class(input_channels=1, output_dim=10, small_input=True)
    reference = core_class(input_channels=1, output_dim=10, small_input=True)
    assert isinstance(backbone, core.ResNet)
    assert isinstance(backbone, cl.CLBackbone)
    assert backbone.depth == reference.depth
    assert backbone.architecture == f"CL{reference.architecture}"
    assert backbone.trunk_width == trunk_width
    assert parameter_count(backbone) == parameter_count(reference)
    assert backbone.weighted_layer_names == reference.weighted_layer_names
    keys = list(backbone.state_dict())
    assert keys.count("_extra_state") == 1
    keys.remove("_extra_state")
    assert keys == list(reference.state_dict())

    backbone.setup_task_id(1)
    backbone.eval()
    with torch.no_grad():
        feature, activations = backbone(torch.randn(2, 1, 8, 8), stage="test")
    assert tuple(feature.shape) == (2, 10)
    assert set(activations) == set(backbone.weighted_layer_names)


def test_cl_resnet_outputs_equal_core_resnet_with_the_same_weights():
    torch.manual_seed(0)
    reference = core.ResNet18(input_channels=3, output_dim=512).eval()
    backbone = cl.CLResNet18(input_channels=3, output_dim=512)
    missing, unexpected = backbone.load_state_dict(reference.state_dict(), strict=False)
    assert missing == ["_extra_state"]
    assert unexpected == []
    backbone.eval()
    backbone.setup_task_id(7)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(x, "test")[0], reference(x, "test")[0])
    assert backbone.proj is None


def test_cl_resnet_forward_needs_a_task():
    backbone = cl.CLResNet18(input_channels=3, small_input=True)
    with pytest.raises(RuntimeError, match=r"setup_task_id"):
        backbone(torch.randn(2, 3, 8, 8), stage="train")
    backbone.setup_task_id(1)
    with pytest.raises(ValueError, match=r"task 2 was never set up"):
        backbone(torch.randn(2, 3, 8, 8), stage="test", task_id=2)


def test_cl_resnet_default_arguments_are_the_core_defaults():
    backbone = cl.CLResNet18()
    assert backbone.input_channels == 3
    assert backbone.output_dim == 512
    assert backbone.batch_normalization is True
    assert backbone.small_input is False
    assert backbone.task_id is None
    assert backbone.processed_task_ids == []


def test_cl_resnet_checks_constructor_arguments():
    with pytest.raises(
        TypeError, match=r"CLResNet34\(\) got an unknown argument 'input_channel'.*Did you mean"
    ):
        cl.CLResNet34(input_channel=3)
    backbone = cl.CLResNet18(batch_normalisation=False)
    assert backbone.batch_normalization is False
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())


def test_cl_resnet52_is_the_docs_name_of_cl_resnet50():
    assert cl.CLResNet52 is cl.CLResNet50
    assert core.CLResNet52 is cl.CLResNet50
