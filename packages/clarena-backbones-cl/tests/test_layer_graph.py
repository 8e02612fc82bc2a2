"""Layer-graph queries: who reads each layer's units, which layers sum into the feature.

The reference is found by autograd, not from ``input_layer_names``: every weighted layer's output
is detached (no path runs through a weighted layer) and a zero perturbation is added to every
layer's gated units; layer ``M`` reads layer ``l`` exactly when ``M``'s input has a gradient with
respect to ``l``'s perturbation.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from clarena.cl import CLMLP, CLBackbone, CLResNet, CLResNet18
from clarena.cl.layer_graph import feature_layer_names, output_layer_names


def probed(backbone_cls: type[CLBackbone], input: Tensor, **kwargs):
    """``(readers, feature layers)`` of a ``backbone_cls`` found by perturbing its units."""

    class Probe(backbone_cls):  # type: ignore[valid-type, misc]
        def layer_forward(self, layer_name: str, layer: nn.Module, input: Tensor) -> Tensor:
            self.probe_inputs[layer_name] = input
            return layer(input).detach()

        def unit_gate(self, layer_name: str, hidden: Tensor) -> Tensor:
            delta = torch.zeros_like(hidden, requires_grad=True)
            self.probe_deltas[layer_name] = delta
            return hidden + delta

    torch.manual_seed(0)
    backbone = Probe(**kwargs)
    backbone.eval()
    backbone.probe_inputs, backbone.probe_deltas = {}, {}
    backbone.setup_task_id(1)
    feature, _ = backbone(input, "train")
    names = backbone.weighted_layer_names
    deltas = [backbone.probe_deltas[name] for name in names]

    def reached_from(tensor: Tensor) -> set[str]:
        if not tensor.requires_grad:
            return set()
        weights = torch.randn_like(tensor)
        grads = torch.autograd.grad(
            (tensor * weights).sum(), deltas, allow_unused=True, retain_graph=True
        )
        return {n for n, g in zip(names, grads, strict=True) if g is not None and g.abs().sum() > 0}

    reads = {name: reached_from(backbone.probe_inputs[name]) for name in names}
    readers = {name: tuple(reader for reader in names if name in reads[reader]) for name in names}
    return backbone, readers, reached_from(feature)


CASES = [
    (CLMLP, torch.randn(32, 5), {"input_dim": 5, "hidden_dims": [6, 7], "output_dim": 8}),
    (CLResNet, torch.randn(2, 3, 16, 16), {"depth": 18, "small_input": True}),
    (CLResNet, torch.randn(2, 3, 16, 16), {"depth": 50, "small_input": True, "output_dim": 2048}),
    (CLResNet, torch.randn(2, 3, 16, 16), {"depth": 50, "small_input": True, "output_dim": 10}),
]


@pytest.mark.parametrize(("backbone_cls", "input", "kwargs"), CASES)
def test_readers_and_feature_layers_match_the_autograd_reference(backbone_cls, input, kwargs):
    backbone, readers, feature = probed(backbone_cls, input, **kwargs)
    for name in backbone.weighted_layer_names:
        assert backbone.output_layer_names(name) == readers[name], name
        assert output_layer_names(backbone, name) == readers[name], name
    assert set(backbone.feature_layer_names()) == feature
    assert len(backbone.feature_layer_names()) == len(feature)


def test_mlp_readers_by_hand():
    mlp = CLMLP(input_dim=5, hidden_dims=[6, 7], output_dim=3)
    assert [mlp.output_layer_names(n) for n in ("fc/0", "fc/1", "fc/2")] == [
        ("fc/1",),
        ("fc/2",),
        (),
    ]
    assert mlp.feature_layer_names() == ("fc/2",)


def test_resnet18_block_with_downsample_by_hand():
    resnet = CLResNet18(small_input=True)
    # layer2/0 has a downsample; layer2/1 has an identity shortcut, so layer2/0's outputs reach
    # layer3/0's convolutions too.
    assert resnet.output_layer_names("layer2/0/conv1") == ("layer2/0/conv2",)
    block_out = ("layer2/1/conv1", "layer3/0/conv1", "layer3/0/downsample/0")
    assert resnet.output_layer_names("layer2/0/conv2") == block_out
    assert resnet.output_layer_names("layer2/0/downsample/0") == block_out
    assert resnet.output_layer_names("layer2/1/conv2") == (
        "layer3/0/conv1",
        "layer3/0/downsample/0",
    )
    assert resnet.feature_layer_names() == (
        "layer4/1/conv2",
        "layer4/0/conv2",
        "layer4/0/downsample/0",
    )
    assert CLResNet18(small_input=True, output_dim=10).feature_layer_names() == ("proj",)
    assert CLResNet18(small_input=True, output_dim=10).output_layer_names("layer4/1/conv2") == (
        "proj",
    )


def test_unknown_layer_and_unknown_family_are_refused():
    mlp = CLMLP(input_dim=5, hidden_dims=[6], output_dim=3)
    with pytest.raises(KeyError, match="no weighted layer 'fc/9'"):
        mlp.output_layer_names("fc/9")

    class Custom(CLBackbone):
        def _features(self, input):
            return input, {}

    with pytest.raises(TypeError, match="override feature_layer_names"):
        feature_layer_names(Custom(output_dim=3))
