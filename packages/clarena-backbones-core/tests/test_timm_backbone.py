"""TimmBackbone: any timm model by name, timm's names and bits, every weighted layer routed."""

from __future__ import annotations

import copy
import io

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from clarena.backbones import TimmBackbone, resolve_backbone
from clarena.backbones._timm_graph import normalization_types
from clarena.backbones.timm_backbone import _pretrained_tag

#: (timm name, extra arguments, image side): a ViT, a ConvNeXt, an EfficientNet, a ResNet variant
#: and a hybrid convolution/attention network, at small sizes.
ARCHITECTURES = {
    "vit_tiny_patch16_224": ({"img_size": 32}, 32),
    "convnext_atto": ({}, 32),
    "efficientnet_b0": ({}, 32),
    "resnet50d": ({}, 32),
    "edgenext_xx_small": ({}, 64),
}

#: Trainable parameters outside weighted and normalisation layers, per architecture.
UNCOVERED = {
    "vit_tiny_patch16_224": lambda name: name in ("cls_token", "pos_embed"),
    "convnext_atto": lambda name: name.endswith(".gamma"),
    "efficientnet_b0": lambda name: False,
    "resnet50d": lambda name: False,
    "edgenext_xx_small": lambda name: name.endswith((".gamma", ".gamma_xca", ".xca.temperature")),
}


def timm_reference(name: str, backbone: TimmBackbone) -> nn.Module:
    """timm's own model of the same configuration, holding the backbone's weights."""
    arguments, _ = ARCHITECTURES[name]
    reference = timm.create_model(name, pretrained=False, num_classes=0, **arguments)
    reference.load_state_dict(backbone.state_dict())
    return reference


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def built(request):
    name = request.param
    arguments, side = ARCHITECTURES[name]
    torch.manual_seed(0)
    backbone = TimmBackbone(name, **arguments)
    return name, backbone, timm_reference(name, backbone), torch.randn(2, 3, side, side)


def test_target_resolves_through_the_registry():
    assert resolve_backbone("TimmBackbone") is TimmBackbone


def test_feature_is_timms_own_forward_bit_for_bit(built):
    _, backbone, reference, images = built
    backbone.eval()
    reference.eval()
    with torch.no_grad():
        feature, activations = backbone(images, stage="test")
        expected = reference(images)
    assert feature.shape == (2, backbone.output_dim) == (2, reference.num_features)
    assert torch.equal(feature, expected)
    assert set(activations) == set(backbone.weighted_layer_names)
    assert all(a.shape[0] == 2 for a in activations.values())


def test_training_forward_and_batch_statistics_match_timm(built):
    _, backbone, reference, images = built
    backbone = copy.deepcopy(backbone).train()
    reference = copy.deepcopy(reference).train()
    torch.manual_seed(1)
    feature, _ = backbone(images, stage="train")
    torch.manual_seed(1)
    expected = reference(images)
    assert torch.equal(feature, expected)
    for key, value in reference.state_dict().items():
        assert torch.equal(backbone.state_dict()[key], value), key


def test_state_dict_keys_are_timms(built):
    _, backbone, reference, _ = built
    assert list(backbone.state_dict()) == list(reference.state_dict())


def test_weighted_layers_are_every_linear_and_convolution_in_forward_order(built):
    _, backbone, reference, images = built
    order: list[str] = []
    handles = [
        module.register_forward_hook(
            lambda m, i, o, path=path: order.append(path) if path not in order else None
        )
        for path, module in reference.named_modules()
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]
    with torch.no_grad():
        reference.eval()(images)
    for handle in handles:
        handle.remove()
    assert backbone.weighted_layer_names == [path.replace(".", "/") for path in order]
    for layer_name in backbone.weighted_layer_names:
        assert isinstance(backbone.get_layer_by_name(layer_name), nn.Linear | nn.Conv2d)
    names = backbone.weighted_layer_names
    assert backbone.preceding_layer_name(names[0]) is None
    assert backbone.next_layer_name(names[-1]) is None
    assert backbone.next_layer_name(names[0]) == names[1]


def test_every_trainable_parameter_is_in_a_layer_or_listed_uncovered(built):
    name, backbone, _, _ = built
    owned: dict[int, str] = {}
    for layer_name in backbone.weighted_layer_names:
        owned.update(
            dict.fromkeys(map(id, backbone.get_layer_by_name(layer_name).parameters()), "w")
        )
    for norm_name in backbone.normalization_layer_names:
        norm = backbone.get_submodule(norm_name.replace("/", "."))
        assert isinstance(norm, normalization_types())
        owned.update(dict.fromkeys(map(id, norm.parameters()), "n"))
    outside = [n for n, p in backbone.named_parameters() if id(p) not in owned]
    assert list(backbone.uncovered_parameter_names()) == outside
    assert all(UNCOVERED[name](n) for n in outside)
    assert sum(UNCOVERED[name](n) for n, _ in backbone.named_parameters()) == len(outside)


