"""Update-space protection (SPEC §9): the step taken is θ + f ⊙ (θ' − θ)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clarena.cl.update_space import UpdateSpaceProtection


def _quadratic_loss(parameter: nn.Parameter, target: torch.Tensor) -> torch.Tensor:
    return ((parameter - target) ** 2).sum()


def _train(parameter, optimizer, target, steps, protection=None, gradient_factor=None):
    for _ in range(steps):
        optimizer.zero_grad()
        _quadratic_loss(parameter, target).backward()
        if gradient_factor is not None:
            parameter.grad.mul_(gradient_factor)
        if protection is not None:
            protection.before_step()
        optimizer.step()
        if protection is not None:
            protection.after_step()


OPTIMIZERS = {
    "sgd-momentum-decay": lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.9, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam([p], lr=0.01),
    "adamw-decay": lambda p: torch.optim.AdamW([p], lr=0.01, weight_decay=0.05),
}


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_hard_mask_keeps_protected_entries_bit_identical(make_optimizer):
    torch.manual_seed(0)
    parameter = nn.Parameter(torch.randn(6, 5))
    start = parameter.detach().clone()
    free = torch.rand(6, 5) > 0.5
    protection = UpdateSpaceProtection({parameter: free})
    _train(parameter, make_optimizer(parameter), torch.randn(6, 5), steps=20, protection=protection)
    after = parameter.detach()
    assert torch.equal(after[~free], start[~free])
    assert bool((after[free] != start[free]).all())


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_all_free_factor_takes_the_optimizers_own_steps_bit_for_bit(make_optimizer):
    torch.manual_seed(1)
    target = torch.randn(4, 3)
    protected = nn.Parameter(torch.randn(4, 3))
    plain = nn.Parameter(protected.detach().clone())
    ones = UpdateSpaceProtection({protected: torch.ones(4, 3)})
    _train(protected, make_optimizer(protected), target, steps=15, protection=ones)
    _train(plain, make_optimizer(plain), target, steps=15)
    assert torch.equal(protected.detach(), plain.detach())


def test_under_sgd_with_momentum_update_space_equals_gradient_scaling_exactly():
    # Dyadic values (lr, momentum, factors, gradients), so every product and sum is exact in
    # float64 and both sides must agree bit for bit: the buffer of scaled gradients is f times
    # the buffer of raw gradients (SPEC §9).
    factor = torch.tensor([[0.0, 0.25, 0.5, 1.0], [1.0, 0.5, 0.25, 0.0]], dtype=torch.float64)
    start = torch.tensor([[1.0, -2.0, 0.5, 4.0], [-0.25, 3.0, 2.0, -1.0]], dtype=torch.float64)
    slope = torch.tensor([[0.5, -1.0, 2.0, 0.25], [-0.5, 1.0, 0.125, 4.0]], dtype=torch.float64)

    def run(update_space: bool) -> torch.Tensor:
        parameter = nn.Parameter(start.clone())
        optimizer = torch.optim.SGD([parameter], lr=0.5, momentum=0.5)
        protection = UpdateSpaceProtection({parameter: factor}) if update_space else None
        for _ in range(6):
            optimizer.zero_grad()
            (parameter * slope).sum().backward()  # gradient: slope, dyadic
            if not update_space:
                parameter.grad.mul_(factor)
            if protection is not None:
                protection.before_step()
            optimizer.step()
            if protection is not None:
                protection.after_step()
        return parameter.detach()

    assert torch.equal(run(update_space=True), run(update_space=False))


def test_under_sgd_with_momentum_it_matches_gradient_scaling_on_random_values():
    torch.manual_seed(2)
    factor = torch.rand(5, 7, dtype=torch.float64)
    start = torch.randn(5, 7, dtype=torch.float64)
    target = torch.randn(5, 7, dtype=torch.float64)

    def run(update_space: bool) -> torch.Tensor:
        parameter = nn.Parameter(start.clone())
        optimizer = torch.optim.SGD([parameter], lr=0.01, momentum=0.9)
        if update_space:
            _train(
                parameter,
                optimizer,
                target,
                10,
                protection=UpdateSpaceProtection({parameter: factor}),
            )
        else:
            _train(parameter, optimizer, target, 10, gradient_factor=factor)
        return parameter.detach()

    # The two orders of rounding differ by a few ulps; the dynamics are the same.
    torch.testing.assert_close(run(True), run(False), rtol=1e-12, atol=1e-14)


def test_adam_cancels_a_gradient_factor_but_not_an_update_factor():
    start = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    target = torch.zeros(3, dtype=torch.float64)
    half = torch.full((3,), 0.5, dtype=torch.float64)

    def first_step(gradient_factor=None, protection_factor=None) -> torch.Tensor:
        parameter = nn.Parameter(start.clone())
        protection = (
            UpdateSpaceProtection({parameter: protection_factor})
            if protection_factor is not None
            else None
        )
        _train(
            parameter,
            torch.optim.Adam([parameter], lr=0.1, eps=0.0),
            target,
            1,
            protection,
            gradient_factor,
        )
        return parameter.detach() - start

    unprotected = first_step()
    # Adam's first step (eps 0) is lr * sign(g): halving the gradient changes nothing ...
    torch.testing.assert_close(first_step(gradient_factor=half), unprotected, rtol=0, atol=1e-15)
    # ... while halving the update halves the step.
    torch.testing.assert_close(first_step(protection_factor=half), 0.5 * unprotected)


def test_adamw_decoupled_weight_decay_does_not_move_fully_protected_entries():
    parameter = nn.Parameter(torch.ones(8))
    free = torch.tensor([True, False] * 4)
    optimizer = torch.optim.AdamW([parameter], lr=0.1, weight_decay=0.5)
    protection = UpdateSpaceProtection({parameter: free})
    for _ in range(5):
        optimizer.zero_grad()
        parameter.sum().mul(0.0).backward()  # zero gradient: only the decay moves it
        protection.before_step()
        optimizer.step()
        protection.after_step()
    assert torch.equal(parameter.detach()[~free], torch.ones(4))
    assert bool((parameter.detach()[free] < 1).all())


def test_extra_memory_is_one_copy_of_the_protected_parameters():
    a, b = nn.Parameter(torch.zeros(10, 4)), nn.Parameter(torch.zeros(3, dtype=torch.float64))
    c = nn.Parameter(torch.zeros(7))
    free = torch.ones(10, 4)
    free[0, 0] = 0.5
    protection = UpdateSpaceProtection({a: free, b: torch.zeros(3), c: torch.ones(7)})
    # c is free everywhere: not protected, no copy.
    assert protection.parameters == [a, b]
    assert protection.extra_bytes() == 10 * 4 * 4 + 3 * 8
    protection.before_step()
    assert sum(t.numel() * t.element_size() for t in protection._before) == 10 * 4 * 4 + 3 * 8


def test_per_step_factors_scale_each_step_by_that_steps_factor():
    # Dyadic values: each step moves by exactly its own factor times the SGD step.
    parameter = nn.Parameter(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    optimizer = torch.optim.SGD([parameter], lr=0.5)
    protection = UpdateSpaceProtection.per_step([parameter])
    expected = parameter.detach().clone()
    for factor in ([0.0, 0.25, 1.0], [0.5, 0.75, 0.125]):
        f = torch.tensor(factor, dtype=torch.float64)
        optimizer.zero_grad()
        parameter.sum().backward()  # gradient 1 everywhere: the SGD step is -0.5
        protection.before_step()
        optimizer.step()
        protection.after_step([f])
        expected = expected - 0.5 * f
        assert torch.equal(parameter.detach(), expected)


def test_per_step_protection_refuses_a_missing_or_miscounted_factor_list():
    parameter = nn.Parameter(torch.zeros(2))
    per_step = UpdateSpaceProtection.per_step([parameter])
    per_step.before_step()
    with pytest.raises(ValueError, match="per-step protection needs this step's factors"):
        per_step.after_step()
    per_step.before_step()
    with pytest.raises(ValueError, match="got 2 factors for 1 parameters"):
        per_step.after_step([torch.ones(2), torch.ones(2)])
    constant = UpdateSpaceProtection({parameter: torch.zeros(2)})
    constant.before_step()
    with pytest.raises(ValueError, match="has constant factors"):
        constant.after_step([torch.ones(2)])


def test_a_bool_factor_keeps_protected_entries_even_through_a_non_finite_step():
    parameter = nn.Parameter(torch.tensor([1.0, 2.0]))
    protection = UpdateSpaceProtection({parameter: torch.tensor([True, False])})
    protection.before_step()
    with torch.no_grad():
        parameter.fill_(float("nan"))  # a diverged optimiser step
    protection.after_step()
    assert parameter[1].item() == 2.0
    assert parameter[0].isnan()


def test_a_factor_that_does_not_fit_its_parameter_is_refused():
    with pytest.raises(ValueError, match=r"shape \(3,\) does not broadcast .* \(2, 2\)"):
        UpdateSpaceProtection({nn.Parameter(torch.zeros(2, 2)): torch.ones(3)})


def test_after_step_without_before_step_is_refused():
    protection = UpdateSpaceProtection({nn.Parameter(torch.zeros(2)): torch.ones(2)})
    with pytest.raises(RuntimeError, match=r"needs before_step\(\) right before"):
        protection.after_step()
