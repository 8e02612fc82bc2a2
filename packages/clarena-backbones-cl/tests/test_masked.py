"""The shared mask machinery: TaskMaskStore and check_optimizer (capacity: test_method_contract)."""

from __future__ import annotations

import pytest
import torch

from clarena.cl import TaskMaskStore, check_optimizer


def test_mask_store_reloads_every_task_in_storing_order_into_a_fresh_store() -> None:
    shapes = {"a/weight": (3, 5), "b": (2,)}
    store = TaskMaskStore(shapes)
    masks = {t: {k: torch.rand(s) < 0.5 for k, s in shapes.items()} for t in (4, 1)}
    for task_id, task_masks in masks.items():
        store.store(task_id, task_masks)
    assert store.nbytes(4) == 2 + 1
    fresh = TaskMaskStore(shapes)
    fresh.load_state_dict(store.state_dict())
    assert fresh.task_ids == [4, 1]
    for task_id, task_masks in masks.items():
        unpacked = fresh.unpack(task_id)
        assert all(torch.equal(unpacked[k], m) for k, m in task_masks.items())
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        store.store(5, {"a/weight": torch.ones(3, 5)})


def test_check_optimizer_requires_a_fresh_optimiser_by_default_and_names_its_owner() -> None:
    parameter = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9)
    check_optimizer(optimizer)
    parameter.grad = torch.ones(2)
    optimizer.step()
    with pytest.raises(ValueError, match=r"^this SGD already holds state"):
        check_optimizer(optimizer)
    check_optimizer(optimizer, require_fresh=False)
    with pytest.raises(
        ValueError, match=r"^PackNet: AdamW parameter group 0 has weight_decay=0.01"
    ):
        check_optimizer(torch.optim.AdamW([parameter]), owner="PackNet")
