"""Output heads: TIL, CIL, MTL, STL shapes, errors and state_dict reload."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from clarena.cl import HeadsCIL, HeadsMTL, HeadsTIL, HeadSTL


def reload(module: nn.Module, fresh: nn.Module) -> nn.Module:
    """Save ``module``'s state_dict through bytes and load it into ``fresh``."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    result = fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    return fresh


# --- HeadsTIL ---------------------------------------------------------------------------------


def make_til() -> HeadsTIL:
    torch.manual_seed(0)
    heads = HeadsTIL(input_dim=8)
    for task_id, classes in ((1, 2), (4, 3), (2, 7)):
        heads.setup_task_id(task_id, classes)
    return heads


def test_til_logits_have_each_tasks_class_count():
    heads = make_til()
    feature = torch.randn(5, 8)
    assert heads.task_ids == [1, 4, 2]
    assert heads.task_id == 2
    assert tuple(heads(feature).shape) == (5, 7)
    for task_id, classes in ((1, 2), (4, 3), (2, 7)):
        assert tuple(heads(feature, task_id).shape) == (5, classes)
        assert heads.num_classes(task_id) == classes


def test_til_explicit_task_uses_that_tasks_head():
    heads = make_til()
    feature = torch.randn(5, 8)
    head = heads.heads["4"]
    assert torch.equal(
        heads(feature, task_id=4), nn.functional.linear(feature, head.weight, head.bias)
    )


def test_til_resetting_up_a_task_reuses_its_head_and_makes_it_current():
    heads = make_til()
    weight = heads.heads["1"].weight
    heads.setup_task_id(1, 2)
    assert heads.heads["1"].weight is weight
    assert heads.task_id == 1
    assert heads.task_ids == [1, 4, 2]


def test_til_unknown_task_is_a_value_error():
    with pytest.raises(ValueError, match=r"no head for task 3.*\[1, 4, 2\].*setup_task_id\(3"):
        make_til()(torch.randn(2, 8), task_id=3)


def test_til_forward_before_any_task_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"setup_task_id"):
        HeadsTIL(input_dim=8)(torch.randn(2, 8))


def test_til_feature_dim_mismatch_names_input_dim():
    with pytest.raises(ValueError, match=r"\(batch, 8\); got \(2, 9\).*input_dim"):
        make_til()(torch.randn(2, 9), task_id=1)


def test_til_resetting_up_with_other_class_count_is_a_value_error():
    with pytest.raises(ValueError, match=r"task 4 already has a head with 3 classes.*=5"):
        make_til().setup_task_id(4, 5)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_til_bad_class_count_is_a_value_error(num_classes):
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        HeadsTIL(input_dim=8).setup_task_id(1, num_classes)


def test_til_non_integer_task_id_is_a_type_error():
    with pytest.raises(TypeError, match=r"task_id must be an integer"):
        HeadsTIL(input_dim=8).setup_task_id("0", 2)


@pytest.mark.parametrize("input_dim", [0, -3, 8.0, True])
def test_heads_bad_input_dim_is_a_value_error(input_dim):
    with pytest.raises(ValueError, match=r"input_dim must be a positive integer"):
        HeadsTIL(input_dim=input_dim)


def test_til_all_heads_survive_reload_into_a_fresh_instance():
    heads = make_til()
    fresh = reload(heads, HeadsTIL(input_dim=8))
    assert fresh.task_ids == [1, 4, 2]
    feature = torch.randn(5, 8)
    for task_id in (1, 4, 2):
        assert fresh.num_classes(task_id) == heads.num_classes(task_id)
        assert torch.equal(fresh(feature, task_id), heads(feature, task_id))


# --- HeadsCIL ---------------------------------------------------------------------------------


def make_cil() -> HeadsCIL:
    torch.manual_seed(0)
    heads = HeadsCIL(input_dim=8)
    return heads


def test_cil_logits_grow_with_each_task():
    heads = make_cil()
    feature = torch.randn(3, 8)
    widths = []
    for task_id, classes in ((1, 2), (2, 3), (3, 2)):
        heads.setup_task_id(task_id, classes)
        widths.append(heads(feature).shape[1])
    assert widths == [2, 5, 7]
    assert [heads.class_offset(t) for t in (1, 2, 3)] == [0, 2, 5]
    assert heads(feature, task_id=1).shape == (3, 7)  # CIL ignores the task id


