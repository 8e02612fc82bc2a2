"""The fused paths of HAT's step give the plain operations' results: mask gates (one sigmoid
over all layers' units) and their gradients bit for bit, the regulariser without a
concatenation, the compensation on adjacent gradients, the coverage check after a new
parameter."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from clarena.hat import (
    HATMaskMLP,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    layer_sparsity,
    sparsity_regularization,
    zero_subnormal_gates,
)
from clarena.hat.mechanics import _joined, adahat_factor_slots, adjacent_view, hat_factor_slots

S_MAX = 400.0
# S_MAX e in (-88.7, -87.3] gives a subnormal sigmoid(S_MAX e); -0.3 gives exp overflow (gate 0).
SUBNORMAL = [-0.22, -0.219, -0.2185, -0.2215]


def mlp_with_subnormal_gates(dtype: torch.dtype = torch.float32) -> HATMaskMLP:
    torch.manual_seed(0)
    # Layer sizes 13, 7 and 5: every layer has a tail its sigmoid kernel handles apart.
    mlp = HATMaskMLP(input_dim=11, hidden_dims=[13, 7], output_dim=5).to(dtype)
    mlp.setup_task_id(1)
    with torch.no_grad():
        mlp.task_embedding["fc/0"][: len(SUBNORMAL)] = torch.tensor(SUBNORMAL)
        mlp.task_embedding["fc/1"][-2:] = torch.tensor([-0.3, SUBNORMAL[0]])
        mlp.task_embedding["fc/2"][0] = SUBNORMAL[1]
    return mlp


@pytest.mark.parametrize("scale", [1 / S_MAX, 1.7, 57.0, S_MAX])
def test_gates_and_their_gradients_equal_the_plain_operations_bit_for_bit(scale, hat_gates):
    mlp = mlp_with_subnormal_gates()
    x = torch.randn(6, 11)
    _, mask, _ = mlp(x, "train", scale=scale)
    embeddings = {
        name: e.detach().clone().requires_grad_() for name, e in mlp.task_embedding.items()
    }
    expected = hat_gates(scale, embeddings)
    for name in expected:
        assert torch.equal(mask[name], expected[name]), name
    if scale == S_MAX:
        raw = torch.sigmoid(S_MAX * mlp.task_embedding["fc/0"].detach())
        tiny = torch.finfo(torch.float32).tiny
        assert ((raw > 0) & (raw < tiny)).sum() == len(SUBNORMAL)  # the case is exercised
        assert (mask["fc/0"][: len(SUBNORMAL)] == 0).all()
    # Upstream gradients, NaN on a zeroed gate: it must not pass (where's backward gives 0).
    upstream = {name: torch.randn(m.shape) for name, m in mask.items()}
    upstream["fc/0"][0] = float("nan")
    sum((m * upstream[n]).sum() for n, m in mask.items()).backward()
    sum((m * upstream[n]).sum() for n, m in expected.items()).backward()
    for name, embedding in mlp.task_embedding.items():
        reference = embeddings[name].grad
        if scale == S_MAX or name != "fc/0":
            assert torch.equal(embedding.grad, reference), name
        else:  # the NaN passes an open gate in both
            assert torch.allclose(embedding.grad, reference, rtol=0, atol=0, equal_nan=True)


def test_gates_in_float64_and_without_grad(hat_gates):
    mlp = mlp_with_subnormal_gates(torch.float64)
    with torch.no_grad():
        _, mask, _ = mlp(torch.randn(2, 11, dtype=torch.float64), "validation", s_max=S_MAX)
        expected = hat_gates(S_MAX, dict(mlp.task_embedding.items()))
    for name in mlp.task_embedding:
        assert torch.equal(mask[name], expected[name]), name
        assert mask[name].dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_zero_subnormal_gates_threshold_is_the_dtype_smallest_normal(dtype):
    info = torch.finfo(dtype)
    smallest_subnormal = info.tiny * info.eps
    gate = torch.tensor(
        [info.tiny - smallest_subnormal, smallest_subnormal, info.tiny, 0.5, float("nan")],
        dtype=dtype,
    )
    assert 0 < gate[0] < info.tiny  # both subnormal in dtype
    assert 0 < gate[1] < info.tiny
    zeroed = zero_subnormal_gates(gate)
    expected = torch.tensor([0.0, 0.0, info.tiny, 0.5, float("nan")], dtype=dtype)
    assert torch.allclose(zeroed, expected, rtol=0, atol=0, equal_nan=True)


def test_regulariser_on_forward_masks_equals_it_on_separate_tensors_with_gradients():
    mlp = mlp_with_subnormal_gates()
    hat = hat_of(mlp)
    with torch.no_grad():
        for e in mlp.task_embedding.values():
            e.copy_(torch.randn(e.shape))
    hat.store_mask()
    mlp.setup_task_id(2)
    cumulative = hat.cumulative_mask()
    _, mask, _ = mlp(torch.randn(3, 11), "train", scale=3.0)
    # The forward's masks are pieces of one tensor: no concatenation is made.
    assert _joined(list(mask.values())) is next(iter(mask.values()))._base
    copies = {name: m.detach().clone().requires_grad_() for name, m in mask.items()}
    separate = {name: c.clone() for name, c in cumulative.items()}
    fused = sparsity_regularization(mask, cumulative)
    reference = sparsity_regularization(copies, separate)  # concatenates copies
    assert torch.equal(fused, reference)
    fused.backward()
    reference.backward()
    # The embeddings' gradients equal the chain through the copies' gradients.
    for name, embedding in mlp.task_embedding.items():
        gate = mask[name].detach()
        expected = copies[name].grad * gate * (1 - gate) * 3.0
        assert torch.allclose(embedding.grad, expected, rtol=1e-6, atol=0), name
    # The cached free units follow an in-place change of the cumulative mask.
    with torch.no_grad():
        mlp.get_buffer("_cumulative").fill_(0.0)
    assert torch.equal(
        sparsity_regularization(mask, hat.cumulative_mask()),
        sparsity_regularization(copies, {n: torch.zeros_like(c) for n, c in separate.items()}),
    )
    per_layer = layer_sparsity(mask, hat.cumulative_mask())
    assert per_layer.keys() == mask.keys()


def test_joined_concatenates_pieces_that_are_not_one_tensor_in_order():
    flat = torch.arange(6.0)
    pieces = list(flat.split([2, 4]))
    assert _joined(pieces) is flat
    assert torch.equal(_joined(pieces[::-1]), torch.tensor([2.0, 3, 4, 5, 0, 1]))
    assert torch.equal(_joined(pieces[:1]), torch.tensor([0.0, 1.0]))  # part of its base
    strided = flat[::2]
    assert torch.equal(_joined([strided]), torch.tensor([0.0, 2.0, 4.0]))
    leaf = torch.arange(4.0, requires_grad=True)
    with torch.no_grad():
        untracked = list(leaf.split([1, 3]))  # made without grad: not the leaf's pieces
    assert _joined(untracked) is not leaf
    torch.cat(untracked).sum().backward()  # what _joined must reproduce: no gradient to the leaf
    assert leaf.grad is None
    assert _joined(list(leaf.split([1, 3]))) is leaf


def test_coverage_is_checked_again_after_a_parameter_is_registered():
    mlp = HATMaskMLP(input_dim=3, hidden_dims=[2], output_dim=2)
    mlp.setup_task_id(1)
    hat_of(mlp).store_mask()
    condition_gradients(mlp)  # checked: covered
    mlp.extra = nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match=r"\['extra.weight', 'extra.bias'\] belong to no"):
        condition_gradients(mlp)
    del mlp.extra
    condition_gradients(mlp)


def test_regulariser_is_the_free_units_mean_mask_within_float32_rounding_in_any_dtypes():
    mask = {"a": torch.tensor([0.5, 1.0, 0.25]), "b": torch.tensor([0.0, 0.75])}
    cumulative = {"a": torch.tensor([1.0, 0.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    expected = (1.0 + 0.25 + 0.0) / 3
    assert sparsity_regularization(mask, cumulative).item() == pytest.approx(expected, rel=1e-6)
    wide = {name: m.double() for name, m in mask.items()}  # a float64 mask, float32 masks before
    assert sparsity_regularization(wide, cumulative).item() == pytest.approx(expected, rel=1e-6)
    full = {name: torch.ones_like(c) for name, c in cumulative.items()}
    assert sparsity_regularization(mask, full).item() == 0.0


def test_compensation_on_the_backward_s_adjacent_gradients_equals_the_per_piece_path():
    """Autograd leaves the embeddings' gradients as back-to-back pieces of one tensor (the
    concatenation's gradient): the compensation multiplies them in one call, bit for bit what
    it does on separate gradients."""
    mlp = mlp_with_subnormal_gates()
    with torch.no_grad():
        for e in mlp.task_embedding.values():
            e.uniform_(-7.0, 7.0)
    _, mask, _ = mlp(torch.randn(4, 11), "train", scale=3.0)
    sum((m * torch.randn(m.shape)).sum() for m in mask.values()).backward()
    grads = [e.grad for e in mlp.task_embedding.values()]
    flat = adjacent_view(grads)
    assert flat is not None
    assert flat.numel() == sum(g.numel() for g in grads)
    separate = copy.deepcopy(mlp)
    for a, b in zip(mlp.task_embedding.values(), separate.task_embedding.values(), strict=True):
        b.grad = a.grad.clone()  # separate gradient tensors
    assert adjacent_view([e.grad for e in separate.task_embedding.values()]) is None
    for s in (1 / S_MAX, 3.0, S_MAX):
        compensate_embedding_gradients(mlp, s, S_MAX)
        compensate_embedding_gradients(separate, s, S_MAX)
        for a, b in zip(mlp.task_embedding.values(), separate.task_embedding.values(), strict=True):
            assert torch.equal(a.grad, b.grad)


def test_adjacent_view_only_joins_back_to_back_pieces_of_one_storage():
    flat = torch.arange(10.0)
    pieces = list(flat.split([3, 5, 2]))
    view = adjacent_view(pieces)
    assert view is not None
    assert view.data_ptr() == flat.data_ptr()
    assert view.numel() == 10
    view.mul_(2)
    assert torch.equal(flat, torch.arange(10.0) * 2)
    assert adjacent_view(pieces[1:]).numel() == 7
    assert adjacent_view(pieces[::-1]) is None  # out of order
    assert adjacent_view([pieces[0], pieces[2]]) is None  # a gap
    assert adjacent_view([flat[::2]]) is None  # not contiguous
    assert adjacent_view([torch.zeros(3), torch.zeros(3)]) is None  # two storages
    as_ints = flat.view(torch.int32)[3:8]
    assert adjacent_view([pieces[0], as_ints]) is None  # another dtype


def test_first_layer_conditioning_factor_is_a_column_with_the_dense_factor_s_values():
    """A layer fed by the raw input has input units at 1: ``1 - min(a_i, 1)`` is the column
    ``1 - a_i``, and the conditioned gradient equals the one by the dense factor."""
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=11, hidden_dims=[13, 7], output_dim=5)
    mlp.setup_task_id(1)
    hat_of(mlp).store_mask()
    mlp.setup_task_id(2)
    hat = hat_of(mlp)
    slots = hat_factor_slots(hat)
    cumulative = hat.cumulative_mask()
    # The dense factor, written out: 1 - min(a_i, a_j) with every raw input unit a_j = 1.
    dense_factor = 1 - torch.minimum(cumulative["fc/0"][:, None], torch.ones(1, 11))
    assert slots[0].shape == (13, 1)
    assert torch.equal(slots[0].expand(13, 11), dense_factor)
    assert slots[2].shape == (7, 13)
    for parameter in mlp.parameters():
        parameter.grad = torch.randn_like(parameter)
    dense = dense_factor * mlp.fc[0].weight.grad
    condition_gradients(mlp)
    assert torch.equal(mlp.fc[0].weight.grad, dense)


def test_layer_sparsity_is_the_per_layer_formula_bit_for_bit():
    """One multiply over all layers' units and cached free-unit counts: each layer's value is
    ``sum(a (1 - c)) / max(sum(1 - c), 1)`` of its own tensors, bit for bit (a layer with no free
    unit gives 0)."""
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=11, hidden_dims=[37, 300], output_dim=5)
    hat = hat_of(mlp)
    mlp.setup_task_id(1)
    hat.store_mask()
    mlp.setup_task_id(2)
    with torch.no_grad():
        mlp.get_buffer("_cumulative")[-5:] = 1.0  # the last layer has no free unit
    for scale in (0.3, 7.0, S_MAX):
        _, mask, _ = mlp(torch.randn(3, 11), "train", scale=scale)
        cumulative = hat.cumulative_mask()
        fused = layer_sparsity(mask, cumulative)
        for name, a in mask.items():
            free = 1 - cumulative[name].clone()
            expected = (a.detach().clone() * free).sum() / free.sum().clamp_min(1)
            assert torch.equal(fused[name].detach(), expected), name
        assert fused["fc/2"].item() == 0.0
        with torch.no_grad():  # as the algorithms call it
            untracked = layer_sparsity(mask, cumulative)
        assert all(torch.equal(untracked[n], fused[n].detach()) for n in mask)
    # A mask that is not HAT's pieces (concatenated) gives the same values.
    copies = {name: a.detach().clone() for name, a in mask.items()}
    assert all(
        torch.equal(value, fused[name].detach())
        for name, value in layer_sparsity(copies, cumulative).items()
    )


@pytest.mark.parametrize("aggregation", ["min", "max"])
def test_adahat_factors_written_into_kept_tensors_equal_fresh_ones(aggregation):
    """The gradient function's factors are refilled in place each step (one call per operation
    and layer): the same tensors every step, bit for bit the fresh factors of that step."""
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=11, hidden_dims=[13, 7], output_dim=5)
    for task_id in (1, 2):
        mlp.setup_task_id(task_id)
        hat_of(mlp).store_mask()
    mlp.setup_task_id(3)
    hat = hat_of(mlp)
    kept = None
    for step in range(3):
        sparsity = {
            name: 0.1 * (step + 1) + 0.05 * i for i, name in enumerate(mlp.weighted_layer_names)
        }
        fresh = adahat_factor_slots(hat, sparsity, 0.3, 0.1, aggregation)
        reused = adahat_factor_slots(hat, sparsity, 0.3, 0.1, aggregation, reuse=True)
        assert all(torch.equal(a, b) for a, b in zip(fresh, reused, strict=True))
        if kept is not None:
            assert all(a is b for a, b in zip(kept, reused, strict=True))
        kept = reused
