"""HAT and WSN on timm models of five kinds: three tasks, and task 1's test outputs bit-identical.

Each architecture is built with ``pretrained=False`` at a small size, trained for a few steps per
task on random data, and task 1's test-stage outputs (backbone feature and its TIL head's
logits, eval mode) are compared with ``torch.equal`` after tasks 2 and 3. The optimiser is an
argument (``OPTIMIZERS``): momentum-free SGD protected in gradient space (the papers' algorithm),
and SGD with momentum and weight decay, Adam, and AdamW with weight decay protected in update space
(:class:`clarena.cl.UpdateSpaceProtection` over the method's ``protection_factors()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from clarena.cl import CLBackbone, HeadsTIL, UpdateSpaceProtection
from clarena.cl.timm_backbone import CLTimmBackbone
from clarena.hat import (
    HAT,
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    sparsity_regularization,
)
from clarena.wsn import WSN, wsn_of

#: (timm name, timm arguments, image side): a ViT, a ConvNeXt, a MobileNet, a ResNet variant and
#: a GhostNet (depthwise "cheap" convolutions, squeeze-excitation with a hard sigmoid, channel
#: concatenation), each kept small.
ARCHITECTURES: dict[str, tuple[dict[str, Any], int]] = {
    "vit_tiny_patch16_224": ({"img_size": 32, "depth": 2}, 32),
    "convnext_atto": ({"depths": (1, 1, 1, 1)}, 32),
    "mobilenetv3_small_050": ({}, 32),
    "resnet10t": ({}, 32),
    "ghostnet_050": ({}, 32),
}

#: The optimiser of each task, by name; momentum-free SGD is protected in gradient space, the
#: others in update space (their momentum, moments and weight decay would move protected entries
#: whose gradient is zero).
OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda parameters: torch.optim.SGD(parameters, lr=0.05, momentum=0.0),
    "sgd_momentum_wd": lambda parameters: torch.optim.SGD(
        parameters, lr=0.05, momentum=0.9, weight_decay=5e-4
    ),
    "adam": lambda parameters: torch.optim.Adam(parameters, lr=1e-3),
    "adamw_wd": lambda parameters: torch.optim.AdamW(parameters, lr=1e-3, weight_decay=0.05),
}
UPDATE_SPACE = ("sgd_momentum_wd", "adam", "adamw_wd")

TASKS = 3
STEPS = 2
CLASSES = 3
S_MAX = 400.0


def build(name: str, method: str) -> CLBackbone:
    arguments, _ = ARCHITECTURES[name]
    backbone = CLTimmBackbone(name, output_dim=16, **arguments)
    if method == "hat":
        return backbone.attach(HAT(uncovered_parameters="first_task"))
    return backbone.attach(WSN(uncovered_parameters="first_task"))


def data(name: str, task_id: int) -> tuple[Tensor, Tensor]:
    _, side = ARCHITECTURES[name]
    generator = torch.Generator().manual_seed(100 + task_id)
    images = torch.randn(4, 3, side, side, generator=generator)
    return images, torch.randint(0, CLASSES, (4,), generator=generator)


def train_task(
    backbone: CLBackbone, heads: HeadsTIL, method: str, task_id: int, optimizer_name: str
) -> None:
    """A few steps of one task, with the method's per-step calls."""
    backbone.setup_task_id(task_id)
    heads.setup_task_id(task_id, num_classes=CLASSES)
    optimizer = OPTIMIZERS[optimizer_name]([*backbone.parameters(), *heads.parameters()])
    method_object = backbone.mask_method
    assert method_object is not None
    update_space = optimizer_name in UPDATE_SPACE
    method_object.check_optimizer(optimizer, update_space=update_space)
    # The factors are constant within a task: built once, after the task is set up.
    protection = UpdateSpaceProtection(method_object.protection_factors()) if update_space else None

    def optimizer_step() -> None:
        if protection is not None:
            protection.before_step()
        optimizer.step()
        if protection is not None:
            protection.after_step()

    images, labels = data(backbone.model_name, task_id)
    backbone.train()
    for step in range(1, STEPS + 1):
        optimizer.zero_grad()
        if method == "hat":
            scale = annealed_scale(S_MAX, step, STEPS)
            feature, mask, _ = backbone(images, "train", scale=scale)
            regularizer = sparsity_regularization(mask, hat_of(backbone).cumulative_mask())
            loss = nn.functional.cross_entropy(heads(feature, task_id), labels) + regularizer
            loss.backward()
            condition_gradients(backbone)
            compensate_embedding_gradients(backbone, scale, S_MAX)
            optimizer_step()
            clamp_task_embedding(backbone)
        else:
            feature, *_ = backbone(images, "train", mask_percentage=0.5)
            nn.functional.cross_entropy(heads(feature, task_id), labels).backward()
            wsn_of(backbone).condition_gradients()
            optimizer_step()
    backbone.mask_method.end_task(task_id)