def test_cil_earlier_logits_unchanged_by_growth():
    heads = make_cil()
    feature = torch.randn(3, 8)
    heads.setup_task_id(1, 2)
    before = heads(feature)
    heads.setup_task_id(2, 3)
    after = heads(feature)
    assert torch.equal(after[:, :2], before)
    new = heads.heads["2"]
    assert torch.equal(after[:, 2:5], new(feature))


def test_cil_class_offset_follows_setup_order_not_task_number():
    heads = make_cil()
    heads.setup_task_id(5, 4)
    heads.setup_task_id(2, 3)
    heads.setup_task_id(5, 4)  # re-setup grows nothing
    assert heads(torch.randn(1, 8)).shape == (1, 7)
    assert heads.class_offset(5) == 0
    assert heads.class_offset(2) == 4
    with pytest.raises(ValueError, match=r"no head for task 9"):
        heads.class_offset(9)


def test_cil_forward_before_any_task_is_a_runtime_error():
    with pytest.raises(RuntimeError, match=r"setup_task_id"):
        HeadsCIL(input_dim=8)(torch.randn(2, 8))


def test_cil_feature_dim_mismatch_names_input_dim():
    heads = make_cil()
    heads.setup_task_id(1, 2)
    with pytest.raises(ValueError, match=r"input_dim"):
        heads(torch.randn(2, 3))


def test_cil_survives_reload_into_a_fresh_instance():
    heads = make_cil()
    for task_id, classes in ((3, 2), (1, 3), (2, 2)):
        heads.setup_task_id(task_id, classes)
    fresh = reload(heads, HeadsCIL(input_dim=8))
    feature = torch.randn(4, 8)
    assert torch.equal(fresh(feature), heads(feature))
    assert [fresh.class_offset(t) for t in (3, 1, 2)] == [0, 2, 5]


# --- HeadsMTL ---------------------------------------------------------------------------------


def make_mtl() -> HeadsMTL:
    torch.manual_seed(0)
    heads = HeadsMTL(input_dim=6)
    heads.setup_tasks({1: 2, 2: 4, 3: 3})
    return heads


def test_mtl_single_task_id_gives_that_tasks_logits():
    heads = make_mtl()
    feature = torch.randn(5, 6)
    for task_id, classes in ((1, 2), (2, 4), (3, 3)):
        logits = heads(feature, task_id)
        assert logits.shape == (5, classes)
        assert torch.equal(logits, heads.heads[str(task_id)](feature))


def test_mtl_mixed_batch_pads_with_minus_infinity():
    heads = make_mtl()
    feature = torch.randn(6, 6)
    task_ids = torch.tensor([1, 3, 2, 1, 3, 3])
    logits = heads(feature, task_ids)
    assert logits.shape == (6, 4)
    for task_id in (1, 2, 3):
        rows = task_ids == task_id
        classes = heads.num_classes(task_id)
        expected = heads.heads[str(task_id)](feature[rows])
        assert torch.equal(logits[rows, :classes], expected)
        assert torch.isfinite(logits[rows, :classes]).all()
        padding = logits[rows, classes:]
        assert torch.equal(padding, torch.full_like(padding, float("-inf")))
    # each row matches its task's head applied to that row alone: a one-row matmul may take
    # another BLAS kernel than the batch, so a few float32 roundings of 6-term sums apart
    for row, task_id in enumerate(task_ids.tolist()):
        classes = heads.num_classes(task_id)
        alone = heads(feature[row : row + 1], task_id)[0]
        torch.testing.assert_close(logits[row, :classes], alone, rtol=1e-6, atol=1e-6)


def test_mtl_zero_dim_task_tensor_means_one_task_for_the_batch():
    heads = make_mtl()
    feature = torch.randn(3, 6)
    assert torch.equal(heads(feature, torch.tensor(1)), heads(feature, 1))


