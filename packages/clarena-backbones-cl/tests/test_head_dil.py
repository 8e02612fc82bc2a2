"""HeadDIL: one head shared by every task, same class count enforced, reload into a fresh head."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from clarena.cl import HeadDIL


def make_dil() -> HeadDIL:
    torch.manual_seed(0)
    head = HeadDIL(input_dim=8)
    for task_id in (1, 3, 2):
        head.setup_task_id(task_id, 4)
    return head


def test_every_task_uses_the_one_shared_head():
    head = make_dil()
    feature = torch.randn(5, 8)
    linear = head.get_head()
    expected = nn.functional.linear(feature, linear.weight, linear.bias)
    for task_id in (None, 1, 2, 3, 99):
        assert torch.equal(head(feature, task_id), expected)
    assert [name for name, _ in head.named_parameters()] == ["head.weight", "head.bias"]
    assert head.get_head(1) is head.get_head(3) is head.head
    assert head.task_ids == [1, 3, 2]
    assert head.task_id == 2
    assert head.num_classes == 4
    assert head.if_head_setup()


def test_training_one_task_moves_the_head_of_all_tasks():
    head = make_dil()
    feature = torch.randn(5, 8)
    before = head(feature, 1).detach().clone()
    head.setup_task_id(3, 4)
    head(feature, 3).sum().backward()
    with torch.no_grad():
        for parameter in head.parameters():
            parameter -= parameter.grad
    assert not torch.equal(head(feature, 1), before)


def test_a_task_with_another_class_count_is_refused():
    head = make_dil()
    weight = head.head.weight
    with pytest.raises(
        ValueError, match=r"task 5 has 3 classes but the head shared by tasks \[1, 3, 2\] has 4"
    ):
        head.setup_task_id(5, 3)
    assert head.head.weight is weight
    assert 5 not in head.task_ids
    head.setup_task_id(1, 4)  # the same count again is fine
    assert head.head.weight is weight


@pytest.mark.parametrize("num_classes", [0, -1, 2.0, True])
def test_bad_class_counts_and_inputs_are_refused(num_classes):
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        HeadDIL(input_dim=8).setup_task_id(1, num_classes)
    with pytest.raises(TypeError, match="task_id must be an integer"):
        HeadDIL(input_dim=8).setup_task_id("1", 2)
    with pytest.raises(ValueError, match="input_dim must be a positive integer"):
        HeadDIL(input_dim=0)
    with pytest.raises(RuntimeError, match="no task is set up"):
        HeadDIL(input_dim=8)(torch.randn(2, 8))
    with pytest.raises(ValueError, match=r"features of shape \(batch, 8\)"):
        make_dil()(torch.randn(2, 7))
    assert not HeadDIL(input_dim=8).if_head_setup()


def test_reload_into_a_fresh_instance_gives_identical_outputs():
    head = make_dil()
    buffer = io.BytesIO()
    torch.save(head.state_dict(), buffer)
    buffer.seek(0)
    fresh = HeadDIL(input_dim=8)
    result = fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    feature = torch.randn(5, 8)
    assert torch.equal(fresh(feature), head(feature))
    assert fresh.task_ids == [1, 3, 2]
    assert fresh.task_id == 2
    with pytest.raises(ValueError, match="has 4"):
        fresh.setup_task_id(4, 2)
