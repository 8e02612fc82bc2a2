"""FG-AdaHAT: step scaling and task accumulation, summing strategies, schedulers, aggregation,
the gradient factor (and its reduction to AdaHAT), and the importance state."""

from __future__ import annotations

import copy
import io
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from clarena.hat import (
    SUMMING_STRATEGIES,
    FGAdaHATImportance,
    HATMaskMLP,
    HATMaskResNet18,
    adahat_condition_gradients,
    annealed_scale,
    clamp_task_embedding,
    compensate_embedding_gradients,
    fg_adahat_condition_gradients,
    hat_of,
    layer_sparsity,
    minmax_scale,
    sparsity_regularization,
    step_importance,
    weight_importance,
)

STRATEGY_ARGS = {"linear_step": 0.5, "exponential_rate": 2.0, "log_base": 3.0}


def tiny_mlp(**kwargs):
    """fc/0: 3 -> 2 units, fc/1: 2 -> 2 units."""
    return HATMaskMLP(input_dim=3, hidden_dims=[2], output_dim=2, **kwargs)


def store_random_masks(backbone, num_tasks, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for task_id in range(1, num_tasks + 1):
        backbone.setup_task_id(task_id)
        with torch.no_grad():
            for embedding in backbone.task_embedding.values():
                embedding.copy_(torch.randn(embedding.shape, generator=generator))
        hat_of(backbone).store_mask()
    backbone.setup_task_id(num_tasks + 1)


def random_gradients(backbone, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for parameter in backbone.parameters():
        parameter.grad = torch.randn(parameter.shape, generator=generator)


def importance_for(backbone, strategy="add_latest", **kwargs):
    return FGAdaHATImportance(hat_of(backbone).layer_units, strategy, **kwargs)


# --- step scaling and task accumulation --------------------------------------------------------


def test_minmax_scale_endpoints_constant_and_tiny_ranges():
    assert torch.equal(minmax_scale(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(minmax_scale(torch.full((4,), 7.0)), torch.zeros(4))
    tiny = torch.tensor([1e-30, 3e-30, 2e-30])
    scaled = minmax_scale(tiny)
    assert scaled.min() == 0
    assert scaled.max() == 1  # no additive epsilon collapsing tiny ranges


def test_end_task_averages_scaled_steps_times_mask_adds_base_and_filters():
    importance = FGAdaHATImportance({"a": 3, "b": 2}, "add_latest", base_importance=0.25)
    steps = [
        (
            {"a": torch.tensor([1.0, 3.0, 2.0]), "b": torch.tensor([5.0, 1.0])},
            {"a": torch.tensor([1.0, 0.5, 0.0]), "b": torch.tensor([1.0, 1.0])},
        ),
        (
            {"a": torch.tensor([4.0, 4.0, 0.0]), "b": torch.tensor([2.0, 2.0])},
            {"a": torch.tensor([1.0, 1.0, 1.0]), "b": torch.tensor([0.5, 1.0])},
        ),
    ]
    for values, mask in steps:
        importance.add_step(values, training_mask=mask)
    assert int(importance.num_steps) == 2
    stored = {"a": torch.tensor([1.0, 1.0, 0.0]), "b": torch.tensor([0.0, 1.0])}
    task = importance.end_task(1, stored)
    # step 1 scaled a: (0, 1, .5) * mask (1, .5, 0) = (0, .5, 0); b: (1, 0)
    # step 2 scaled a: (1, 1, 0); b: constant -> (0, 0)
    expected_a = (torch.tensor([0.0, 0.5, 0.0]) + torch.tensor([1.0, 1.0, 0.0])) / 2 + 0.25
    expected_b = (torch.tensor([1.0, 0.0]) + torch.tensor([0.0, 0.0])) / 2 + 0.25
    torch.testing.assert_close(task["a"], expected_a * stored["a"], rtol=0, atol=0)
    torch.testing.assert_close(task["b"], expected_b * stored["b"], rtol=0, atol=0)
    assert int(importance.num_steps) == 0
    assert torch.equal(importance.step_sum, torch.zeros(5))
    assert torch.equal(importance.carried_importance()["a"], task["a"])


def test_accumulation_refuses_what_it_cannot_use():
    importance = FGAdaHATImportance({"a": 2}, "add_latest")
    with pytest.raises(RuntimeError, match="ended without any add_step"):
        importance.end_task(1, {"a": torch.ones(2)})
    with pytest.raises(ValueError, match="needs the training_mask"):
        importance.add_step({"a": torch.ones(2)})
    importance.add_step({"a": torch.ones(2)}, {"a": torch.ones(2)})
    with pytest.raises(ValueError, match="needs the task's stored binary mask"):
        importance.end_task(1)
    with pytest.raises(ValueError, match="has 3 values; the layer has 2 units"):
        importance.add_step({"a": torch.ones(3)}, {"a": torch.ones(3)})
    with pytest.raises(ValueError, match="no entry for layers"):
        importance.add_task(1, {})


@pytest.mark.parametrize(
    ("strategy", "kwargs", "message"),
    [
        ("add_most", {}, "unknown importance summing strategy 'add_most'"),
        ("linear_decrease", {}, "needs linear_step > 0"),
        ("exponential_decrease", {"exponential_rate": 1.0}, "needs exponential_rate > 1"),
        ("log_decrease", {"log_base": 0.5}, "needs log_base > 1"),
    ],
)
def test_summing_arguments_are_checked_when_built(strategy, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FGAdaHATImportance({"a": 2}, strategy, **kwargs)


# --- summing across tasks ----------------------------------------------------------------------


def closed_form(strategy, task_importances):
    """S after the tasks, by the running update (add_*) or the explicit weighted sum."""
    total = torch.zeros_like(task_importances[0])
    if strategy == "add_latest":
        for current in task_importances:
            total = total + current
        return total
    if strategy in ("add_all", "add_average"):
        for t in range(1, len(task_importances) + 1):
            so_far = sum(task_importances[:t])
            total = total + (so_far if strategy == "add_all" else so_far / t)
        return total
    big_t = len(task_importances)
    for k, current in enumerate(task_importances, start=1):
        age = big_t - k + 1
        weight = {
            "linear_decrease": STRATEGY_ARGS["linear_step"] * (big_t - k) + 1,
            "quadratic_decrease": age**2,
            "cubic_decrease": age**3,
            "exponential_decrease": STRATEGY_ARGS["exponential_rate"] ** age,
            "log_decrease": math.log(age, STRATEGY_ARGS["log_base"]) + 1,
            "factorial_decrease": math.factorial(age),
        }[strategy]
        total = total + weight * current
    return total


@pytest.mark.parametrize("strategy", SUMMING_STRATEGIES)
def test_every_summing_strategy_matches_its_closed_form_after_four_tasks(strategy):
    importance = FGAdaHATImportance({"a": 3, "b": 2}, strategy, **STRATEGY_ARGS).double()
    generator = torch.Generator().manual_seed(3)
    tasks = [torch.rand(5, generator=generator, dtype=torch.float64) for _ in range(4)]
    for task_id, value in zip((7, 2, 9, 4), tasks, strict=True):
        importance.add_task(task_id, importance.split(value))
        expected = closed_form(strategy, tasks[: importance.task_ids.numel()])
        torch.testing.assert_close(importance.summed, expected, rtol=1e-12, atol=0)
    assert importance.finished_task_ids == [7, 2, 9, 4]
    torch.testing.assert_close(importance.task_importance_of(9)["a"], tasks[2][:3])


def test_add_all_is_linear_decrease_with_step_one():
    tasks = [torch.rand(2, dtype=torch.float64) for _ in range(5)]
    results = []
    for strategy, kwargs in (("add_all", {}), ("linear_decrease", {"linear_step": 1.0})):
        importance = FGAdaHATImportance({"a": 2}, strategy, **kwargs).double()
        for task_id, value in enumerate(tasks, start=1):
            importance.add_task(task_id, {"a": value})
        results.append(importance.summed)
    torch.testing.assert_close(results[0], results[1], rtol=1e-14, atol=0)


@pytest.mark.parametrize("strategy", SUMMING_STRATEGIES)
def test_summed_importance_and_factors_stay_finite_at_25_tasks(strategy):
    importance = FGAdaHATImportance(
        {"a": 3}, strategy, linear_step=1.0, exponential_rate=10.0, log_base=2.0
    )
    for task_id in range(1, 26):
        importance.add_task(task_id, {"a": torch.tensor([1.0, 0.5, 0.0])})
    assert torch.isfinite(importance.summed).all()
    summed = importance.summed
    factor = 0.1 / (summed * 1.1 + 0.1)
    assert torch.isfinite(factor).all()
    assert (factor > 0).logical_or(summed > 1e30).all()
    assert factor[2] == 1  # a unit no task used keeps its gradient


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["factorial_decrease", "exponential_decrease"])
def test_training_25_tasks_keeps_the_weights_finite(strategy):
    torch.manual_seed(0)
    mlp = HATMaskMLP(input_dim=6, hidden_dims=[8], output_dim=4)
    head = nn.Linear(4, 2)
    importance = FGAdaHATImportance(hat_of(mlp).layer_units, strategy, exponential_rate=10.0)
    for task_id in range(1, 26):
        mlp.setup_task_id(task_id)
        optimizer = torch.optim.SGD([*mlp.parameters(), *head.parameters()], lr=0.1)
        for batch_idx in (1, 2):
            x = torch.randn(8, 6)
            y = (x.sum(1) > 0).long()
            optimizer.zero_grad()
            feature, mask, activations = mlp(
                x, "train", s_max=400.0, batch_idx=batch_idx, num_batches=2
            )
            cumulative = hat_of(mlp).cumulative_mask()
            loss = nn.functional.cross_entropy(head(feature), y)
            loss = loss + 0.75 * sparsity_regularization(mask, cumulative)
            loss.backward()
            step = step_importance(mlp, "output_weight_gradient_abs_sum", activations, head.weight)
            importance.add_step(step, mask)
            sparsity = {k: v.detach() for k, v in layer_sparsity(mask, cumulative).items()}
            fg_adahat_condition_gradients(mlp, importance, sparsity, alpha=0.1)
            compensate_embedding_gradients(mlp, annealed_scale(400.0, batch_idx, 2), 400.0)
            optimizer.step()
            clamp_task_embedding(mlp)
        hat_of(mlp).store_mask()
        importance.end_task(task_id, hat_of(mlp).stored_mask(task_id))
    assert all(torch.isfinite(p).all() for p in mlp.parameters())
    assert torch.isfinite(importance.summed).all()


# --- the gradient factor -----------------------------------------------------------------------


def test_factor_is_a_no_op_before_any_finished_task():
    mlp = tiny_mlp()
    mlp.setup_task_id(1)
    random_gradients(mlp)
    before = [p.grad.clone() for p in mlp.parameters()]
    fg_adahat_condition_gradients(mlp, importance_for(mlp), {"fc/0": 0.3, "fc/1": 0.2}, 0.1)
    assert all(torch.equal(p.grad, b) for p, b in zip(mlp.parameters(), before, strict=True))


@pytest.mark.parametrize("aggregation", ["min", "max", "mean"])
@pytest.mark.parametrize(
    "scheduler", ["sparsity_reg", "linear_sparsity_reg", "summative_mask_sparsity_reg"]
)
@pytest.mark.parametrize("filter_by_cumulative_mask", [False, True])
def test_factor_by_hand(aggregation, scheduler, filter_by_cumulative_mask):
    mlp = tiny_mlp()
    masks = [{"fc/0": [1.0, -1.0], "fc/1": [1.0, 1.0]}, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, 1.0]}]
    for task_id, values in enumerate(masks, start=1):
        mlp.setup_task_id(task_id)
        with torch.no_grad():
            for name, value in values.items():
                mlp.task_embedding[name].copy_(torch.tensor(value))
        hat_of(mlp).store_mask()
    mlp.setup_task_id(3)
    importance = importance_for(mlp)
    s0, s1 = [0.6, 0.2], [0.3, 0.9]  # S of fc/0 and fc/1
    importance.add_task(1, {"fc/0": torch.tensor(s0), "fc/1": torch.tensor(s1)})
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    alpha, b_r, b_l = 0.5, 0.1, 10.0
    sparsity = {"fc/0": 0.5, "fc/1": 0.25}
    fg_adahat_condition_gradients(
        mlp,
        importance,
        sparsity,
        alpha,
        scheduler,
        aggregation,
        b_r,
        b_l,
        filter_by_cumulative_mask,
    )
    agg = {"min": min, "max": max, "mean": lambda a, b: (a + b) / 2}[aggregation]
    summative = {"fc/0": [2.0, 0.0], "fc/1": [1.0, 2.0]}
    cumulative = {"fc/0": [1.0, 0.0], "fc/1": [1.0, 1.0]}

    def factor(layer, i, j):
        """j is None for a bias; fc/0 reads the raw input (no input side)."""
        s_out = (s0 if layer == "fc/0" else s1)[i]
        if j is None or layer == "fc/0":
            importance_ij = s_out
            count = summative[layer][i]
            cum = cumulative[layer][i]
        else:
            importance_ij = agg(s_out, s0[j])
            count = min(summative[layer][i], summative["fc/0"][j])
            cum = min(cumulative[layer][i], cumulative["fc/0"][j])
        c = sparsity[layer] + b_r
        if scheduler == "linear_sparsity_reg":
            c *= 3 + b_l
        elif scheduler == "summative_mask_sparsity_reg":
            c *= count + b_l
        if filter_by_cumulative_mask:
            importance_ij *= cum
        return alpha / (c * importance_ij + alpha)

    expected_w0 = torch.tensor([[factor("fc/0", i, j) for j in range(3)] for i in range(2)])
    expected_w1 = torch.tensor([[factor("fc/1", i, j) for j in range(2)] for i in range(2)])
    torch.testing.assert_close(mlp.fc[0].weight.grad, expected_w0)
    torch.testing.assert_close(
        mlp.fc[0].bias.grad, torch.tensor([factor("fc/0", i, None) for i in range(2)])
    )
    torch.testing.assert_close(mlp.fc[1].weight.grad, expected_w1)
    torch.testing.assert_close(
        mlp.fc[1].bias.grad, torch.tensor([factor("fc/1", i, None) for i in range(2)])
    )


def test_factor_arguments_are_checked():
    mlp = tiny_mlp()
    mlp.setup_task_id(1)
    importance = importance_for(mlp)
    sparsity = {"fc/0": 0.0, "fc/1": 0.0}
    for kwargs, message in (
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 0.1, "scheduler": "constant_sparsity_reg"}, "unknown importance scheduler"),
        ({"alpha": 0.1, "aggregation": "median"}, "unknown neuron-to-weight aggregation"),
        ({"alpha": 0.1, "base_mask_sparsity_reg": 0.0}, "base_mask_sparsity_reg must be > 0"),
    ):
        with pytest.raises(ValueError, match=message):
            fg_adahat_condition_gradients(mlp, importance, sparsity, **kwargs)


