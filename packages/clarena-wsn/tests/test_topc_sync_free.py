"""The sync-free top-c% selection: the same masks as the stable-sort reference, no host sync."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from clarena.wsn import masked_parameters, score_mask, top_count, top_fraction_mask
from clarena.wsn.topc_sync_free import (
    masked_parameters_sync_free,
    order_keys,
    top_count_tensor,
    top_fraction_mask_sync_free,
)


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    torch._dynamo.reset()


def reference_mask(values: torch.Tensor, fraction: float) -> torch.Tensor:
    """Top entries by a stable descending sort: ties go to the lower flattened index."""
    flat = values.reshape(-1)
    keep = torch.sort(flat, descending=True, stable=True).indices[
        : top_count(fraction, flat.numel())
    ]
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    mask[keep] = True
    return mask.reshape(values.shape)


def value_kinds(numel: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(numel)
    signed = torch.randn(numel, generator=generator)
    return {
        "magnitudes": signed.abs(),
        "signed": signed,
        "few values (many ties)": torch.randint(0, 4, (numel,), generator=generator).float(),
        "all equal": torch.full((numel,), 0.25),
        "zeros of both signs": torch.where(signed > 0, 0.0, -0.0),
        "mostly zero": torch.where(signed > 1.5, signed, torch.zeros(())),
    }


FRACTIONS = [0.0, 1e-4, 0.3, 0.5, 0.77, 1.0]


# 2^14 = 16,384 is where the CPU path switches from one kthvalue to brackets.
@pytest.mark.parametrize("numel", [1, 7, 999, 16_383, 20_001, 200_003])
def test_equals_stable_sort_reference(numel: int) -> None:
    for kind, values in value_kinds(numel).items():
        for fraction in FRACTIONS:
            mask = top_fraction_mask_sync_free(values, torch.tensor(fraction, dtype=torch.float64))
            assert mask.dtype == torch.bool
            assert torch.equal(mask, reference_mask(values, fraction)), (kind, fraction)


@pytest.mark.parametrize("numel", [1, 3, 5, 7, 101, 4097])
def test_half_counts_round_to_even_like_python(numel: int) -> None:
    values = torch.randn(numel, generator=torch.Generator().manual_seed(1)).abs()
    for fraction in (0.5, 0.25, 0.125, 0.3, 0.7, 1 / 3):
        count = top_count_tensor(torch.tensor(fraction, dtype=torch.float64), numel)
        assert int(count) == round(fraction * numel)
        mask = top_fraction_mask_sync_free(values, fraction)
        assert int(mask.sum()) == top_count(fraction, numel)
        assert torch.equal(mask, reference_mask(values, fraction))


def test_count_matches_python_round_on_a_grid() -> None:
    fractions = [*torch.linspace(0, 1, 1001, dtype=torch.float64).tolist(), 0.5, 0.05, 0.15]
    for numel in (2, 10, 30, 784 * 256, 2_359_296):
        for fraction in fractions:
            count = top_count_tensor(torch.tensor(fraction, dtype=torch.float64), numel)
            assert int(count) == round(fraction * numel), (fraction, numel)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes(dtype: torch.dtype) -> None:
    for kind, values in value_kinds(3001).items():
        values = values.to(dtype)
        for fraction in FRACTIONS:
            expected = reference_mask(values, fraction)
            assert torch.equal(top_fraction_mask_sync_free(values, fraction), expected), kind


def test_keys_keep_the_order_of_the_values() -> None:
    values = torch.tensor([-float("inf"), -2.0, -1e-30, -0.0, 0.0, 1e-45, 1.0, float("inf")])
    keys = order_keys(values)
    assert keys[3] == keys[4]
    assert torch.all(keys[1:] >= keys[:-1])
    assert torch.unique(keys).numel() == values.numel() - 1


def test_non_contiguous_conv_weight() -> None:
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(64, 32, 3, 3, generator=generator).abs()
    for view in (weight.permute(1, 0, 3, 2), weight[:, ::2], weight.transpose(0, 1)):
        assert not view.is_contiguous()
        for fraction in FRACTIONS:
            mask = top_fraction_mask_sync_free(view, fraction)
            assert mask.shape == view.shape
            assert torch.equal(mask, reference_mask(view, fraction))


def test_compiles_as_one_graph_with_no_recompile_per_fraction() -> None:
    # fullgraph=True refuses any host synchronisation (.item(), nonzero, int(tensor)) and any
    # shape that depends on values: compiling at all shows the selection has none.
    counter = CompileCounterWithBackend("aot_eager")
    select = torch.compile(
        top_fraction_mask_sync_free, fullgraph=True, dynamic=False, backend=counter
    )
    for numel in (999, 20_001):
        kinds = value_kinds(numel)
        select(kinds["signed"], torch.tensor(0.5, dtype=torch.float64))
        compiled = counter.frame_count
        for kind, values in kinds.items():
            for fraction in FRACTIONS:
                mask = select(values, torch.tensor(fraction, dtype=torch.float64))
                assert torch.equal(mask, reference_mask(values, fraction)), (kind, fraction)
        assert counter.frame_count == compiled  # no recompile for other values or fractions


def test_public_functions_take_the_sync_free_path_when_compiling() -> None:
    values = torch.randn(20_001, generator=torch.Generator().manual_seed(5)).abs()
    compiled = torch.compile(top_fraction_mask, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled(values, 0.5), top_fraction_mask(values, 0.5))
    compiled_score = torch.compile(score_mask, fullgraph=True, backend="aot_eager")
    assert torch.equal(compiled_score(values, 0.3), score_mask(values, 0.3))


def test_masked_parameters_values_and_gradients_equal_the_cpu_path() -> None:
    generator = torch.Generator().manual_seed(7)
    shapes = [(100, 256), (100,), (64, 3, 3, 3)]
    weights = [torch.randn(s, generator=generator) for s in shapes]
    results = []
    for select in (masked_parameters, masked_parameters_sync_free):
        parameters = [torch.randn(s, generator=torch.Generator().manual_seed(1)) for s in shapes]
        scores = [torch.randn(s, generator=torch.Generator().manual_seed(2)) for s in shapes]
        for tensor in (*parameters, *scores):
            tensor.requires_grad_()
        masked, masks = select(parameters, scores, 0.37)
        sum((m * w).sum() for m, w in zip(masked, weights, strict=True)).backward()
        results.append((masked, masks, [t.grad for t in (*parameters, *scores)]))
    for expected, got in zip(*results, strict=True):
        for a, b in zip(expected, got, strict=True):
            assert torch.equal(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_synchronisation_on_cuda() -> None:
    values = torch.randn(200_003, device="cuda").abs()
    fraction = torch.tensor(0.5, dtype=torch.float64, device="cuda")
    top_fraction_mask_sync_free(values, fraction)  # warm up (lazy CUDA initialisation)
    torch.cuda.set_sync_debug_mode("error")
    try:
        mask = top_fraction_mask_sync_free(values, fraction)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.equal(mask.cpu(), reference_mask(values.cpu(), 0.5))
