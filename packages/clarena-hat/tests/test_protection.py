"""HAT, AdaHAT and FG-AdaHAT protection in update space (SPEC §9) under any optimiser."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from clarena.cl import HeadsTIL, UpdateSpaceProtection
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    adahat_condition_gradients,
    adahat_update_factors,
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    layer_sparsity,
    protection_factors,
    sparsity_regularization,
    update_parameters,
)

S_MAX = 400.0

OPTIMIZERS = {
    "sgd-momentum-decay": functools.partial(
        torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4
    ),
    "adam": functools.partial(torch.optim.Adam, lr=0.01),
    "adamw-decay": functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.05),
}


def _data(task_id, shape, num_batches=3, batch_size=8):
    generator = torch.Generator().manual_seed(1000 + task_id)
    teacher = torch.randn(int(torch.tensor(shape).prod()), generator=generator)
    batches = []
    for _ in range(num_batches):
        x = torch.randn(batch_size, *shape, generator=generator)
        batches.append((x, (x.flatten(1) @ teacher > 0).long()))
    return batches


def train_task(backbone, heads, task_id, make_optimizer, mode, shape, check=True, num_batches=3):
    """One task of HAT's recipe; ``mode``: ``'update'`` (the step protected) or ``'gradient'``
    (``check=False``: without the optimiser check, to show what it prevents)."""
    backbone.setup_task_id(task_id)
    heads.setup_task_id(task_id, num_classes=2)
    backbone.train()
    hat = hat_of(backbone)
    optimizer = make_optimizer([*backbone.parameters(), *heads.heads[str(task_id)].parameters()])
    if check:
        hat.check_optimizer(optimizer, update_space=mode == "update")
    factors = hat.protection_factors() if mode == "update" else {}
    protection = UpdateSpaceProtection(factors) if factors else None
    batches = _data(task_id, shape, num_batches, batch_size=8 if num_batches == 3 else 4)
    for index, (x, y) in enumerate(batches, start=1):
        s = annealed_scale(S_MAX, index, len(batches))
        optimizer.zero_grad()
        feature, mask, _ = backbone(x, "train", scale=s)
        loss = nn.functional.cross_entropy(heads(feature, task_id), y)
        loss = loss + 0.75 * sparsity_regularization(mask, hat.cumulative_mask())
        loss.backward()
        condition_gradients(backbone)
        compensate_embedding_gradients(backbone, s, S_MAX)
        if protection is not None:
            protection.before_step()
        optimizer.step()
        if protection is not None:
            protection.after_step()
        clamp_task_embedding(backbone)
    hat.end_task(task_id)


def run_three_tasks(make_backbone, shape, make_optimizer, mode, check=True, num_batches=3):
    torch.manual_seed(0)
    backbone = make_backbone()
    heads = HeadsTIL(backbone.output_dim)
    probe = torch.randn(5, *shape, generator=torch.Generator().manual_seed(7))

    def test_outputs():
        backbone.eval()
        with torch.no_grad():
            feature, _, _ = backbone(probe, "test", test_task_id=1)
            return feature.clone(), heads(feature, 1).clone()

    train_task(backbone, heads, 1, make_optimizer, mode, shape, check, num_batches)
    after_first = test_outputs()
    shared = backbone.get_layer_by_name(backbone.weighted_layer_names[1]).weight
    shared_after_first = shared.detach().clone()
    for task_id in (2, 3):
        train_task(backbone, heads, task_id, make_optimizer, mode, shape, check, num_batches)
    return after_first, test_outputs(), not torch.equal(shared, shared_after_first)


def make_mlp():
    return HATMaskMLP(64, [32, 32], 16, batch_normalization="independent")


def make_resnet():
    return HATMaskResNet18(input_channels=3, output_dim=8, small_input=True)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_task_one_stays_bit_exact_in_update_space_under_any_optimiser(optimizer):
    (feature, logits), (feature_after, logits_after), moved = run_three_tasks(
        make_mlp, (1, 8, 8), optimizer, "update"
    )
    assert moved  # later tasks really trained the shared layers
    assert torch.equal(feature_after, feature)
    assert torch.equal(logits_after, logits)


def test_task_one_stays_bit_exact_on_a_resnet_under_adamw_with_weight_decay():
    (feature, _), (feature_after, _), moved = run_three_tasks(
        make_resnet, (3, 8, 8), OPTIMIZERS["adamw-decay"], "update", num_batches=2
    )
    assert moved
    assert torch.equal(feature_after, feature)


@pytest.mark.parametrize("name", ["sgd-momentum-decay", "adamw-decay"])
def test_weight_decay_in_gradient_space_forgets_which_is_why_it_is_refused(name):
    # Gradient conditioning zeroes the gradient, but decay moves the weights anyway.
    make = OPTIMIZERS[name]
    with pytest.raises(ValueError, match=r"weight_decay=.*protect in update space"):
        hat_of(make_mlp()).check_optimizer(make([nn.Parameter(torch.zeros(1))]))
    (feature, _), (feature_after, _), _ = run_three_tasks(
        make_mlp, (1, 8, 8), make, "gradient", check=False
    )
    assert not torch.equal(feature_after, feature)


def test_protection_factors_are_the_gradient_conditioning_factors():
    backbone = _resnet_with_task_one_stored()
    for parameter in backbone.parameters():
        parameter.grad = torch.ones_like(parameter)
    condition_gradients(backbone)
    factors = protection_factors(backbone)
    assert factors  # task 1 is stored
    for parameter in backbone.parameters():
        factor = factors.get(parameter)
        expected = torch.ones_like(parameter) if factor is None else factor.expand_as(parameter)
        assert torch.equal(parameter.grad, expected)
    # Other tasks' batch norms are covered (factor 0) once task 2 has its own.
    hat = hat_of(backbone)
    first_norm = hat.task_norms[0].norms["1"].weight
    assert torch.equal(factors[first_norm], torch.zeros(()))


def _resnet_with_task_one_stored():
    """A HATMaskResNet18 training task 2, task 1's mask (of its N(0, 1) embedding) stored."""
    torch.manual_seed(0)
    backbone = make_resnet()
    backbone.setup_task_id(1)
    hat_of(backbone).end_task(1)
    backbone.setup_task_id(2)
    return backbone


