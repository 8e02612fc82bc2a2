"""CLTimmBackbone: a timm model for continual learning, with a mask method attached."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import timm
import torch
from torch import Tensor, nn
from torch.func import functional_call

from clarena.backbones import BackboneOutput, resolve_backbone
from clarena.cl import CLBackbone, HeadsCIL, HeadsTIL, MaskMethod, output_layer_names
from clarena.cl.head_dil import HeadDIL
from clarena.cl.timm_backbone import CLTimmBackbone


class ToyMask(MaskMethod):
    """Zeroes chosen units of some layers (unit_gate) and multiplies some weights by a fixed
    mask (layer_forward); records the shape each gate receives."""

    name = "toy"

    def __init__(self, unit_masks: dict[str, Tensor], weight_masks: dict[str, Tensor]) -> None:
        self.unit_masks = unit_masks
        self.weight_masks = weight_masks
        self.gate_shapes: dict[str, tuple[int, ...]] = {}

    def _attach(self, backbone: CLBackbone) -> None:
        for name in [*self.unit_masks, *self.weight_masks]:
            backbone.get_layer_by_name(name)

    def end_task(self, task_id: int) -> None:
        return None

    def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
        mask = self.weight_masks.get(layer_name)
        if mask is None:
            return layer(input)
        return functional_call(layer, {"weight": layer.weight * mask}, (input,))

    def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
        self.gate_shapes[layer_name] = tuple(hidden.shape)
        mask = self.unit_masks.get(layer_name)
        if mask is None:
            return hidden
        return hidden * mask.view(1, -1, *([1] * (hidden.ndim - 2)))

    def forward(
        self, input: Tensor, stage: str | None, task_id: int | None, step: Mapping[str, Any]
    ) -> BackboneOutput:
        self.backbone.check_task_id_ready(task_id)
        return BackboneOutput(*self.backbone._run_features(input))

    def layer_usage(self) -> dict[str, tuple[int, int]]:
        return {}


def units_mask(width: int, zeroed: range) -> Tensor:
    mask = torch.ones(width)
    mask[list(zeroed)] = 0.0
    return mask


def test_registered_and_heads_work_for_til_cil_dil():
    assert resolve_backbone("CLTimmBackbone") is CLTimmBackbone
    backbone = CLTimmBackbone("vit_tiny_patch16_224", output_dim=16, img_size=32, depth=1)
    images = torch.randn(2, 3, 32, 32)
    til, cil, dil = HeadsTIL(16), HeadsCIL(16), HeadDIL(16)
    for task_id in (1, 2):
        backbone.setup_task_id(task_id)
        til.setup_task_id(task_id, num_classes=3)
        cil.setup_task_id(task_id, num_classes=3)
        dil.setup_task_id(task_id, num_classes=3)
        feature, _ = backbone(images, stage="train")
        assert til(feature, task_id).shape == (2, 3)
        assert cil(feature).shape == (2, 3 * task_id)
        assert dil(feature).shape == (2, 3)
    assert backbone.feature_layer_names() == ("proj",)
    assert output_layer_names(backbone, "blocks/0/mlp/fc1") == ("blocks/0/mlp/fc2",)
    assert "_extra_state" in backbone.state_dict()


def test_vit_toy_mask_equals_hooks_on_timms_own_model():
    """Units of linear layers on tokens are the last dimension: the gate must act there."""
    torch.manual_seed(0)
    backbone = CLTimmBackbone("vit_tiny_patch16_224", img_size=32, depth=1).eval()
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=1)
    reference.load_state_dict(backbone.timm_model.state_dict())
    reference.eval()
    unit_masks = {
        "patch_embed/proj": units_mask(192, range(0, 40)),
        "blocks/0/attn/qkv": units_mask(576, range(100, 300)),
        "blocks/0/mlp/fc1": units_mask(768, range(5, 700, 3)),
    }
    weight_masks = {"blocks/0/mlp/fc2": (torch.rand(192, 768) > 0.5).float()}
    method = ToyMask(unit_masks, weight_masks)
    backbone.attach(method)
    backbone.setup_task_id(1)
    images = torch.randn(2, 3, 32, 32)

    with torch.no_grad():
        unmasked = reference(images)
        reference.blocks[0].mlp.fc2.weight.mul_(weight_masks["blocks/0/mlp/fc2"])
        reference.patch_embed.proj.register_forward_hook(
            lambda m, i, o: o * unit_masks["patch_embed/proj"].view(1, -1, 1, 1)
        )
        reference.blocks[0].attn.qkv.register_forward_hook(
            lambda m, i, o: o * unit_masks["blocks/0/attn/qkv"]
        )
        reference.blocks[0].mlp.fc1.register_forward_hook(
            lambda m, i, o: o * unit_masks["blocks/0/mlp/fc1"]
        )
        expected = reference(images)
        feature, activations = backbone(images, stage="test")

    assert not torch.equal(expected, unmasked)
    assert torch.equal(feature, expected)
    assert method.gate_shapes["blocks/0/attn/qkv"] == (2, 576, 5)
    assert method.gate_shapes["patch_embed/proj"] == (2, 192, 2, 2)
    assert torch.all(activations["blocks/0/mlp/fc1"][:, 5:700:3] == 0)


def test_convnet_toy_mask_gates_between_batch_norm_and_activation():
    """MobileNetV3: convolutions feed BatchNormAct2d; the gate sits after the norm, before the
    activation (a hook on the norm-activation's ``drop``), or on the output of an SE convolution
    that no norm consumes."""
    torch.manual_seed(0)
    backbone = CLTimmBackbone("mobilenetv3_small_050").eval()
    reference = timm.create_model("mobilenetv3_small_050", num_classes=0)
    reference.load_state_dict(backbone.timm_model.state_dict())
    reference.eval()
    stem_units = backbone.get_layer_by_name("conv_stem").out_channels
    se_units = backbone.get_layer_by_name("blocks/0/0/se/conv_reduce").out_channels
    head_units = backbone.get_layer_by_name("conv_head").out_channels
    unit_masks = {
        "conv_stem": units_mask(stem_units, range(0, stem_units, 2)),
        "blocks/0/0/se/conv_reduce": units_mask(se_units, range(1)),
        "conv_head": units_mask(head_units, range(10, 200)),
    }
    pw = backbone.get_layer_by_name("blocks/1/0/conv_pw").weight
    weight_masks = {"blocks/1/0/conv_pw": (torch.rand(pw.shape) > 0.3).float()}
    method = ToyMask(unit_masks, weight_masks)
    backbone.attach(method)
    backbone.setup_task_id(1)
    images = torch.randn(2, 3, 64, 64)

    with torch.no_grad():
        unmasked = reference(images)
        reference.blocks[1][0].conv_pw.weight.mul_(weight_masks["blocks/1/0/conv_pw"])
        reference.bn1.drop.register_forward_hook(
            lambda m, i, o: o * unit_masks["conv_stem"].view(1, -1, 1, 1)
        )
        reference.blocks[0][0].se.conv_reduce.register_forward_hook(
            lambda m, i, o: o * unit_masks["blocks/0/0/se/conv_reduce"].view(1, -1, 1, 1)
        )
        reference.conv_head.register_forward_hook(
            lambda m, i, o: o * unit_masks["conv_head"].view(1, -1, 1, 1)
        )
        expected = reference(images)
        feature, _ = backbone(images, stage="test")

    assert not torch.equal(expected, unmasked)
    assert torch.equal(feature, expected)
    assert method.gate_shapes["conv_stem"] == (2, stem_units, 32, 32)


def test_attach_after_a_task_is_refused():
    backbone = CLTimmBackbone("resnet10t")
    backbone.setup_task_id(1)
    with pytest.raises(RuntimeError, match="before the first setup_task_id"):
        backbone.attach(ToyMask({}, {}))


def test_signature_is_timm_backbones_and_timm_arguments_pass_through():
    import inspect

    from clarena.backbones import TimmBackbone

    own = inspect.signature(CLTimmBackbone.__init__).parameters
    assert own == inspect.signature(TimmBackbone.__init__).parameters
    backbone = CLTimmBackbone("vit_tiny_patch16_224", 8, None, 32, 1, depth=1)
    assert backbone.output_dim == 8
    assert backbone.input_channels == 1
    assert len(backbone.timm_model.blocks) == 1
    with pytest.raises(TypeError, match="Did you mean 'img_size'"):
        CLTimmBackbone("vit_tiny_patch16_224", img_sise=32)