def resnet_with_tasks():
    torch.manual_seed(0)
    resnet = HATMaskResNet18(small_input=True)  # independent batch norm per task
    store_random_masks(resnet, 3)
    return resnet


@pytest.mark.parametrize("family", ["mlp", "resnet"])
def test_fg_adahat_with_masks_as_importance_is_adahat(family):
    if family == "resnet":
        backbone = resnet_with_tasks()
    else:
        backbone = HATMaskMLP(
            input_dim=5, hidden_dims=[6, 4], output_dim=3, batch_normalization="shared"
        )
        store_random_masks(backbone, 3)
    importance = importance_for(backbone, "add_latest", base_importance=0.0)
    for task_id in hat_of(backbone).stored_task_ids:
        importance.add_task(task_id, hat_of(backbone).stored_mask(task_id))
    other = copy.deepcopy(backbone)
    random_gradients(backbone)
    random_gradients(other)
    generator = torch.Generator().manual_seed(5)
    sparsity = {
        name: float(torch.rand((), generator=generator)) for name in backbone.weighted_layer_names
    }
    adahat_condition_gradients(other, sparsity, alpha=0.3, epsilon=0.2, aggregation="min")
    fg_adahat_condition_gradients(
        backbone,
        importance,
        sparsity,
        alpha=0.3,
        scheduler="sparsity_reg",
        aggregation="min",
        base_mask_sparsity_reg=0.2,
    )
    pairs = list(zip(backbone.named_parameters(), other.named_parameters(), strict=True))
    changed = 0
    for (name, mine), (_, theirs) in pairs:
        assert torch.equal(mine.grad, theirs.grad), name
        changed += int(not torch.equal(mine.grad, torch.ones_like(mine.grad)))
    assert changed > 0