def _stored_mlp():
    """A float64 HATMaskMLP with task 1 stored: the first unit of each layer used, the second
    free; task 2 set up."""
    backbone = HATMaskMLP(2, [2], 2, batch_normalization=None).double()
    backbone.setup_task_id(1)
    hat = hat_of(backbone)
    with torch.no_grad():
        for embedding in hat.task_embedding.values():
            embedding.copy_(torch.tensor([1.0, -1.0]))
    hat.store_mask(1)
    backbone.setup_task_id(2)
    with torch.no_grad():
        for index, parameter in enumerate(backbone.parameters()):
            values = torch.arange(parameter.numel(), dtype=torch.float64) + index
            parameter.copy_((values.remainder(5) - 2).reshape(parameter.shape) / 4)
    return backbone


def test_adahat_under_sgd_update_space_equals_gradient_scaling_exactly():
    # alpha / (epsilon + R) = 1 and one stored task: the factors are 1 and 1/2; dyadic
    # gradients, lr and momentum: every value is exact, so both modes agree bit for bit.
    sparsity = {"fc/0": 0.0, "fc/1": 0.0}

    def run(update_space):
        backbone = _stored_mlp()
        parameters = list(backbone.parameters())
        optimizer = torch.optim.SGD(parameters, lr=0.5, momentum=0.5)
        protection = UpdateSpaceProtection.per_step(update_parameters(backbone))
        for step in range(4):
            for index, parameter in enumerate(parameters):
                grad = (torch.arange(parameter.numel(), dtype=torch.float64) + index + step) % 3
                parameter.grad = (grad - 1).reshape(parameter.shape) / 2
            if update_space:
                protection.before_step()
                optimizer.step()
                protection.after_step(
                    adahat_update_factors(backbone, sparsity, alpha=0.5, epsilon=0.5)
                )
            else:
                adahat_condition_gradients(backbone, sparsity, alpha=0.5, epsilon=0.5)
                optimizer.step()
        return [p.detach().clone() for p in parameters]

    factors = adahat_update_factors(_stored_mlp(), sparsity, alpha=0.5, epsilon=0.5)
    assert {float(v) for f in factors for v in f.flatten()} == {0.5, 1.0}
    for updated, scaled in zip(run(True), run(False), strict=True):
        assert torch.equal(updated, scaled)


def test_adahat_under_adam_moves_protected_entries_by_the_factor_times_adams_step():
    # Adam's first step with beta1 = 1/2, beta2 = 3/4 and eps 0 is exactly lr * sign(g): a
    # gradient factor cancels, an update factor scales it.
    sparsity = {"fc/0": 0.0, "fc/1": 0.0}
    backbone = _stored_mlp()
    parameters = update_parameters(backbone)
    start = [p.detach().clone() for p in parameters]
    factors = adahat_update_factors(backbone, sparsity, alpha=0.5, epsilon=0.5)

    def first_step(update_space):
        with torch.no_grad():
            for parameter, value in zip(parameters, start, strict=True):
                parameter.copy_(value)
        optimizer = torch.optim.Adam(parameters, lr=0.25, betas=(0.5, 0.75), eps=0.0)
        for parameter in parameters:
            parameter.grad = torch.full_like(parameter, -0.5)
        protection = UpdateSpaceProtection.per_step(parameters)
        if update_space:
            protection.before_step()
            optimizer.step()
            protection.after_step(factors)
        else:
            adahat_condition_gradients(backbone, sparsity, alpha=0.5, epsilon=0.5)
            optimizer.step()
        return [p.detach() - s for p, s in zip(parameters, start, strict=True)]

    for moved, factor in zip(first_step(update_space=True), factors, strict=True):
        assert torch.equal(moved, (0.25 * factor).expand_as(moved))
    for moved in first_step(update_space=False):
        assert torch.equal(moved, torch.full_like(moved, 0.25))  # the factor cancelled


def test_adahat_update_factors_are_the_gradient_factors():
    backbone = _resnet_with_task_one_stored()
    hat = hat_of(backbone)
    x = torch.randn(2, 3, 8, 8)
    _, mask, _ = backbone(x, "train", scale=2.0)
    with torch.no_grad():
        sparsity = layer_sparsity(mask, hat.cumulative_mask())
    parameters = update_parameters(backbone)
    for parameter in parameters:
        parameter.grad = torch.ones_like(parameter)
    adahat_condition_gradients(backbone, sparsity, alpha=0.1, aggregation="mean")
    factors = adahat_update_factors(backbone, sparsity, alpha=0.1, aggregation="mean")
    assert len(factors) == len(parameters)
    for parameter, factor in zip(parameters, factors, strict=True):
        if factor.ndim == 0:  # another task's batch norm: frozen in update space
            assert float(factor) == 0.0
            continue
        assert torch.equal(parameter.grad, factor.expand_as(parameter))
