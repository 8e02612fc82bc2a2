"""FG-AdaHAT as a Lightning algorithm: hyperparameter checks, hook placement, state."""

from __future__ import annotations

import copy
import functools
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from clarena.cl import HeadsTIL
from clarena.experiments import cli
from clarena.experiments.running.algorithms import FGAdaHAT
from clarena.experiments.running.algorithms.base import CLConfigError
from clarena.experiments.running.algorithms.fg_adahat_attribution import attribution_importance
from clarena.experiments.running.pipelines import cl as cl_pipeline  # before resume: import cycle
from clarena.experiments.runs.resume import load_resume_state
from clarena.experiments.testing import quick_run_overrides, quiet_trainer
from clarena.hat import (
    ATTRIBUTION_IMPORTANCE_TYPES,
    HATMaskMLP,
    HATMaskResNet18,
    annealed_scale,
    hat_of,
    step_importance,
)

INPUT_DIM, FEATURE_DIM, NUM_CLASSES = 12, 8, 3
SGD = functools.partial(torch.optim.SGD, lr=0.1)
REQUIRED = {
    "adjustment_intensity": 0.1,
    "importance_type": "input_weight_gradient_abs_sum",
    "importance_summing_strategy": "add_latest",
    "importance_scheduler_type": "linear_sparsity_reg",
    "neuron_to_weight_importance_aggregation_mode": "min",
}


def _model(optimizer=SGD, model_class=FGAdaHAT, **arguments) -> FGAdaHAT:
    torch.manual_seed(0)
    backbone = HATMaskMLP(INPUT_DIM, [16, 10], FEATURE_DIM)
    return model_class(backbone, HeadsTIL(FEATURE_DIM), optimizer, **(REQUIRED | arguments))


def _data(seed: int, size: int = 32) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, INPUT_DIM, generator=generator)
    return TensorDataset(inputs, torch.randint(0, NUM_CLASSES, (size,), generator=generator))


def _fit(model, task_id: int, data: TensorDataset, batch_size: int = 8, **options) -> None:
    torch.manual_seed(task_id)
    model.setup_task_id(task_id, NUM_CLASSES)
    trainer = quiet_trainer(
        limit_val_batches=0,
        **({"precision": "64-true", "max_epochs": 1} | options),
    )
    trainer.fit(model, DataLoader(data, batch_size=batch_size))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"adjustment_intensity": 0}, "adjustment_intensity (alpha) must be a number > 0; got 0"),
        ({"importance_type": "magnitude"}, "unknown importance_type 'magnitude'; use one of"),
        (
            {"importance_summing_strategy": "add"},
            "importance_summing_strategy must be one of add_latest, add_all",
        ),
        (
            {"importance_scheduler_type": "constant_sparsity_reg"},
            "importance_scheduler_type must be one of linear_sparsity_reg, sparsity_reg",
        ),
        (
            {"neuron_to_weight_importance_aggregation_mode": "sum"},
            "neuron_to_weight_importance_aggregation_mode must be one of min, max, mean",
        ),
        ({"base_importance": -0.1}, "base_importance must be a number >= 0; got -0.1"),
        ({"base_mask_sparsity_reg": 0.0}, "base_mask_sparsity_reg must be a number > 0; got 0.0"),
        ({"base_linear": -1}, "base_linear must be a number > 0; got -1"),
        ({"filter_unmasked_importance": "yes"}, "filter_unmasked_importance must be true or"),
        (
            {"importance_summing_strategy": "linear_decrease"},
            "importance_summing_strategy 'linear_decrease' needs "
            "importance_summing_strategy_linear_step (a number > 0)",
        ),
        (
            {
                "importance_summing_strategy": "exponential_decrease",
                "importance_summing_strategy_exponential_rate": 1.0,
            },
            "importance_summing_strategy_exponential_rate must be a number > 1; got 1.0",
        ),
        (
            {
                "importance_summing_strategy": "log_decrease",
                "importance_summing_strategy_log_base": 0.5,
            },
            "importance_summing_strategy_log_base must be a number > 1; got 0.5",
        ),
        (
            {"importance_summing_strategy_log_base": 2.0},
            "importance_summing_strategy_log_base is used only by importance_summing_strategy "
            "'log_decrease', but the strategy is 'add_latest'",
        ),
    ],
)
def test_bad_hyperparameters_are_refused_at_construction(arguments, message):
    with pytest.raises(CLConfigError) as error:
        _model(**arguments)
    assert str(error.value).startswith("FGAdaHAT: ")
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("strategy", "parameter", "value"),
    [
        ("linear_decrease", "importance_summing_strategy_linear_step", 0.5),
        ("exponential_decrease", "importance_summing_strategy_exponential_rate", 2.0),
        ("log_decrease", "importance_summing_strategy_log_base", 10.0),
    ],
)
def test_a_strategy_with_its_parameter_is_accepted(strategy, parameter, value):
    model = _model(importance_summing_strategy=strategy, **{parameter: value})
    assert model.importance.summing_strategy == strategy


