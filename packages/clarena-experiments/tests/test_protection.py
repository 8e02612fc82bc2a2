"""``cl_algorithm.protection``: update-space protection (the default) against the papers' gradient
conditioning, through Lightning's loop and the CLI."""

from __future__ import annotations

import copy
import csv
import functools
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import HeadsTIL
from clarena.experiments.running.algorithms import HAT, WSN, AdaHAT, FGAdaHAT
from clarena.experiments.running.algorithms.base import CLConfigError
from clarena.experiments.testing import quiet_trainer
from clarena.hat import HATMaskMLP
from clarena.wsn import WSNMaskMLP

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3
SGD = functools.partial(torch.optim.SGD, lr=0.1)
ADAMW = functools.partial(torch.optim.AdamW, lr=0.01, weight_decay=0.05)


def _model(name: str, optimizer=SGD, **options):
    torch.manual_seed(0)
    heads = HeadsTIL(FEATURE_DIM)
    if name == "wsn":
        backbone = WSNMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
        return WSN(backbone, heads, optimizer, mask_percentage=0.5, **options)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent")
    if name == "adahat":
        return AdaHAT(backbone, heads, optimizer, **options)
    if name == "fgadahat":
        return FGAdaHAT(
            backbone,
            heads,
            optimizer,
            adjustment_intensity=0.1,
            importance_type="output_weight_abs_sum",
            importance_summing_strategy="add_latest",
            importance_scheduler_type="sparsity_reg",
            neuron_to_weight_importance_aggregation_mode="min",
            **options,
        )
    return HAT(backbone, heads, optimizer, **options)


def _data(seed: int, size: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, INPUT_DIM, generator=generator, dtype=torch.float64)
    return TensorDataset(inputs, torch.randint(0, NUM_CLASSES, (size,), generator=generator))


def _fit(model, task_id: int, **options) -> None:
    torch.manual_seed(task_id)
    model.setup_task_id(task_id, NUM_CLASSES)
    trainer = quiet_trainer(
        limit_val_batches=0, **({"precision": "64-true", "max_epochs": 2} | options)
    )
    trainer.fit(model, DataLoader(_data(task_id), batch_size=8))


def _task_one_logits(model, probe):
    model.eval()
    with torch.no_grad():
        logits, _ = model(probe, "test", 1)
    model.train()
    return logits


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_an_unknown_protection_is_refused_naming_the_choices(name):
    with pytest.raises(
        CLConfigError,
        match=rf"^{name.upper()}: protection must be one of 'update', 'gradient'; got 'weights'\. "
        r"Set cl_algorithm.protection to one of them\.$",
    ):
        _model(name, protection="weights")


@pytest.mark.parametrize("name", ["hat", "adahat", "wsn"])
def test_weight_decay_is_refused_in_gradient_space_and_accepted_in_update_space(name):
    with pytest.raises(
        CLConfigError,
        match=r"refuses weight_decay=0.05 with protection=gradient.*protection=update",
    ):
        _model(name, ADAMW, protection="gradient")
    model = _model(name, ADAMW)
    model.setup_task_id(1, NUM_CLASSES)
    assert isinstance(model.configure_optimizers(), torch.optim.AdamW)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_update_and_gradient_space_train_bit_identically_without_weight_decay(name, optimizer):
    # Hard factors and a fresh optimiser per task: a zeroed gradient leaves a protected entry
    # where it was under SGD and under Adam (zero moments) either way, and the free entries take
    # the same steps; so the recorded runs of HAT and WSN do not change.
    make = SGD if optimizer == "sgd" else functools.partial(torch.optim.Adam, lr=0.01)
    update, gradient = _model(name, make), _model(name, make, protection="gradient")
    for model in (update, gradient):
        for task_id in (1, 2):
            _fit(model, task_id, accumulate_grad_batches=2, max_epochs=1)
    updated, conditioned = update.state_dict(), gradient.state_dict()
    assert updated.keys() == conditioned.keys()
    for key, value in updated.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, conditioned[key]), key
        else:
            assert value == conditioned[key], key


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_task_one_stays_bit_exact_under_adamw_with_decay_and_accumulation(name):
    model = _model(name, ADAMW)
    probe = _data(99, size=6).tensors[0]
    _fit(model, 1)
    before = _task_one_logits(model, probe)
    layer = model.backbone.get_layer_by_name(model.backbone.weighted_layer_names[1])
    shared = layer.weight.detach().clone()
    for task_id in (2, 3):
        _fit(model, task_id, accumulate_grad_batches=2)
    assert not torch.equal(layer.weight, shared)  # later tasks trained the shared layer
    assert torch.equal(_task_one_logits(model, probe), before)


@pytest.mark.parametrize("name", ["adahat", "fgadahat"])
def test_soft_factors_in_update_space_take_the_papers_sgd_steps(name):
    # Under SGD the per-step update factor is the paper's gradient factor (up to the rounding of
    # θ + f (θ' - θ) against θ - lr f g); a missing or doubled factor is far off.
    update, gradient = _model(name), _model(name, protection="gradient")
    for model in (update, gradient):
        _fit(model, 1)
    snapshot = copy.deepcopy(update.backbone.state_dict())
    for model in (update, gradient):
        _fit(model, 2)
    moved = 0.0
    for key, value in update.backbone.state_dict().items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        torch.testing.assert_close(
            value, gradient.backbone.state_dict()[key], rtol=1e-9, atol=1e-12
        )
        if key in snapshot:  # task 2's own batch norm is new
            moved = max(moved, float((value - snapshot[key]).abs().max()))
    assert moved > 1e-3  # task 2 trained


Run = Callable[..., Path]


def test_cli_hat_with_adamw_and_weight_decay_keeps_task_one_in_update_space(run_clarena: Run):
    run_dir = run_clarena(
        "example_clmain_hat",
        "train_tasks=3",
        "trainer.max_epochs=1",
        "optimizer=adam",
        "optimizer._target_=torch.optim.AdamW",
        "optimizer.lr=0.001",
        "optimizer.weight_decay=0.01",
        "lightning_loggers=none",
        "save_model=false",
    )
    with (run_dir / "results" / "acc.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 3
    for task in (1, 2):
        values = [row[f"test_on_task_{task}"] for row in rows if row[f"test_on_task_{task}"]]
        assert len(values) == 4 - task
        assert len(set(values)) == 1, values
    assert float(rows[0]["test_on_task_1"]) > 0.5  # it learned
