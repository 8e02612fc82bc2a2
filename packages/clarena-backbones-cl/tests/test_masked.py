"""The shared mask machinery: MaskedBackbone, TaskMaskStore and check_optimizer."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from clarena.backbones import MLP, extends_arguments
from clarena.cl import MaskedBackbone, TaskBatchNorm, TaskMaskStore, check_optimizer


class _FixedUsage(MaskedBackbone, MLP):
    """An MLP whose layers report fixed usage: fc/0 uses 3 of 8, fc/1 all 4."""

    @extends_arguments(MLP)
    def __init__(self, *, batch_normalization: str | bool | None = None, **arguments: Any) -> None:
        self._init_batch_norm(self._build_family(MLP, batch_normalization, arguments))

    def _layer_usage(self) -> dict[str, tuple[int, int]]:
        return {"fc/0": (3, 8), "fc/1": (4, 4)}


def test_capacity_is_the_exact_used_fraction_overall_and_per_layer() -> None:
    backbone = _FixedUsage(5, [8], 4)
    assert backbone.capacity_per_layer() == {"fc/0": 3 / 8, "fc/1": 1.0}
    assert backbone.capacity() == 7 / 12
    with pytest.warns(DeprecationWarning, match=r"use capacity_per_layer\(\)"):
        assert backbone.layer_capacity() == backbone.capacity_per_layer()


def test_independent_batch_norm_gives_each_set_up_task_its_own() -> None:
    backbone = _FixedUsage(5, [8], 4, batch_normalization="independent")
    norm = backbone.fc_bn[0]
    assert isinstance(norm, TaskBatchNorm)
    backbone.setup_task_id(2)
    backbone.setup_task_id(7)
    assert list(norm.norms) == ["2", "7"]
    backbone._select_task_batch_norms(2)
    assert norm.active_task == 2
    assert _FixedUsage(5, [8], 4, batch_normalization="shared").batch_norm_mode == "shared"


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
