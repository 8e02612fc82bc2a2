"""``create_saved_children``: per-task children a state dict holds are created before loading."""

from __future__ import annotations

import torch
from torch import nn

from clarena.cl import TaskBatchNorm, create_saved_children


def test_children_are_created_in_saved_order_from_their_entries_and_existing_ones_kept() -> None:
    container = nn.ModuleDict({"2": nn.Linear(3, 1)})
    kept = container["2"]
    state = {
        "heads.5.weight": torch.zeros(4, 3),
        "heads.5.bias": torch.zeros(4),
        "heads.2.weight": torch.zeros(1, 3),
        "other.9.weight": torch.zeros(7, 3),
    }
    create_saved_children(
        container, state, "heads.", lambda saved: nn.Linear(3, saved["weight"].shape[0])
    )
    assert list(container) == ["2", "5"]
    assert container["2"] is kept
    assert container["5"].out_features == 4


def test_batch_norms_recreated_into_an_evaluating_module_evaluate() -> None:
    trained = TaskBatchNorm(nn.BatchNorm1d(3))
    trained.select(1, create=True)
    trained(torch.randn(8, 3) * 5 + 2)
    trained.eval()
    fresh = TaskBatchNorm(nn.BatchNorm1d(3)).eval()
    fresh.load_state_dict(trained.state_dict())
    assert not fresh.norms["1"].training
    fresh.select(1)
    batch = torch.randn(8, 3)
    assert torch.equal(fresh(batch), trained(batch))
