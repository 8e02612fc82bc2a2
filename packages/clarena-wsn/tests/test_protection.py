"""WSN protection in update space (SPEC §9): frozen weights stay bit-identical under any optimiser."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clarena.cl import HeadsTIL, UpdateSpaceProtection
from clarena.wsn import WSNMaskMLP, WSNMaskResNet18, wsn_of

MASK_PERCENTAGE = 0.5

OPTIMIZERS = {
    "sgd-momentum-decay": functools.partial(
        torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4
    ),
    "adam": functools.partial(torch.optim.Adam, lr=0.01),
    "adamw-decay": functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.05),
}


def train_task(backbone, heads, task_id, make_optimizer, mode, shape, check=True):
    """One task; ``mode``: ``'update'`` (the step protected) or ``'gradient'`` (only the
    gradient frozen; ``check=False`` skips the optimiser check, to show what it prevents)."""
    backbone.setup_task_id(task_id)
    heads.setup_task_id(task_id, 3)
    wsn = wsn_of(backbone)
    optimizer = make_optimizer([*backbone.parameters(), *heads.heads[str(task_id)].parameters()])
    if check:
        wsn.check_optimizer(optimizer, update_space=mode == "update")
    factors = wsn.protection_factors() if mode == "update" else {}
    protection = UpdateSpaceProtection(factors) if factors else None
    generator = torch.Generator().manual_seed(task_id)
    input = torch.randn(12, *shape, generator=generator)
    target = torch.randint(0, 3, (12,), generator=generator)
    backbone.train()
    for _ in range(3):
        feature, *_ = backbone(input, "train", mask_percentage=MASK_PERCENTAGE)
        optimizer.zero_grad()
        F.cross_entropy(heads(feature, task_id), target).backward()
        wsn.condition_gradients()
        if protection is not None:
            protection.before_step()
        optimizer.step()
        if protection is not None:
            protection.after_step()
    wsn.end_task(task_id)


def run_three_tasks(make, shape, make_optimizer, mode, check=True):
    torch.manual_seed(0)
    backbone = make()
    heads = HeadsTIL(backbone.output_dim)
    probe = torch.randn(4, *shape, generator=torch.Generator().manual_seed(9))

    def logits():
        backbone.eval()
        with torch.no_grad():
            feature, *_ = backbone(probe, "test", test_task_id=1)
            return heads(feature, 1).clone()

    train_task(backbone, heads, 1, make_optimizer, mode, shape, check)
    after_first = logits()
    weight = backbone.get_layer_by_name(backbone.weighted_layer_names[0]).weight
    weight_after_first = weight.detach().clone()
    for task_id in (2, 3):
        train_task(backbone, heads, task_id, make_optimizer, mode, shape, check)
    return after_first, logits(), not torch.equal(weight, weight_after_first)


def make_mlp():
    return WSNMaskMLP(input_dim=16, hidden_dims=[12, 12], output_dim=8)


def make_resnet():
    return WSNMaskResNet18(input_channels=3, output_dim=8, small_input=True)


@pytest.mark.parametrize("optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_task_one_stays_bit_exact_in_update_space_under_any_optimiser(optimizer):
    before, after, moved = run_three_tasks(make_mlp, (16,), optimizer, "update")
    assert moved  # later tasks trained the free weights of the shared layers
    assert torch.equal(after, before)


def test_task_one_stays_bit_exact_on_a_resnet_under_sgd_momentum_and_weight_decay():
    before, after, moved = run_three_tasks(
        make_resnet, (3, 8, 8), OPTIMIZERS["sgd-momentum-decay"], "update"
    )
    assert moved
    assert torch.equal(after, before)


@pytest.mark.parametrize("name", ["sgd-momentum-decay", "adamw-decay"])
def test_weight_decay_in_gradient_space_forgets_which_is_why_it_is_refused(name):
    make = OPTIMIZERS[name]
    with pytest.raises(ValueError, match=r"weight_decay=.*protect in update space"):
        wsn_of(make_mlp()).check_optimizer(make([nn.Parameter(torch.zeros(1))]))
    before, after, _ = run_three_tasks(make_mlp, (16,), make, "gradient", check=False)
    assert not torch.equal(after, before)


def test_protection_factors_are_the_free_masks_and_other_tasks_norms_are_frozen():
    backbone = make_resnet()
    train_task(backbone, HeadsTIL(8), 1, OPTIMIZERS["adam"], "update", (3, 8, 8))
    backbone.setup_task_id(2)
    wsn = wsn_of(backbone)
    factors = wsn.protection_factors()
    weight_used, _ = wsn.cumulative_mask()
    for name in backbone.weighted_layer_names:
        weight = backbone.get_layer_by_name(name).weight
        assert torch.equal(factors[weight], (~weight_used[name]).to(weight.dtype))
    norms = [m for m in backbone.modules() if hasattr(m, "norms")]
    assert norms
    for module in norms:
        for parameter in module.norms["1"].parameters():
            assert float(factors[parameter]) == 0.0
        for parameter in module.norms["2"].parameters():
            assert parameter not in factors