def task_one_outputs(backbone: CLBackbone, heads: HeadsTIL) -> tuple[Tensor, Tensor]:
    backbone.eval()
    images, _ = data(backbone.model_name, 1)
    with torch.no_grad():
        feature = backbone(images, "test", test_task_id=1).feature
        return feature, heads(feature, 1)


def mask_bytes_per_task(backbone: CLBackbone, task_id: int) -> int:
    """Bytes of task ``task_id``'s stored mask (HAT: one bit per unit; WSN: one per weight)."""
    method = backbone.mask_method
    store = hat_of(backbone).mask_store if isinstance(method, HAT) else wsn_of(backbone).task_masks
    return store.nbytes(task_id)


def expected_mask_bytes(backbone: CLBackbone, method: str) -> int:
    """The packed size computed from the architecture: units (HAT) or weights and biases of
    the weighted layers (WSN), one bit each, rounded up to bytes per packed tensor."""
    layers = [backbone.get_layer_by_name(n) for n in backbone.weighted_layer_names]
    if method == "hat":
        units = sum(getattr(m, "out_features", None) or m.out_channels for m in layers)
        return math.ceil(units / 8)
    tensors = [p for m in layers for p in (m.weight, m.bias) if p is not None]
    return sum(math.ceil(p.numel() / 8) for p in tensors)


#: The two architectures of many small convolutions cost ~10 s per run on a loaded 2-core CPU.
HEAVY = ("mobilenetv3_small_050", "ghostnet_050")


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("method", ["hat", "wsn"])
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ARCHITECTURES],
)
def test_three_tasks_keep_task_one_bit_identical(name: str, method: str, optimizer: str) -> None:
    torch.manual_seed(0)
    backbone = build(name, method)
    heads = HeadsTIL(16)
    train_task(backbone, heads, method, 1, optimizer)
    expected = task_one_outputs(backbone, heads)
    for task_id in range(2, TASKS + 1):
        train_task(backbone, heads, method, task_id, optimizer)
        feature, logits = task_one_outputs(backbone, heads)
        assert torch.equal(feature, expected[0]), f"{name}/{method}: task 1 moved after {task_id}"
        assert torch.equal(logits, expected[1])
    # The later tasks did learn: their subnetworks differ from task 1's.
    images, _ = data(name, 1)
    with torch.no_grad():
        other = backbone(images, "test", test_task_id=TASKS).feature
    assert not torch.equal(other, expected[0])
    assert mask_bytes_per_task(backbone, 1) == expected_mask_bytes(backbone, method)
    # A checkpoint restores it: a fresh backbone loading the state dict (timm's parameter names
    # plus the method's state) gives task 1's outputs bit for bit.
    restored = build(name, method)
    restored.load_state_dict(backbone.state_dict())
    assert torch.equal(task_one_outputs(restored, heads)[0], expected[0])