def test_layer_graph_of_residual_and_attention_networks(built):
    name, backbone, _, _ = built
    inputs = backbone.input_layer_names
    if name == "vit_tiny_patch16_224":
        assert inputs("patch_embed/proj") == ()
        assert inputs("blocks/0/mlp/fc2") == ("blocks/0/mlp/fc1",)
        # A layer norm makes every channel non-zero whatever the units feeding it: no input
        # layers (a mask method treats the input channels as always used).
        notes = backbone.layer_graph_notes()
        assert inputs("blocks/0/attn/qkv") == inputs("blocks/1/attn/qkv") == ()
        assert "normalisation 'blocks.0.norm1'" in notes["blocks/0/attn/qkv"]
        # Attention mixes qkv's 576 units across tokens into proj's 192 input channels.
        assert inputs("blocks/0/attn/proj") == ()
        assert "scaled_dot_product_attention" in notes["blocks/0/attn/proj"]
    elif name == "resnet50d":
        assert inputs("conv1/3") == ("conv1/0",)
        assert inputs("layer1/0/downsample/1") == ("conv1/6",)
        assert inputs("layer1/1/conv1") == ("layer1/0/conv3", "layer1/0/downsample/1")
        assert backbone.layer_graph_notes() == {}
    elif name == "efficientnet_b0":
        # Squeeze-excitation multiplies conv_dw's units by sigmoid(conv_expand): the product is
        # 0 where conv_dw's unit is gated (sigmoid(0) is not 0, so conv_expand's gate is not).
        assert inputs("blocks/0/0/conv_pw") == ("blocks/0/0/conv_dw",)
        assert inputs("blocks/0/0/se/conv_reduce") == ("blocks/0/0/conv_dw",)
    elif name == "edgenext_xx_small":
        # Fourier position encoding is a module timm marks untraceable.
        notes = backbone.layer_graph_notes()
        assert "cannot enter" in notes["stages/1/blocks/1/pos_embd/token_projection"]
        assert inputs("stages/1/blocks/1/pos_embd/token_projection") == ()
    elif name == "convnext_atto":
        assert inputs("stages/0/blocks/0/mlp/fc2") == ("stages/0/blocks/0/mlp/fc1",)
        # conv_dw feeds a LayerNorm: its gate sits before it, and fc1 after it sees every
        # channel in use.
        assert inputs("stages/0/blocks/0/mlp/fc1") == ()
        assert "normalisation" in backbone.layer_graph_notes()["stages/0/blocks/0/mlp/fc1"]
        assert inputs("stages/0/blocks/0/conv_dw") == ()
    assert backbone.trace_error is None


def test_gates_sit_after_the_normalisation_consuming_a_layer(built):
    name, backbone, _, _ = built
    gated = {
        m._clarena_layer: type(m).__name__
        for m in backbone.modules()
        if type(m).__name__.startswith(("GatedNorm", "GatedDrop"))
    }
    if name == "resnet50d":
        assert gated["layer1/0/conv2"] == "GatedNorm[BatchNorm2d]"
        assert len(gated) == len(backbone.weighted_layer_names)
    elif name == "efficientnet_b0":
        # BatchNormAct2d: the gate goes between its norm and its activation.
        assert gated["conv_stem"].startswith("GatedDrop")
        assert "blocks/0/0/se/conv_reduce" not in gated
    elif name == "convnext_atto":
        # Depthwise convolution, then a LayerNorm2d: a layer norm mixes channels, so the gate
        # sits on the convolution's output, before it.
        assert "stages/0/blocks/0/conv_dw" not in gated
    elif name == "vit_tiny_patch16_224":
        assert gated == {}


def test_local_checkpoint_with_a_classifier_loads_and_gives_identical_features(tmp_path):
    torch.manual_seed(3)
    trained = timm.create_model("convnext_atto", pretrained=False, num_classes=7).eval()
    path = tmp_path / "convnext_atto.safetensors"
    save_file(trained.state_dict(), str(path))
    backbone = TimmBackbone("convnext_atto", pretrained_weights=str(path)).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = trained.forward_head(trained.forward_features(images), pre_logits=True)
        assert torch.equal(backbone(images, stage="test").feature, expected)
    pth = tmp_path / "convnext_atto.pth"
    torch.save({"state_dict": trained.state_dict()}, pth)
    again = TimmBackbone("convnext_atto", pretrained_weights=pth).eval()
    for key, value in backbone.state_dict().items():
        assert torch.equal(again.state_dict()[key], value)


def test_checkpoint_of_another_model_is_refused_with_the_keys(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), path)
    with pytest.raises(ValueError, match=r"does not fit timm model 'convnext_atto'.*missing"):
        TimmBackbone("convnext_atto", pretrained_weights=path)


