"""The algorithms in Lightning's training loop: gradient accumulation, mixed precision, dtypes."""

from __future__ import annotations

import copy
import functools
import json
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import CLMLP, HeadsTIL
from clarena.experiments.running.algorithms import HAT, WSN, AdaHAT, Finetuning
from clarena.experiments.testing import quiet_trainer
from clarena.hat import HATMaskMLP
from clarena.wsn import WSNMaskMLP

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3
SGD = functools.partial(torch.optim.SGD, lr=0.1)


def _data(seed: int, size: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, INPUT_DIM, generator=generator)
    return TensorDataset(inputs, torch.randint(0, NUM_CLASSES, (size,), generator=generator))


def _model(name: str, batch_normalization: str | None = None, optimizer=SGD, **options):
    torch.manual_seed(0)
    heads = HeadsTIL(FEATURE_DIM)
    if name == "wsn":
        backbone = WSNMaskMLP(
            INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization=batch_normalization
        )
        return WSN(backbone, heads, optimizer, mask_percentage=0.5, **options)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization=batch_normalization)
    if name == "adahat":
        return AdaHAT(backbone, heads, optimizer, **options)
    return HAT(backbone, heads, optimizer, **options)


def _fit(model, task_id: int, data: TensorDataset, batch_size: int, **trainer_options) -> None:
    torch.manual_seed(task_id)  # the new head, embedding or scores: the same in every copy
    model.setup_task_id(task_id, NUM_CLASSES)
    options = {"precision": "64-true", "max_epochs": 1} | trainer_options
    trainer = quiet_trainer(
        limit_val_batches=0,
        **options,
    )
    trainer.fit(model, DataLoader(data, batch_size=batch_size))


@pytest.mark.parametrize("name", ["hat", "adahat", "wsn"])
def test_accumulating_two_micro_batches_steps_as_one_batch_of_twice_the_size(name):
    # Task 1 trains normally, so task 2's gradients really are conditioned by a stored mask.
    model = _model(name)
    _fit(model, 1, _data(1), batch_size=8)
    accumulated, reference = model, copy.deepcopy(model)
    before = {key: value.detach().clone() for key, value in model.named_parameters()}
    # 4 micro-batches of 8 accumulated in pairs vs 2 batches of 16, same examples in the same
    # order: both take 2 optimiser steps. Each micro-batch loss is a mean that Lightning halves,
    # so the accumulated gradient is the mean over the 16 examples, as in the reference; HAT's
    # gate scale s is annealed per optimiser step, so both use the same s at each step. What
    # differs is only the float64 summation order (micro-batch sums added, vs one sum), ~1e-16
    # relative; rewriting the gradient per micro-batch instead would compound the factors.
    _fit(accumulated, 2, _data(2), batch_size=8, accumulate_grad_batches=2)
    _fit(reference, 2, _data(2), batch_size=16)
    trained = dict(reference.named_parameters())
    for key, parameter in accumulated.named_parameters():
        torch.testing.assert_close(parameter, trained[key], rtol=1e-12, atol=1e-12, msg=key)
    # Not vacuous: task 2 trained the shared layers.
    assert not torch.equal(trained["backbone.fc.0.weight"], before["backbone.fc.0.weight"])