def test_grouped_convolution_weight_measure_reads_each_output_units_group():
    """RegNet's grouped 3x3 convolution: HAT's min(a_i, a_j) against an explicit loop over the
    weight's entries, input unit j of entry (i, j) being in output unit i's group."""
    from clarena.hat import weight_measure

    backbone = CLTimmBackbone("regnetx_002")
    name = "s2/b1/conv2/conv"
    layer = backbone.get_layer_by_name(name)
    assert layer.groups == 7
    (source,) = backbone.input_layer_names(name)
    generator = torch.Generator().manual_seed(0)
    units = {
        n: torch.rand(backbone.get_layer_by_name(n).out_channels, generator=generator)
        for n in backbone.weighted_layer_names
    }
    measure = weight_measure(backbone, units, name, "min").expand_as(layer.weight)
    out_per_group = layer.out_channels // layer.groups
    in_per_group = layer.weight.shape[1]
    for i in range(layer.out_channels):
        for j in range(in_per_group):
            channel = (i // out_per_group) * in_per_group + j
            expected = min(units[name][i], units[source][channel])
            assert torch.all(measure[i, j] == expected)


def test_parameters_outside_layers_are_refused_by_name_unless_the_user_chooses():
    for method in (HAT, WSN):
        with pytest.raises(TypeError, match=r"cannot protect cls_token, pos_embed of CLTimm"):
            CLTimmBackbone("vit_tiny_patch16_224", img_size=32, depth=1).attach(method())
        frozen = CLTimmBackbone("vit_tiny_patch16_224", img_size=32, depth=1)
        frozen.attach(method(uncovered_parameters="freeze"))
        assert not frozen.cls_token.requires_grad
        assert not frozen.pos_embed.requires_grad
        assert frozen.mask_method is not None
        shared = frozen.mask_method.shared_parameters()
        assert "norm.weight" in shared
        assert "blocks.0.norm1.bias" in shared
        assert "cls_token" not in shared


class WithTemperature(nn.Module):
    """A custom module holding a parameter outside any weighted layer."""

    def __init__(self) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.temperature


def test_a_custom_module_with_a_parameter_outside_any_layer_is_refused_by_name():
    for method in (HAT, WSN):
        backbone = CLTimmBackbone("resnet10t")
        backbone.layer1[0].add_module("scale", WithTemperature())
        with pytest.raises(TypeError) as error:
            backbone.attach(method())
        assert str(error.value).startswith(
            f"{method.__name__} cannot protect layer1.0.scale.temperature of CLTimmBackbone"
        )
        assert "\n" not in str(error.value)
        # Refused before anything changed: no per-task batch norm, no method state.
        assert backbone.mask_method is None
        assert not hasattr(backbone, "task_embedding")
        assert type(backbone.bn1).__name__.startswith("Gated")


def test_layer_norms_are_frozen_after_the_first_task_and_train_in_it():
    backbone = build("convnext_atto", "hat")
    heads = HeadsTIL(16)
    norm = backbone.get_parameter("stem.1.weight")
    before = norm.detach().clone()
    train_task(backbone, heads, "hat", 1, "sgd")
    after_first = norm.detach().clone()
    assert not torch.equal(after_first, before)
    train_task(backbone, heads, "hat", 2, "sgd")
    assert torch.equal(norm, after_first)


@pytest.mark.parametrize("name", ["convnext_atto", "mobilenetv3_small_050"])
def test_adahat_factors_on_depthwise_convolutions_are_the_per_weight_formula(name: str) -> None:
    """AdaHAT's factor ``r / (m + r)``, ``m`` HAT's per-weight summative measure (input unit of a
    depthwise weight from its output unit's group), in both spaces: the update-space factors and
    the gradient-space multiply of an all-ones gradient."""
    from clarena.hat import adahat_condition_gradients, weight_measure
    from clarena.hat.protection import adahat_update_factors, update_parameters

    torch.manual_seed(0)
    backbone = build(name, "hat")
    heads = HeadsTIL(16)
    train_task(backbone, heads, "hat", 1, "sgd")
    backbone.setup_task_id(2)
    hat = hat_of(backbone)
    names = backbone.weighted_layer_names
    alpha, epsilon, sparsity = 1e-2, 0.1, 0.25
    rate = alpha / (epsilon + sparsity)
    factors = adahat_update_factors(backbone, {n: sparsity for n in names}, alpha, epsilon)
    parameters = update_parameters(backbone)
    for parameter in backbone.parameters():
        parameter.grad = torch.ones_like(parameter)
    adahat_condition_gradients(backbone, {n: sparsity for n in names}, alpha, epsilon)
    summative = hat.summative_mask()
    depthwise = 0
    for layer_name in names:
        layer = backbone.get_layer_by_name(layer_name)
        depthwise += int(getattr(layer, "groups", 1) > 1)
        measure = weight_measure(backbone, summative, layer_name, "min", 1.0)
        expected = (rate / (measure + rate)).expand_as(layer.weight)
        index = next(i for i, p in enumerate(parameters) if p is layer.weight)
        torch.testing.assert_close(
            factors[index].expand_as(layer.weight), expected, rtol=1e-6, atol=0
        )
        assert layer.weight.grad is not None
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-6, atol=0)
    assert depthwise > 0
