"""ResNets: the contract, output_dim, layer naming, parameter parity with torchvision, options."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import clarena.backbones
from clarena.backbones import ResNet, ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from clarena.backbones.testing import BackboneContract

DEPTHS = {
    ResNet18: ("resnet18", 512),
    ResNet34: ("resnet34", 512),
    ResNet50: ("resnet50", 2048),
    ResNet101: ("resnet101", 2048),
    ResNet152: ("resnet152", 2048),
}


class TestResNet18SmallInputContract(BackboneContract):
    def make_backbone(self):
        return ResNet18(output_dim=64, small_input=True)

    def example_input(self):
        return torch.randn(2, 3, 32, 32)


class TestResNet18TrunkWidthContract(BackboneContract):
    def make_backbone(self):
        return ResNet18(input_channels=1, output_dim=512, small_input=True)

    def example_input(self):
        return torch.randn(2, 1, 16, 16)


class TestResNet50Contract(BackboneContract):
    def make_backbone(self):
        return ResNet50(output_dim=10)

    def example_input(self):
        return torch.randn(2, 3, 32, 32)


@pytest.fixture(scope="module", params=list(DEPTHS), ids=lambda cls: cls.__name__)
def trunk_width_resnet(request):
    """Each depth built once, with ``output_dim`` equal to its trunk width (no projection)."""
    cls = request.param
    return cls(output_dim=DEPTHS[cls][1]).eval()


def test_output_dim_equal_to_trunk_width_adds_no_projection(trunk_width_resnet):
    width = DEPTHS[getattr(clarena.backbones, trunk_width_resnet.architecture)][1]
    assert trunk_width_resnet.trunk_width == width
    assert trunk_width_resnet.proj is None
    assert "proj" not in trunk_width_resnet.weighted_layer_names
    with torch.no_grad():
        feature, _ = trunk_width_resnet(torch.randn(2, 3, 32, 32), stage="test")
    assert feature.shape == (2, width)


def test_parameters_match_torchvision_without_fc(trunk_width_resnet):
    reference = getattr(
        torchvision.models, DEPTHS[getattr(clarena.backbones, trunk_width_resnet.architecture)][0]
    )(weights=None)
    expected = {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in trunk_width_resnet.state_dict().items()} == expected
    count = sum(p.numel() for p in trunk_width_resnet.parameters())
    assert count == sum(p.numel() for p in reference.parameters()) - sum(
        p.numel() for p in reference.fc.parameters()
    )


@pytest.mark.parametrize("cls", list(DEPTHS), ids=lambda cls: cls.__name__)
def test_output_dim_is_honoured_through_a_final_projection(cls):
    backbone = cls(output_dim=10).eval()
    assert backbone.weighted_layer_names[-1] == "proj"
    assert backbone.proj.in_features == DEPTHS[cls][1]
    with torch.no_grad():
        feature, activations = backbone(torch.randn(2, 3, 32, 32), stage="test")
    assert feature.shape == (2, 10)
    assert activations["proj"].shape == (2, 10)


def test_resnet18_weighted_layers_and_their_inputs():
    backbone = ResNet18()
    names = backbone.weighted_layer_names
    assert len(names) == 20  # stem, 16 block convolutions, 3 shortcut convolutions
    assert len(ResNet18(output_dim=10).weighted_layer_names) == 21
    assert names[:5] == [
        "conv1",
        "layer1/0/conv1",
        "layer1/0/conv2",
        "layer1/1/conv1",
        "layer1/1/conv2",
    ]
    for stage in (2, 3, 4):
        assert f"layer{stage}/0/downsample/0" in names
    assert "layer1/0/downsample/0" not in names
    assert backbone.input_layer_names("conv1") == ()
    assert backbone.input_layer_names("layer1/0/conv1") == ("conv1",)
    assert backbone.input_layer_names("layer1/0/conv2") == ("layer1/0/conv1",)
    assert backbone.input_layer_names("layer1/1/conv1") == ("layer1/0/conv2", "conv1")
    assert backbone.input_layer_names("layer2/0/downsample/0") == (
        "layer1/1/conv2",
        "layer1/0/conv2",
        "conv1",
    )
    assert backbone.input_layer_names("layer2/1/conv1") == (
        "layer2/0/conv2",
        "layer2/0/downsample/0",
    )
    assert isinstance(backbone.get_layer_by_name("layer2/0/downsample/0"), nn.Conv2d)


def test_resnet50_bottlenecks_have_three_convolutions_and_a_first_shortcut():
    names = ResNet50(output_dim=2048).weighted_layer_names
    assert len(names) == 1 + 16 * 3 + 4
    assert ResNet50().weighted_layer_names == [*names, "proj"]  # default output_dim is 512
    assert names[1:5] == [
        "layer1/0/conv1",
        "layer1/0/conv2",
        "layer1/0/conv3",
        "layer1/0/downsample/0",
    ]


def test_activations_hold_each_layer_output():
    backbone = ResNet18(output_dim=10, small_input=True).eval()
    with torch.no_grad():
        _, activations = backbone(torch.randn(2, 3, 32, 32), stage="test")
    assert activations["conv1"].shape == (2, 64, 32, 32)
    assert activations["layer2/0/downsample/0"].shape == (2, 128, 16, 16)
    assert activations["layer4/1/conv2"].shape == (2, 512, 4, 4)
    assert (activations["conv1"] >= 0).all()  # after the ReLU


def test_small_input_stem_keeps_the_resolution():
    small, standard = ResNet18(small_input=True), ResNet18()
    assert small.conv1.kernel_size == (3, 3)
    assert small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)
    assert standard.conv1.kernel_size == (7, 7)
    assert standard.conv1.stride == (2, 2)
    assert isinstance(standard.maxpool, nn.MaxPool2d)


def test_wrong_channel_count_states_the_expected_channels():
    backbone = ResNet18(input_channels=1, small_input=True)
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\).*\(2, 3, 32, 32\)"):
        backbone(torch.randn(2, 3, 32, 32), stage="train")
    with pytest.raises(ValueError, match=r"\(batch, 1, height, width\)"):
        backbone(torch.randn(1, 32, 32), stage="train")


def test_unknown_stage_is_rejected():
    with pytest.raises(ValueError, match="stage must be one of"):
        ResNet18(small_input=True)(torch.randn(2, 3, 8, 8), stage="fit")


def test_resnet_needs_one_of_the_published_depths():
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'depth'"):
        ResNet()
    for depth in (19, True, "18"):
        with pytest.raises(
            ValueError, match=rf"depth must be one of 18, 34, 50, 101, 152; got {depth!r}"
        ):
            ResNet(depth=depth)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_channels": 0}, ValueError, "input_channels must be a positive integer"),
        ({"output_dim": -1}, ValueError, "output_dim must be a positive integer"),
        ({"small_input": "yes"}, TypeError, "small_input must be true or false"),
        ({"bias": 1}, TypeError, "bias must be true or false"),
    ],
)
def test_invalid_constructor_values_are_rejected(kwargs, error, message):
    with pytest.raises(error, match=message):
        ResNet18(**kwargs)


@pytest.mark.parametrize(
    ("activation_layer", "expected"),
    [("gelu", "GELU"), (None, "Identity"), (nn.Tanh, "Tanh")],
)
def test_activation_layer_forms(activation_layer, expected):
    backbone = ResNet18(output_dim=10, activation_layer=activation_layer, small_input=True)
    activations = [backbone.act1, *(m.act1 for m in backbone.modules() if hasattr(m, "conv2"))]
    assert {type(m).__name__ for m in activations} == {expected}
    assert not any(isinstance(m, nn.ReLU) for m in backbone.modules())
    feature, _ = backbone(torch.randn(2, 3, 8, 8), stage="train")
    assert feature.shape == (2, 10)


def test_unknown_activation_name_is_a_value_error():
    with pytest.raises(ValueError, match="unknown activation_layer 'swishy'"):
        ResNet18(activation_layer="swishy")


def test_bias_true_gives_every_convolution_a_bias():
    convolutions = [m for m in ResNet18().modules() if isinstance(m, nn.Conv2d)]
    assert all(conv.bias is None for conv in convolutions)
    backbone = ResNet18(bias=True)
    convolutions = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convolutions) == 20
    assert all(isinstance(conv.bias, nn.Parameter) for conv in convolutions)
    assert any(name.endswith("downsample.0.bias") for name, _ in backbone.named_parameters())


def test_batch_normalization_false_has_no_batchnorm():
    backbone = ResNet18(output_dim=10, batch_normalization=False, small_input=True)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    assert not any("bn" in name for name, _ in backbone.named_parameters())
    feature, _ = backbone(torch.randn(2, 3, 8, 8), stage="train")
    assert feature.shape == (2, 10)


def test_backward_reaches_every_parameter():
    backbone = ResNet18(output_dim=10, small_input=True)
    feature, _ = backbone(torch.randn(2, 3, 8, 8), stage="train")
    feature.sum().backward()
    assert all(p.grad is not None for p in backbone.parameters())