@pytest.mark.parametrize(
    ("scheduler", "aggregation", "low"),
    [
        ("linear_sparsity_reg", "mean", 0.0),
        ("summative_mask_sparsity_reg", "mean", 0.0),
        ("summative_mask_sparsity_reg", "min", 0.0),
        # Separable weight parts: the factor of Agg(S_i, S_j) from the per-unit factors.
        ("sparsity_reg", "min", 0.0),
        ("sparsity_reg", "max", 0.0),
        ("linear_sparsity_reg", "min", 0.0),
        ("sparsity_reg", "min", -0.5),  # negative importance: the per-weight arithmetic
    ],
)
def test_fused_factor_is_bit_exact_to_the_per_layer_loop(scheduler, aggregation, low):
    """One fused multiply over all gradients gives the per-layer loop's gradients bit for bit."""
    torch.manual_seed(0)
    backbone = HATMaskResNet18(small_input=True, bias=True, batch_normalization="shared")
    store_random_masks(backbone, 2)
    importance = importance_for(backbone, "add_all")
    for task_id in hat_of(backbone).stored_task_ids:
        importance.add_task(
            task_id,
            {n: torch.rand(u) * (1 - low) + low for n, u in hat_of(backbone).layer_units.items()},
        )
    loop = copy.deepcopy(backbone)
    random_gradients(backbone)
    random_gradients(loop)
    sparsity = {name: torch.rand(()) for name in backbone.weighted_layer_names}
    arguments = {"scheduler": scheduler, "aggregation": aggregation, "base_mask_sparsity_reg": 0.2}
    fg_adahat_condition_gradients(backbone, importance, sparsity, 0.3, **arguments)
    separable = backbone.__dict__.get("_fg_adahat_separable_cache", (None, None, None))[2]
    assert (separable is not None) == (
        aggregation != "mean" and scheduler != "summative_mask_sparsity_reg" and low == 0
    )
    weight_part, unit_part = weight_importance(
        loop, importance, aggregation, scheduler, 10.0, filter_by_cumulative_mask=False
    )
    for name in loop.weighted_layer_names:
        coefficient = float(sparsity[name]) + 0.2
        if scheduler == "linear_sparsity_reg":
            coefficient = coefficient * (3 + 10.0)
        rate = 0.3 / coefficient
        layer = loop.get_layer_by_name(name)
        layer.weight.grad.mul_(rate / (weight_part[name] + rate))
        layer.bias.grad.mul_(rate / (unit_part[name] + rate))
        for parameter in hat_of(loop).normalization_layer(name).parameters():
            parameter.grad.mul_(rate / (unit_part[name] + rate))
    pairs = zip(backbone.named_parameters(), loop.named_parameters(), strict=True)
    for (name, fused), (_, looped) in pairs:
        assert torch.equal(fused.grad, looped.grad), name