def test_an_attribution_type_without_captum_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # import fails as if not installed
    with pytest.raises(CLConfigError) as error:
        _model(importance_type="deeplift_abs")
    assert str(error.value) == (
        "FGAdaHAT: importance_type 'deeplift_abs' attributes with captum, which is not "
        "installed. Install the extra: pip install 'clarena-experiments[captum]'."
    )


@pytest.mark.parametrize("importance_type", ATTRIBUTION_IMPORTANCE_TYPES)
def test_attribution_importance_leaves_training_untouched(importance_type):
    torch.manual_seed(0)
    backbone = HATMaskMLP(
        INPUT_DIM, [16, 10], FEATURE_DIM, batch_normalization="independent", dropout=0.2
    )
    model = FGAdaHAT(
        backbone, HeadsTIL(FEATURE_DIM), SGD, **(REQUIRED | {"importance_type": importance_type})
    )
    model.setup_task_id(1, NUM_CLASSES)
    model.step_scale = annealed_scale(model.s_max, 2, 4)
    inputs, labels = _data(3, size=6).tensors
    buffers = {key: value.clone() for key, value in model.named_buffers()}
    importance = attribution_importance(
        model, importance_type, inputs, labels, scale=model.step_scale
    )
    assert {name: tuple(value.shape) for name, value in importance.items()} == {
        "fc/0": (16,),
        "fc/1": (10,),
        "fc/2": (FEATURE_DIM,),
    }
    for name, value in importance.items():
        assert bool(torch.isfinite(value).all()), name
        assert bool((value >= 0).all()), name
        assert bool(value.max() > value.min()), name  # one value per unit, not one per layer
    # The extra forwards moved no batch-norm statistics, left no gradient, kept train mode.
    assert all(torch.equal(value, buffers[key]) for key, value in model.named_buffers())
    assert all(parameter.grad is None for parameter in model.parameters())
    assert all(module.training for module in model.modules())
    assert not any(hasattr(module, "rule") for module in model.modules())


def test_lrp_is_refused_on_a_resnet():
    backbone = HATMaskResNet18(input_channels=3, output_dim=FEATURE_DIM, small_input=True)
    with pytest.raises(CLConfigError, match="'lrp_abs' works with HATMaskMLP only"):
        FGAdaHAT(
            backbone, HeadsTIL(FEATURE_DIM), SGD, **(REQUIRED | {"importance_type": "lrp_abs"})
        )


def test_an_attribution_type_trains_and_closes_the_task():
    model = _model(importance_type="integrated_gradients_abs")
    _fit(model, 1, _data(1))
    _fit(model, 2, _data(2), accumulate_grad_batches=2)
    assert model.importance.finished_task_ids == [1, 2]
    assert bool((model.importance.summed > 0).any())


def test_adaptive_optimisers_warn_in_gradient_space_naming_protection_update():
    adam = functools.partial(torch.optim.Adam, lr=1e-3)
    with pytest.warns(UserWarning, match=r"FGAdaHAT with Adam and protection=gradient.*=update"):
        _model(optimizer=adam, protection="gradient")


class RecordingFGAdaHAT(FGAdaHAT):
    """Records the gradient of ``fc.0`` when the importance reads it and when the factor runs."""

    def __init__(self, *args, **kwargs):
        kwargs["importance_type"] = self.measure
        super().__init__(*args, **kwargs)
        self.seen_by_importance: list[torch.Tensor] = []
        self.before_factor: list[torch.Tensor] = []
        self.after_factor: list[torch.Tensor] = []

    def measure(self, backbone, activations, head_weight):
        self.seen_by_importance.append(backbone.fc[0].weight.grad.clone())
        return step_importance(backbone, "input_weight_gradient_abs_sum", None, head_weight)

    def condition_gradients(self):
        self.before_factor.append(self.backbone.fc[0].weight.grad.clone())
        super().condition_gradients()
        self.after_factor.append(self.backbone.fc[0].weight.grad.clone())


