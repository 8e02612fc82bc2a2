"""FG-AdaHAT's plain-torch importance measures against references written from the annex formulas.

References use explicit loops over units (MLP) or einsum (ResNet block), with the readers of each
layer listed by hand, on fixed weights, gradients and activations.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.hat import (
    ATTRIBUTION_IMPORTANCE_TYPES,
    IMPORTANCE_TYPES,
    PLAIN_IMPORTANCE_TYPES,
    HATMaskMLP,
    HATMaskResNet18,
    step_importance,
)

S_MAX = 400.0


def trained_step(backbone, x, num_classes=3):
    """One train forward and backward on task 1; returns ``(activations, head)``."""
    torch.manual_seed(1)
    backbone.setup_task_id(1)
    head = nn.Linear(backbone.output_dim, num_classes)
    feature, _, activations = backbone(x, "train", s_max=S_MAX, batch_idx=1, num_batches=1)
    loss = nn.functional.cross_entropy(head(feature), torch.arange(x.shape[0]) % num_classes)
    loss.backward()
    return activations, head


def reference(kind, weights, readers, activation):
    """Importance ``kind`` of one layer from its weight, its readers' weights and activation.

    ``weights``: ``(W, G)`` of the layer; ``readers``: list of ``(W_M, G_M)``; explicit loops.
    """
    w, g = weights
    units = w.shape[0]

    def win(p, use_grad):
        t = g if use_grad else w
        return torch.stack([t[i].abs().pow(p).sum() for i in range(units)])

    def wout(p, use_grad):
        out = torch.zeros(units, dtype=torch.float64)
        for w_m, g_m in readers:
            t = g_m if use_grad else w_m
            for i in range(units):
                out[i] += t[:, i].abs().pow(p).sum().double()
        return out.float()

    a = torch.stack([activation[:, i].abs().mean() for i in range(units)])
    table = {
        "input_weight_abs_sum": lambda: win(1, False),
        "output_weight_abs_sum": lambda: wout(1, False),
        "input_weight_gradient_abs_sum": lambda: win(1, True),
        "output_weight_gradient_abs_sum": lambda: wout(1, True),
        "activation_abs": lambda: a,
        "input_weight_abs_sum_x_activation_abs": lambda: win(1, False) * a,
        "output_weight_abs_sum_x_activation_abs": lambda: wout(1, False) * a,
        "input_weight_gradient_square_sum": lambda: win(2, True),
        "output_weight_gradient_square_sum": lambda: wout(2, True),
        "input_weight_gradient_square_sum_x_activation_abs": lambda: win(2, True) * a,
        "output_weight_gradient_square_sum_x_activation_abs": lambda: wout(2, True) * a,
        "cbp_adaptation": lambda: 1 / win(1, False),
        "cbp_adaptive_contribution": lambda: wout(1, False) * a / win(1, False),
    }
    return table[kind]()


def pair(module):
    return module.weight.detach().clone(), module.weight.grad.clone()


def test_the_23_types_are_split_into_plain_and_attribution():
    assert len(IMPORTANCE_TYPES) == 23
    assert len(PLAIN_IMPORTANCE_TYPES) == 13
    assert set(PLAIN_IMPORTANCE_TYPES).isdisjoint(ATTRIBUTION_IMPORTANCE_TYPES)


@pytest.mark.parametrize("kind", PLAIN_IMPORTANCE_TYPES)
def test_two_layer_mlp(kind):
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=4, hidden_dims=[5], output_dim=6)
    activations, head = trained_step(mlp, torch.randn(7, 4))
    result = step_importance(mlp, kind, activations, head.weight)
    fc0, fc1 = mlp.fc
    expected = {
        "fc/0": reference(kind, pair(fc0), [pair(fc1)], activations["fc/0"]),
        "fc/1": reference(kind, pair(fc1), [pair(head)], activations["fc/1"]),
    }
    assert set(result) == {"fc/0", "fc/1"}
    for name, value in expected.items():
        assert result[name].shape == value.shape
        torch.testing.assert_close(result[name], value, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def resnet_step():
    torch.manual_seed(0)
    resnet = HATMaskResNet18(small_input=True, batch_normalization="shared")
    activations, head = trained_step(resnet, torch.randn(2, 3, 16, 16))
    return resnet, activations, head


def conv_reference(kind, resnet, head, activations, name, reader_names, with_head=False):
    """einsum version of the annex formulas for a convolution ``name``."""
    w = resnet.get_layer_by_name(name).weight
    readers = [resnet.get_layer_by_name(r).weight for r in reader_names]
    if with_head:
        readers.append(head.weight)

    def side(t, p, inward):
        return torch.einsum("ijkl->i", t.abs() ** p) if inward else None

    def out_side(p, grad):
        total = 0
        for r in readers:
            t = (r.grad if grad else r.detach()).abs() ** p
            total = total + (
                torch.einsum("mikl->i", t) if t.ndim == 4 else torch.einsum("mi->i", t)
            )
        return total

    w_in = side(w.detach(), 1, True)
    g_in = {p: side(w.grad, p, True) for p in (1, 2)}
    a = torch.einsum("bihw->i", activations[name].detach().abs()) / (
        activations[name].shape[0] * activations[name].shape[2] * activations[name].shape[3]
    )
    return {
        "input_weight_abs_sum": lambda: w_in,
        "output_weight_abs_sum": lambda: out_side(1, False),
        "input_weight_gradient_abs_sum": lambda: g_in[1],
        "output_weight_gradient_abs_sum": lambda: out_side(1, True),
        "activation_abs": lambda: a,
        "input_weight_abs_sum_x_activation_abs": lambda: w_in * a,
        "output_weight_abs_sum_x_activation_abs": lambda: out_side(1, False) * a,
        "input_weight_gradient_square_sum": lambda: g_in[2],
        "output_weight_gradient_square_sum": lambda: out_side(2, True),
        "input_weight_gradient_square_sum_x_activation_abs": lambda: g_in[2] * a,
        "output_weight_gradient_square_sum_x_activation_abs": lambda: out_side(2, True) * a,
        "cbp_adaptation": lambda: 1 / w_in,
        "cbp_adaptive_contribution": lambda: out_side(1, False) * a / w_in,
    }[kind]()


# layer2/0 has a downsample shortcut; layer2/1's identity shortcut carries layer2/0's outputs on
# to layer3/0. layer4/0/conv2 is summed into the feature, so the head reads it too.
BLOCK_READERS = {
    "layer2/0/conv1": (("layer2/0/conv2",), False),
    "layer2/0/conv2": (("layer2/1/conv1", "layer3/0/conv1", "layer3/0/downsample/0"), False),
    "layer2/0/downsample/0": (
        ("layer2/1/conv1", "layer3/0/conv1", "layer3/0/downsample/0"),
        False,
    ),
    "layer4/0/conv2": (("layer4/1/conv1",), True),
    "layer4/1/conv2": ((), True),
}


@pytest.mark.parametrize("kind", PLAIN_IMPORTANCE_TYPES)
def test_resnet_block_with_downsample(kind, resnet_step):
    resnet, activations, head = resnet_step
    result = step_importance(resnet, kind, activations, head.weight)
    assert set(result) == set(resnet.weighted_layer_names)
    for name, (readers, with_head) in BLOCK_READERS.items():
        expected = conv_reference(kind, resnet, head, activations, name, readers, with_head)
        torch.testing.assert_close(result[name], expected, rtol=1e-5, atol=1e-8)


def test_cbp_types_stay_finite_for_a_unit_without_input_weight():
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=4, hidden_dims=[5], output_dim=6)
    with torch.no_grad():
        mlp.fc[0].weight[2] = 0
    activations, head = trained_step(mlp, torch.randn(7, 4))
    for kind in ("cbp_adaptation", "cbp_adaptive_contribution"):
        value = step_importance(mlp, kind, activations, head.weight)["fc/0"]
        assert torch.isfinite(value).all()
        if kind == "cbp_adaptation":
            assert value[2] == torch.finfo(value.dtype).max


def test_missing_inputs_and_attribution_types_are_refused():
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=4, hidden_dims=[5], output_dim=6)
    activations, head = trained_step(mlp, torch.randn(7, 4))
    with pytest.raises(ValueError, match="needs head_weight"):
        step_importance(mlp, "output_weight_abs_sum", activations)
    with pytest.raises(ValueError, match="needs the activations"):
        step_importance(mlp, "activation_abs")
    with pytest.raises(ValueError, match="attributes with captum"):
        step_importance(mlp, "deeplift_abs", activations, head.weight)
    with pytest.raises(ValueError, match="unknown importance_type 'nope'"):
        step_importance(mlp, "nope")
    mlp.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="no gradient"):
        step_importance(mlp, "input_weight_gradient_abs_sum")
