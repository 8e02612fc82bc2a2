"""Top-c% selection: exact counts, deterministic ties, any layer size, straight-through gradient."""

from __future__ import annotations

import pytest
import torch

from clarena.wsn import (
    ThresholdHint,
    masked_parameter,
    masked_parameters,
    score_mask,
    top_count,
    top_fraction_mask,
    topc,
)
from clarena.wsn.topc import _sample_stride


def reference_mask(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Top entries by a stable descending sort: ties go to the lower flattened index."""
    flat = values.reshape(-1)
    keep = torch.sort(-flat, stable=True).indices[: top_count(fraction, flat.numel())]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[keep] = True
    return mask.reshape(values.shape)


def test_top_count_is_python_round() -> None:
    assert top_count(0.5, 5) == 2
    assert top_count(0.3, 10) == 3
    assert top_count(0.7, 3) == 2
    assert top_count(1.0, 7) == 7


@pytest.mark.parametrize("numel", [1, 7, 1000, 20_000, 200_001])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.77, 1.0])
def test_matches_stable_sort_reference(numel: int, fraction: float) -> None:
    generator = torch.Generator().manual_seed(numel)
    for values in (
        torch.randn(numel, generator=generator).abs(),
        torch.randint(0, 4, (numel,), generator=generator).float(),
        torch.randn(numel, generator=generator),
    ):
        mask = top_fraction_mask(values, fraction)
        assert mask.dtype == torch.bool
        assert torch.equal(mask, reference_mask(values, fraction))


@pytest.mark.parametrize(
    "values",
    [
        torch.arange(200_000).float(),
        torch.arange(200_000).flip(0).float(),
        (torch.arange(200_000) % 7).float(),
        # Every sampled element is the largest value: the sample's bracket misses and the exact
        # fallback must give the same answer.
        torch.where(
            torch.arange(200_000) % _sample_stride(200_000) == 0,
            10.0,
            torch.linspace(0, 1, 200_000),
        ),
    ],
    ids=["ascending", "descending", "periodic-ties", "sample-misses"],
)
@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.98])
def test_adversarial_layouts(values: torch.Tensor, fraction: float) -> None:
    assert torch.equal(top_fraction_mask(values, fraction), reference_mask(values, fraction))


def test_layer_larger_than_2_pow_24_random_scores() -> None:
    scores = torch.randn(5000, 5000, generator=torch.Generator().manual_seed(0))
    magnitude = scores.abs()
    mask = top_fraction_mask(magnitude, 0.3)
    assert mask.shape == (5000, 5000)
    assert int(mask.count_nonzero()) == round(0.3 * 25_000_000)
    assert magnitude[mask].min() >= magnitude[~mask].max()


def test_layer_larger_than_2_pow_24_all_equal_scores_tie_break_by_index() -> None:
    mask = top_fraction_mask(torch.full((5000, 5000), 0.25), 0.3)
    flat = mask.reshape(-1)
    kept = round(0.3 * 25_000_000)
    assert int(flat.count_nonzero()) == kept
    assert bool(flat[:kept].all())
    assert not bool(flat[kept:].any())


def test_partial_ties_at_the_threshold_keep_lowest_indices() -> None:
    values = torch.zeros(100_000)
    values[::2] = 1.0  # 50,000 ones, 50,000 zeros
    values[99_999] = 2.0
    mask = top_fraction_mask(values, 0.3)  # 30,000: the 2.0, then the first 29,999 ones
    assert int(mask.count_nonzero()) == 30_000
    assert bool(mask[99_999])
    ones = (values == 1.0).nonzero().squeeze(1)
    assert bool(mask[ones[:29_999]].all())
    assert not bool(mask[ones[29_999:]].any())


def test_straight_through_gradient_reaches_scores() -> None:
    generator = torch.Generator().manual_seed(1)
    score = torch.randn(30, 40, generator=generator, requires_grad=True)
    weight = torch.randn(30, 40, generator=generator)
    mask = score_mask(score, 0.5)
    assert torch.equal(mask, top_fraction_mask(score.detach().abs(), 0.5).float())
    (mask * weight).sum().backward()
    # d|s|/ds = sign(s), and the mask passes d(loss)/d(mask) = weight straight through.
    assert torch.equal(score.grad, weight * score.detach().sign())
    assert bool((score.grad != 0).all())


@pytest.mark.parametrize(
    "hint",
    [ThresholdHint(), ThresholdHint(0.5, 1e-6), ThresholdHint(100.0, 1e-3), ThresholdHint(0.0)],
    ids=["empty", "near", "far", "zero"],
)
def test_threshold_hints_never_change_the_mask(hint: ThresholdHint) -> None:
    generator = torch.Generator().manual_seed(3)
    score = torch.randn(300, 400, generator=generator)
    weight = torch.randn(300, 400, generator=generator)
    for step in range(3):
        score = score + 0.001 * torch.randn(300, 400, generator=generator)
        masked, mask = masked_parameter(weight, score, 0.4, hint)
        assert torch.equal(mask, reference_mask(score.abs(), 0.4).float()), step
        assert torch.equal(masked, weight * mask)
        # The kept threshold separates the selected magnitudes from the others.
        magnitude = score.abs()
        assert float(magnitude[mask == 1].min()) >= hint.threshold
        assert hint.threshold >= float(magnitude[mask == 0].max())


def test_masked_parameter_gradients() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(50, 60, generator=generator, requires_grad=True)
    score = torch.randn(50, 60, generator=generator, requires_grad=True)
    upstream = torch.randn(50, 60, generator=generator)
    masked, mask = masked_parameter(weight, score, 0.3)
    assert not mask.requires_grad
    (masked * upstream).sum().backward()
    assert torch.equal(weight.grad, upstream * mask)
    assert torch.equal(score.grad, upstream * weight.detach() * score.detach().sign())


@pytest.mark.parametrize("numel", [1, 50, 1000, 20_000, 200_001])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_hinted_selection_follows_moving_scores_exactly(numel: int, fraction: float) -> None:
    """Training-like drift, jumps that leave the hint's window, and ties: always the reference."""
    generator = torch.Generator().manual_seed(numel)
    score = torch.randn(numel, generator=generator)
    hint = ThresholdHint()
    for step in range(12):
        if step == 6:
            score = score * 3.0  # the threshold jumps far outside any window
        elif step == 9:
            score = torch.round(score * 4) / 4  # many ties at the threshold
        else:
            score = score + 0.01 * torch.randn(numel, generator=generator)
        _, mask = masked_parameter(torch.ones(numel), score, fraction, hint)
        assert torch.equal(mask.bool(), reference_mask(score.abs(), fraction)), step


@pytest.mark.parametrize("numel", [300, 40_000])
@pytest.mark.parametrize("direction", ["too-many", "too-few"])
def test_hinted_selection_swaps_entries_near_the_threshold_without_a_full_search(
    numel: int, direction: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries crossing the previous threshold are added or dropped from its window alone."""
    score = torch.linspace(1.0, 2.0, numel)
    hint = ThresholdHint()
    masked_parameter(torch.ones(numel), score, 0.5, hint)
    previous = hint.threshold
    assert previous is not None
    moved = score.clone()
    if direction == "too-many":  # 5 entries rise to just above the threshold: 5 must leave
        moved[(score < previous).nonzero().squeeze(1)[:5]] = previous * (1 + 1e-5)
    else:  # 5 selected entries fall to just below it: 5 others must join
        moved[(score >= previous).nonzero().squeeze(1)[-5:]] = previous * (1 - 1e-5)

    def no_full_search(*args: object) -> None:
        raise AssertionError("the hint's window should have held the new threshold")

    monkeypatch.setattr(topc, "_threshold", no_full_search)
    _, mask = masked_parameter(torch.ones(numel), moved, 0.5, hint)
    assert torch.equal(mask.bool(), reference_mask(moved, 0.5))


def test_masked_parameters_is_one_node_with_per_parameter_gradients() -> None:
    generator = torch.Generator().manual_seed(4)
    weights = [torch.randn(20, 30, generator=generator, requires_grad=True) for _ in range(2)]
    bias = torch.randn(20, generator=generator, requires_grad=True)
    scores = [torch.randn(p.shape, generator=generator, requires_grad=True) for p in weights]
    bias_score = torch.randn(20, generator=generator, requires_grad=True)
    hints = [ThresholdHint(), ThresholdHint(), None]
    masked, masks = masked_parameters([*weights, bias], [*scores, bias_score], 0.4, hints)
    assert masked[0].grad_fn is masked[2].grad_fn
    for value, weight, mask in zip(masked, [*weights, bias], masks, strict=True):
        assert torch.equal(value, weight.detach() * mask)
        assert not mask.requires_grad
    upstream = torch.randn(20, 30, generator=generator)
    # The second weight's masked value is not used: it and its score get no gradient.
    ((masked[0] * upstream).sum() + masked[2].sum()).backward()
    assert torch.equal(weights[0].grad, upstream * masks[0])
    assert torch.equal(scores[0].grad, upstream * weights[0].detach() * scores[0].detach().sign())
    assert weights[1].grad is None
    assert scores[1].grad is None
    assert torch.equal(bias.grad, masks[2])
    assert torch.equal(bias_score.grad, bias.detach() * bias_score.detach().sign())


def test_private_outputs_give_the_same_gradients() -> None:
    """``private=True`` masks the incoming gradients in place: the same values as a copy."""
    x = torch.randn(8, 30, generator=torch.Generator().manual_seed(5))
    results = []
    for private in (False, True):
        weight = torch.randn(40, 30, generator=torch.Generator().manual_seed(6), requires_grad=True)
        score = torch.randn(40, 30, generator=torch.Generator().manual_seed(7), requires_grad=True)
        (masked,), (mask,) = masked_parameters([weight], [score], 0.5, private=private)
        torch.nn.functional.linear(x, masked).square().sum().backward()
        results.append((weight.grad, score.grad, mask))
    (weight_grad, score_grad, mask), (private_weight_grad, private_score_grad, private_mask) = (
        results
    )
    assert torch.equal(private_mask, mask)
    assert torch.equal(private_weight_grad, weight_grad)
    assert torch.equal(private_score_grad, score_grad)
    assert bool(weight_grad[mask == 0].eq(0).all())
    assert bool(weight_grad[mask == 1].ne(0).all())


def test_masked_parameters_needs_one_score_per_parameter() -> None:
    with pytest.raises(ValueError, match="one score per parameter; got 2 parameters and 1"):
        masked_parameters([torch.ones(3), torch.ones(3)], [torch.ones(3)], 0.5)