def test_reduction_through_end_task_with_base_one_and_the_unmasked_filter():
    """Constant step importance scales to 0, so I^t = (0 + b_I) * m^t = m^t with b_I = 1."""
    backbone = HATMaskMLP(input_dim=5, hidden_dims=[6], output_dim=3)
    store_random_masks(backbone, 2)
    importance = importance_for(backbone, base_importance=1.0, step_multiply_training_mask=False)
    for task_id in hat_of(backbone).stored_task_ids:
        importance.add_step(
            {n: torch.full((u,), 3.0) for n, u in hat_of(backbone).layer_units.items()}
        )
        importance.end_task(task_id, hat_of(backbone).stored_mask(task_id))
    other = copy.deepcopy(backbone)
    random_gradients(backbone)
    random_gradients(other)
    sparsity = {"fc/0": 0.4, "fc/1": 0.7}
    adahat_condition_gradients(other, sparsity, alpha=0.1, epsilon=0.1)
    fg_adahat_condition_gradients(backbone, importance, sparsity, alpha=0.1)
    for mine, theirs in zip(backbone.parameters(), other.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad)


# --- importance state --------------------------------------------------------------------------


def test_state_reloads_into_a_fresh_object_with_identical_adjusted_gradients():
    backbone = resnet_with_tasks()
    importance = importance_for(backbone, "exponential_decrease", exponential_rate=2.0)
    generator = torch.Generator().manual_seed(2)
    for task_id in hat_of(backbone).stored_task_ids:
        importance.add_step(
            {
                n: torch.rand(u, generator=generator)
                for n, u in hat_of(backbone).layer_units.items()
            },
            {
                n: torch.rand(u, generator=generator)
                for n, u in hat_of(backbone).layer_units.items()
            },
        )
        importance.end_task(task_id, hat_of(backbone).stored_mask(task_id))
    importance.add_step(  # a task half-way through: the running sum is state too
        {n: torch.rand(u, generator=generator) for n, u in hat_of(backbone).layer_units.items()},
        {n: torch.ones(u) for n, u in hat_of(backbone).layer_units.items()},
    )
    buffer = io.BytesIO()
    torch.save({"backbone": backbone.state_dict(), "importance": importance.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh_backbone = HATMaskResNet18(small_input=True)
    fresh_backbone.load_state_dict(saved["backbone"])
    fresh = importance_for(fresh_backbone, "exponential_decrease", exponential_rate=2.0)
    result = fresh.load_state_dict(saved["importance"])
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    for (name, mine), (_, theirs) in zip(
        importance.named_buffers(), fresh.named_buffers(), strict=True
    ):
        assert torch.equal(mine, theirs), name
    assert fresh.finished_task_ids == [1, 2, 3]

    sparsity = {name: 0.3 for name in backbone.weighted_layer_names}
    for model, state in ((backbone, importance), (fresh_backbone, fresh)):
        random_gradients(model)
        fg_adahat_condition_gradients(
            model, state, sparsity, alpha=0.1, scheduler="linear_sparsity_reg", aggregation="mean"
        )
    for mine, theirs in zip(backbone.parameters(), fresh_backbone.parameters(), strict=True):
        assert torch.equal(mine.grad, theirs.grad)


def test_to_float64_moves_the_state_and_the_factor_follows():
    mlp = tiny_mlp()
    store_random_masks(mlp, 2)
    importance = importance_for(mlp, base_importance=0.0)
    for task_id in hat_of(mlp).stored_task_ids:
        importance.add_task(task_id, hat_of(mlp).stored_mask(task_id))
    holder = nn.ModuleDict({"backbone": mlp, "importance": importance}).to(torch.float64)
    assert holder["importance"].summed.dtype == torch.float64
    assert importance.task_importance.dtype == torch.float64
    assert importance.step_sum.dtype == torch.float64
    assert importance.task_ids.dtype == torch.int64
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    fg_adahat_condition_gradients(mlp, importance, {"fc/0": 0.0, "fc/1": 0.0}, alpha=0.1)
    assert all(p.grad.dtype == torch.float64 for p in mlp.parameters())


def test_readme_fg_adahat_recipe_runs_as_written():
    readme = Path(__file__).resolve().parents[1] / "README.md"
    blocks = re.findall(r"```python\n(.*?)```", readme.read_text(), flags=re.DOTALL)
    recipe = next(block for block in blocks if "fg_adahat_condition_gradients(backbone" in block)
    namespace: dict = {}
    torch.manual_seed(0)
    exec(compile(recipe, str(readme), "exec"), namespace)
    importance, backbone = namespace["importance"], namespace["backbone"]
    assert importance.finished_task_ids == [1, 2]
    assert hat_of(backbone).stored_task_ids == [1, 2]
    assert torch.isfinite(importance.summed).all()
    assert importance.summed.max() > 0


def test_factor_follows_a_newly_finished_task():
    mlp = tiny_mlp()
    store_random_masks(mlp, 1)
    importance = importance_for(mlp)
    importance.add_task(1, {"fc/0": torch.tensor([1.0, 0.0]), "fc/1": torch.tensor([0.0, 0.0])})
    sparsity = {"fc/0": 0.0, "fc/1": 0.0}
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    fg_adahat_condition_gradients(mlp, importance, sparsity, alpha=0.1)
    assert torch.equal(mlp.fc[1].bias.grad, torch.ones(2))
    importance.add_task(2, {"fc/0": torch.tensor([0.0, 0.0]), "fc/1": torch.tensor([1.0, 0.0])})
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    fg_adahat_condition_gradients(mlp, importance, sparsity, alpha=0.1)
    rate = 0.1 / 0.1
    assert torch.equal(mlp.fc[1].bias.grad, torch.tensor([rate / (1 + rate), 1.0]))


#: One DDP rank (argv: rank, world size, store file, result path): add this rank's step,
#: all-reduce, close the task, save its importance. Run as its own interpreter, so the test does
#: not depend on how pytest imported this module.
_CLOSE_TASK_ON_RANK = """
import sys
import torch
from clarena.hat import FGAdaHATImportance

rank, world_size, store_path, result_path = int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:]
torch.distributed.init_process_group(
    "gloo", init_method=f"file://{store_path}", rank=rank, world_size=world_size
)
try:
    importance = FGAdaHATImportance({"a": 3}, "add_latest", base_importance=0.0)
    steps = [torch.tensor([0.0, 1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])]
    importance.add_step({"a": steps[rank]}, {"a": torch.ones(3)})
    importance.all_reduce_steps()
    importance.end_task(1, {"a": torch.ones(3)})
    torch.save(importance.state_dict(), f"{result_path}.{rank}")
finally:
    torch.distributed.destroy_process_group()
"""


@pytest.mark.slow
def test_all_reduce_steps_gives_every_rank_the_same_task_importance(tmp_path):
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _CLOSE_TASK_ON_RANK,
                str(rank),
                "2",
                str(tmp_path / "store"),
                str(tmp_path / "state"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    for process in ranks:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
    states = [torch.load(tmp_path / f"state.{rank}", weights_only=True) for rank in (0, 1)]
    expected = torch.tensor([0.5, 0.5, 0.25])  # the mean of both ranks' steps
    for state in states:
        assert torch.equal(state["summed"], expected)
        assert torch.equal(state["task_importance"], expected[None])
