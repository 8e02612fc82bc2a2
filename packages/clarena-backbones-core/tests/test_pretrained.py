"""Loading timm / torchvision ResNet checkpoints from local files (never from the network)."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

from clarena.backbones import ResNet18


@pytest.fixture(scope="module")
def torchvision_resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.fixture(scope="module")
def torchvision_checkpoint(torchvision_resnet18, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision_resnet18.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def timm_resnet18():
    torch.manual_seed(1)
    model = timm.create_model("resnet18", pretrained=False).eval()
    # Fresh BatchNorm statistics are 0/1; make them non-trivial so a missed load would show.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


def _features(backbone, input):
    with torch.no_grad():
        return backbone.eval()(input, stage="test")[0]


def test_torchvision_checkpoint_gives_torchvision_features(
    torchvision_resnet18, torchvision_checkpoint
):
    reference = torchvision.models.resnet18(weights=None).eval()
    reference.load_state_dict(torchvision_resnet18.state_dict())
    reference.fc = nn.Identity()
    backbone = ResNet18(pretrained_weights=torchvision_checkpoint, output_dim=512)
    input = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(_features(backbone, input), reference(input))


def test_timm_checkpoint_gives_timm_features(timm_resnet18, tmp_path):
    path = tmp_path / "timm_resnet18.pth"
    torch.save(timm_resnet18.state_dict(), path)
    backbone = ResNet18(pretrained_weights=str(path), output_dim=512)
    input = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = timm_resnet18.forward_head(
            timm_resnet18.forward_features(input), pre_logits=True
        )
    torch.testing.assert_close(_features(backbone, input), expected)


def test_safetensors_checkpoint(timm_resnet18, tmp_path):
    path = tmp_path / "resnet18.safetensors"
    save_file(timm_resnet18.state_dict(), str(path))
    backbone = ResNet18(pretrained_weights=path)
    for key, value in backbone.state_dict().items():
        if not key.startswith("proj."):
            torch.testing.assert_close(value, timm_resnet18.state_dict()[key])


def test_wrapped_ddp_checkpoint_loads(torchvision_resnet18, tmp_path):
    path = tmp_path / "ddp.ckpt"
    state = {f"module.{k}": v for k, v in torchvision_resnet18.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    backbone = ResNet18(pretrained_weights=path, output_dim=512)
    torch.testing.assert_close(backbone.conv1.weight, torchvision_resnet18.conv1.weight)


def test_projection_and_conv_biases_keep_their_initial_values(
    torchvision_resnet18, torchvision_checkpoint
):
    torch.manual_seed(2)
    initial = ResNet18(output_dim=10, bias=True).state_dict()
    torch.manual_seed(2)
    backbone = ResNet18(pretrained_weights=torchvision_checkpoint, output_dim=10, bias=True)
    checkpoint = torchvision_resnet18.state_dict()
    for key, value in backbone.state_dict().items():
        expected = checkpoint[key] if key in checkpoint else initial[key]
        torch.testing.assert_close(value, expected, msg=key)
    assert _features(backbone, torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_checkpoint_of_another_stem_names_the_shape_problem(torchvision_checkpoint):
    with pytest.raises(ValueError, match=r"shape differs: conv1\.weight.*\(64, 3, 7, 7\)"):
        ResNet18(pretrained_weights=torchvision_checkpoint, small_input=True)


def test_checkpoint_without_batchnorm_parameters_is_named(torchvision_checkpoint):
    with pytest.raises(ValueError, match=r"not in this backbone: bn1\.bias"):
        ResNet18(pretrained_weights=torchvision_checkpoint, batch_normalization=False)


def test_incomplete_checkpoint_lists_missing_parameters(torchvision_resnet18, tmp_path):
    path = tmp_path / "partial.pt"
    state = {k: v for k, v in torchvision_resnet18.state_dict().items() if "layer4" not in k}
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"missing from the checkpoint: layer4\..* more"):
        ResNet18(pretrained_weights=path)


def test_missing_file_is_file_not_found():
    with pytest.raises(FileNotFoundError, match=r"/nope/x\.pth"):
        ResNet18(pretrained_weights="/nope/x.pth")


def test_unknown_timm_tag_is_a_runtime_error_with_advice():
    with pytest.raises(RuntimeError, match=r"'not_a_timm_model'.*torch\.save"):
        ResNet18(pretrained_weights="not_a_timm_model")