def test_importance_reads_the_raw_gradients_once_per_optimiser_step():
    # Gradient space: the factor rewrites the gradients after the importance read them.
    model = _model(model_class=RecordingFGAdaHAT, protection="gradient")
    _fit(model, 1, _data(1))
    # Task 2 accumulates 2 micro-batches per step: 4 micro-batches, 2 optimiser steps.
    model.seen_by_importance.clear(), model.before_factor.clear(), model.after_factor.clear()
    _fit(model, 2, _data(2, size=32), batch_size=8, accumulate_grad_batches=2)
    assert len(model.seen_by_importance) == 2
    for seen, before, after in zip(
        model.seen_by_importance, model.before_factor, model.after_factor, strict=True
    ):
        assert torch.equal(seen, before)
        # Not vacuous: task 1's importance really scaled task 2's gradients.
        assert not torch.equal(before, after)
    assert model.importance.finished_task_ids == [1, 2]


def test_gradient_accumulation_gives_the_importance_of_one_batch_of_twice_the_size():
    # An activation and output-gradient type: the micro-batches' mean |h| are averaged per step.
    model = _model(importance_type="output_weight_gradient_square_sum_x_activation_abs")
    _fit(model, 1, _data(1))
    accumulated, reference = model, copy.deepcopy(model)
    _fit(accumulated, 2, _data(2), batch_size=8, accumulate_grad_batches=2)
    _fit(reference, 2, _data(2), batch_size=16)
    torch.testing.assert_close(
        accumulated.importance.task_importance,
        reference.importance.task_importance,
        rtol=1e-12,
        atol=1e-12,
    )
    for key, parameter in accumulated.named_parameters():
        torch.testing.assert_close(
            parameter, dict(reference.named_parameters())[key], rtol=1e-12, atol=1e-12, msg=key
        )


def test_importance_state_is_in_the_state_dict_and_reloads_into_a_fresh_model():
    model = _model()
    _fit(model, 1, _data(1))
    _fit(model, 2, _data(2))
    state = model.state_dict()
    assert state["importance.task_importance"].shape == (
        2,
        sum(hat_of(model.backbone).layer_units.values()),
    )
    fresh = _model().double()  # the trained model ran in float64 ("64-true")
    for task in (1, 2):
        fresh.setup_task_id(task, NUM_CLASSES)
    fresh.load_state_dict(state)
    assert fresh.importance.finished_task_ids == [1, 2]
    assert torch.equal(fresh.importance.summed, model.importance.summed)
    assert torch.equal(fresh.importance.task_importance, model.importance.task_importance)


def test_task_importance_is_zero_on_units_the_task_did_not_keep():
    model = _model(base_importance=0.5)
    _fit(model, 1, _data(1))
    importance = model.importance.task_importance_of(1)
    for name, mask in hat_of(model.backbone).stored_mask(1).items():
        assert torch.equal(importance[name] == 0, mask == 0), name
        assert bool((importance[name][mask == 1] >= 0.5).all())


def test_resume_with_more_tasks_carries_the_importance(run_clarena):
    rest = quick_run_overrides()
    reference = run_clarena("example_clmain_fgadahat", "train_tasks=3", *rest, output="reference")
    run_dir = run_clarena("example_clmain_fgadahat", "train_tasks=2", *rest, output="extended")
    assert "DIL" in cl_pipeline.CL_PARADIGMS
    cli.main(["experiment=example_clmain_fgadahat", "train_tasks=3", *rest, f"resume={run_dir}"])
    acc = "results/acc.csv"
    assert (run_dir / acc).read_bytes() == (reference / acc).read_bytes()
    resumed = load_resume_state(run_dir)["state_dict"]
    expected = load_resume_state(reference)["state_dict"]
    assert expected["importance.task_ids"].tolist() == [1, 2, 3]
    assert resumed.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed[key], value), key