def _test_outputs(model, task_id: int, inputs: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(inputs, "test", task_id)
    model.train()
    return logits


@pytest.mark.parametrize("name", ["hat", "wsn"])
def test_bf16_mixed_training_keeps_earlier_test_outputs_bit_exact(name):
    model = _model(name, batch_normalization="independent")
    probe = _data(9, size=16).tensors[0]
    _fit(model, 1, _data(1), batch_size=8, precision="bf16-mixed", max_epochs=2)
    after_first = _test_outputs(model, 1, probe)
    weights = {key: value.detach().clone() for key, value in model.backbone.named_parameters()}
    _fit(model, 2, _data(2), batch_size=8, precision="bf16-mixed", max_epochs=2)
    assert after_first.dtype == torch.bfloat16
    assert torch.equal(_test_outputs(model, 1, probe), after_first)
    assert any(
        not torch.equal(value, weights[key]) for key, value in model.backbone.named_parameters()
    )


@pytest.mark.parametrize("name", ["hat", "adahat", "wsn", "finetuning"])
def test_new_task_state_follows_a_model_converted_to_double(name):
    if name == "finetuning":
        torch.manual_seed(0)
        model = Finetuning(CLMLP(INPUT_DIM, [16, 10], FEATURE_DIM), HeadsTIL(FEATURE_DIM), SGD)
    else:
        model = _model(name, batch_normalization="independent")
    model.setup_task_id(1, NUM_CLASSES)
    model.double()
    # Task 2's batch norms, head (and HAT embedding / WSN scores) are made after the conversion.
    model.setup_task_id(2, NUM_CLASSES)
    inputs, labels = _data(3, size=8).tensors
    if name in ("hat", "adahat"):
        feature, _, _ = model.backbone(inputs.double(), "validation", s_max=400.0)
    elif name == "wsn":
        feature, *_ = model.backbone(inputs.double(), "train", mask_percentage=0.5)
    else:
        feature, _ = model.backbone(inputs.double(), stage="train", task_id=2)
    loss = torch.nn.functional.cross_entropy(model.heads(feature, 2), labels)
    loss.backward()
    state = [*model.parameters(), *model.buffers()]
    assert {t.dtype for t in state if t.is_floating_point()} == {torch.float64}
    assert all(p.grad is None or p.grad.dtype == torch.float64 for p in model.parameters())


@pytest.mark.parametrize(
    "optimizer",
    [torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad],
)
def test_adahat_warns_about_adaptive_optimisers_in_gradient_space_only(optimizer):
    partial = functools.partial(optimizer, lr=1e-3, weight_decay=0.0)
    expected = (
        rf"AdaHAT with {optimizer.__name__} and protection=gradient: the optimiser cancels "
        r"the soft gradient factor.*Set cl_algorithm.protection=update"
    )
    with pytest.warns(UserWarning, match=expected):
        model = _model("adahat", optimizer=partial, protection="gradient")
    if optimizer is torch.optim.Adam:
        model.setup_task_id(1, NUM_CLASSES)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.configure_optimizers()  # the same algorithm warns once, not once per task
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _model("adahat", optimizer=partial)  # update space, the default: the factor holds


def test_adahat_accepts_sgd_with_momentum():
    model = _model("adahat", optimizer=functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9))
    model.setup_task_id(1, NUM_CLASSES)
    assert isinstance(model.configure_optimizers(), torch.optim.SGD)


def test_adahat_warns_about_an_adaptive_optimiser_a_plain_factory_builds():
    model = _model(
        "adahat", optimizer=lambda params: torch.optim.Adam(params, lr=1e-3), protection="gradient"
    )
    model.setup_task_id(1, NUM_CLASSES)
    with pytest.warns(UserWarning, match="AdaHAT with Adam and protection=gradient"):
        model.configure_optimizers()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "algorithm"),
    [("example_clmain_adahat", "AdaHAT"), ("example_clmain_fgadahat", "FGAdaHAT")],
)
def test_soft_protection_example_forgets_far_less_than_finetuning_with_the_same_optimiser(
    run_clarena, experiment: str, algorithm: str
):
    short = ("train_tasks=3", "trainer.max_epochs=2", "lightning_loggers=none", "save_model=false")
    protected = run_clarena(experiment, *short)
    finetuning = run_clarena(
        experiment, "cl_algorithm=finetuning", "backbone=clmlp", *short, output="finetuning"
    )
    measured = {
        run: json.loads((path / "results" / "summary.json").read_text())
        for run, path in (("protected", protected), ("finetuning", finetuning))
    }
    assert measured["protected"]["algorithm"] == algorithm
    # Measured with these settings: Finetuning forgets 0.063, AdaHAT 0.003, FG-AdaHAT 0.003 (full
    # examples, 5 tasks x 5 epochs: 0.225, 0.013 and -0.001; AdaHAT under Adam forgot 0.372).
    assert measured["finetuning"]["forgetting"] > 0.04
    assert measured["protected"]["forgetting"] < measured["finetuning"]["forgetting"] / 4