@pytest.mark.parametrize(
    ("task_ids", "got"),
    [
        (torch.tensor([0, 1]), r"torch.int64 tensor of shape \(2,\)"),
        (torch.tensor([0.0, 1.0, 0.0]), r"torch.float32 tensor of shape \(3,\)"),
        ([0, 1, 0], r"\[0, 1, 0\]"),
    ],
)
def test_mtl_malformed_task_ids_are_a_value_error(task_ids, got):
    with pytest.raises(ValueError, match=r"integer tensor of shape \(3,\).*got " + got):
        make_mtl()(torch.randn(3, 6), task_ids)


def test_mtl_mixed_batch_width_is_the_widest_task_present():
    heads = make_mtl()
    logits = heads(torch.randn(3, 6), torch.tensor([1, 3, 1]))
    assert logits.shape == (3, 3)


def test_mtl_cross_entropy_on_mixed_batch_is_finite_and_trains_each_head():
    heads = make_mtl()
    feature = torch.randn(6, 6)
    task_ids = torch.tensor([1, 2, 3, 1, 2, 3])
    targets = torch.tensor([1, 3, 2, 0, 0, 1])
    loss = nn.functional.cross_entropy(heads(feature, task_ids), targets)
    assert torch.isfinite(loss)
    loss.backward()
    for head in heads.heads.values():
        assert head.weight.grad is not None
        assert torch.isfinite(head.weight.grad).all()
        assert head.weight.grad.abs().sum() > 0


def test_mtl_unknown_task_is_a_value_error():
    heads = make_mtl()
    with pytest.raises(ValueError, match=r"no head for task 7.*setup_tasks\(\{7: num_classes"):
        heads(torch.randn(2, 6), 7)
    with pytest.raises(ValueError, match=r"no head for task 7"):
        heads(torch.randn(2, 6), torch.tensor([1, 7]))


def test_mtl_feature_dim_mismatch_names_input_dim():
    with pytest.raises(ValueError, match=r"input_dim"):
        make_mtl()(torch.randn(2, 5), 1)


def test_mtl_survives_reload_into_a_fresh_instance():
    heads = make_mtl()
    fresh = reload(heads, HeadsMTL(input_dim=6))
    feature = torch.randn(4, 6)
    for task_id in (1, 2, 3):
        assert torch.equal(fresh(feature, task_id), heads(feature, task_id))
    mixed = torch.tensor([3, 2, 1, 2])
    assert torch.equal(fresh(feature, mixed), heads(feature, mixed))


# --- HeadSTL ----------------------------------------------------------------------------------


def test_stl_logits_shape_and_values():
    torch.manual_seed(0)
    head = HeadSTL(input_dim=6, num_classes=4)
    feature = torch.randn(3, 6)
    logits = head(feature)
    assert logits.shape == (3, 4)
    assert torch.equal(logits, nn.functional.linear(feature, head.weight, head.bias))


def test_stl_feature_dim_mismatch_names_input_dim():
    with pytest.raises(ValueError, match=r"\(batch, 6\); got \(3, 5\).*input_dim"):
        HeadSTL(input_dim=6, num_classes=4)(torch.randn(3, 5))


def test_stl_survives_reload_into_a_fresh_instance():
    torch.manual_seed(0)
    head = HeadSTL(input_dim=6, num_classes=4)
    fresh = reload(head, HeadSTL(input_dim=6, num_classes=4))
    feature = torch.randn(3, 6)
    assert torch.equal(fresh(feature), head(feature))


@pytest.mark.parametrize("heads_class", [HeadsTIL, HeadsCIL])
def test_new_heads_follow_the_modules_dtype(heads_class):
    heads = heads_class(6).double()
    heads.setup_task_id(1, 3)
    heads.setup_task_id(2, 4)
    assert {p.dtype for p in heads.parameters()} == {torch.float64}
    assert heads(torch.randn(5, 6, dtype=torch.float64), 2).dtype == torch.float64
    assert list(heads.state_dict()) == [
        f"heads.{t}.{kind}" for t in (1, 2) for kind in ("weight", "bias")
    ]


def test_reloaded_heads_follow_the_modules_dtype():
    saved = HeadsTIL(6)
    saved.setup_task_id(1, 3)
    fresh = HeadsTIL(6).double()
    fresh.load_state_dict(saved.state_dict())
    assert fresh.heads["1"].weight.dtype == torch.float64
    assert torch.equal(fresh.heads["1"].weight, saved.heads["1"].weight.double())