def test_pretrained_tags_and_missing_files():
    assert _pretrained_tag("convnext_atto", "d2_in1k") == "convnext_atto.d2_in1k"
    assert _pretrained_tag("convnext_atto", "convnext_atto.d2_in1k") == "convnext_atto.d2_in1k"
    with pytest.raises(ValueError, match="another model"):
        _pretrained_tag("convnext_atto", "resnet18.a1_in1k")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint file at 'missing\.pth'"):
        _pretrained_tag("convnext_atto", "missing.pth")


def test_projection_is_the_last_weighted_layer_and_extra_state_key():
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_tiny_patch16_224", output_dim=16, img_size=32, depth=2)
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=2)
    assert list(backbone.state_dict()) == [*reference.state_dict(), "proj.weight", "proj.bias"]
    assert backbone.weighted_layer_names[-1] == "proj"
    # The pooled token is the residual stream: the patch embedding plus every block's outputs.
    residual = tuple(
        n
        for n in backbone.weighted_layer_names
        if n == "patch_embed/proj" or n.endswith(("attn/proj", "mlp/fc2"))
    )
    assert len(residual) == 5
    # ... through the final layer norm, which makes every channel non-zero: no input layers.
    assert backbone.input_layer_names("proj") == ()
    assert backbone.feature_layer_names() == ("proj",)
    feature, activations = backbone(torch.randn(2, 3, 32, 32), stage="test")
    assert feature.shape == (2, 16)
    assert activations["proj"].shape == (2, 16)
    # A linear layer on tokens reaches unit_gate (and the activations) as (batch, units, tokens).
    assert activations["blocks/0/attn/qkv"].shape == (2, 576, 5)


def test_input_shape_errors_name_the_expected_shape():
    backbone = TimmBackbone("vit_tiny_patch16_224", img_size=32, depth=1)
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 3, 32, 32\)"):
        backbone(torch.randn(2, 3, 64, 64))
    convnet = TimmBackbone("resnet10t", in_chans=1)
    with pytest.raises(ValueError, match=r"expects images of shape \(batch, 1, height, width\)"):
        convnet(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="empty batch"):
        convnet(torch.randn(0, 1, 32, 32))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"timm has no model 'convnext_attto'.*convnext_atto"):
        TimmBackbone("convnext_attto")
    with pytest.raises(TypeError, match=r"'ouput_dim'\. Did you mean 'output_dim'"):
        TimmBackbone("resnet10t", ouput_dim=8)
    with pytest.raises(TypeError, match=r"does not take the arguments given.*not_an_argument"):
        TimmBackbone("resnet10t", not_an_argument=1)


def test_deepcopy_pickle_and_state_dict_round_trip():
    torch.manual_seed(0)
    backbone = TimmBackbone("efficientnet_b0", output_dim=8).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(images).feature
        twin = copy.deepcopy(backbone)
        assert torch.equal(twin(images).feature, expected)
        assert twin.conv_stem._clarena_backbone is twin
        assert twin.timm_model.conv_stem is twin.conv_stem
        twin.conv_stem.weight.zero_()
        assert torch.equal(backbone(images).feature, expected)
        buffer = io.BytesIO()
        torch.save(backbone, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        assert torch.equal(loaded(images).feature, expected)
        torch.manual_seed(5)
        fresh = TimmBackbone("efficientnet_b0", output_dim=8).eval()
        fresh.load_state_dict(backbone.state_dict())
        assert torch.equal(fresh(images).feature, expected)


def test_compile_is_bit_identical_with_aot_eager():
    torch.manual_seed(0)
    backbone = TimmBackbone("vit_tiny_patch16_224", img_size=32, depth=1, output_dim=8).eval()
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = backbone(images, stage="test")
        backbone.compile(backend="aot_eager", fullgraph=True)
        compiled = backbone(images, stage="test")
    assert torch.equal(compiled.feature, expected.feature)
    assert set(compiled.activations) == set(expected.activations)
    for name, activation in expected.activations.items():
        assert torch.equal(compiled.activations[name], activation), name


def test_an_untraceable_model_says_so_and_still_runs_timms_forward(monkeypatch):
    from clarena.backbones import _timm_graph

    def refuse(self, root, concrete_args=None):
        raise RuntimeError("symbolically traced variables cannot be used as inputs to control flow")

    monkeypatch.setattr(_timm_graph._Tracer, "trace", refuse)
    torch.manual_seed(0)
    backbone = TimmBackbone("resnet10t").eval()
    assert backbone.trace_error is not None
    assert "cannot be used as inputs to control flow" in backbone.trace_error
    modules = [p for p, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    assert backbone.weighted_layer_names == [p.replace(".", "/") for p in modules]
    notes = backbone.layer_graph_notes()
    assert set(notes) == set(backbone.weighted_layer_names)
    assert all("torch.fx could not trace the model" in note for note in notes.values())
    assert all(backbone.input_layer_names(n) == () for n in backbone.weighted_layer_names)
    reference = timm.create_model("resnet10t", num_classes=0).eval()
    reference.load_state_dict(backbone.state_dict())
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone(images).feature, reference(images))
