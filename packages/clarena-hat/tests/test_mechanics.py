"""Parameter-wise measures and the HAT / AdaHAT training-loop functions."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from clarena.cl import TaskBatchNorm
from clarena.hat import (
    HATMaskMLP,
    HATMaskResNet18,
    adahat_condition_gradients,
    clamp_task_embedding,
    compensate_embedding_gradients,
    condition_gradients,
    hat_of,
    input_unit_measure,
    layer_sparsity,
    parameter_measures,
    sparsity_regularization,
    uncovered_parameters,
    weight_measure,
)
from clarena.hat import (
    check_optimizer as deprecated_check_optimizer,
)


def tiny_mlp(**kwargs):
    """fc/0: 3 -> 2 units, fc/1: 2 -> 2 units."""
    return HATMaskMLP(input_dim=3, hidden_dims=[2], output_dim=2, **kwargs)


def store(backbone, task_id, values):
    backbone.setup_task_id(task_id)
    with torch.no_grad():
        for name, value in values.items():
            backbone.task_embedding[name].copy_(torch.tensor(value, dtype=torch.float32))
    hat_of(backbone).store_mask()


def test_parameter_measures_aggregate_output_and_input_units():
    mlp = tiny_mlp()
    measure = {"fc/0": torch.tensor([0.2, 0.8]), "fc/1": torch.tensor([0.5, 1.0])}
    minimum = parameter_measures(mlp, measure, "min")
    maximum = parameter_measures(mlp, measure, "max")
    mean = parameter_measures(mlp, measure, "mean")
    # fc/0 is fed by the raw input: its input units count as 1.
    assert torch.equal(minimum["fc/0"][0], torch.tensor([[0.2] * 3, [0.8] * 3]))
    assert torch.equal(maximum["fc/0"][0], torch.ones(2, 3))
    assert torch.equal(minimum["fc/1"][0], torch.tensor([[0.2, 0.5], [0.2, 0.8]]))
    assert torch.equal(maximum["fc/1"][0], torch.tensor([[0.5, 0.8], [1.0, 1.0]]))
    assert torch.allclose(mean["fc/1"][0], torch.tensor([[0.35, 0.65], [0.6, 0.9]]))
    assert torch.equal(minimum["fc/1"][1], measure["fc/1"])
    with pytest.raises(ValueError, match=r"unknown aggregation 'median'; use one of 'min'"):
        parameter_measures(mlp, measure, "median")


def test_parameter_measures_shapes_match_every_resnet_parameter():
    resnet = HATMaskResNet18(small_input=True, output_dim=10, bias=True)
    measure = {name: torch.rand(n) for name, n in hat_of(resnet).layer_units.items()}
    measures = parameter_measures(resnet, measure)
    for name, (weight, bias) in measures.items():
        layer = resnet.get_layer_by_name(name)
        assert weight.shape == layer.weight.shape, name
        assert bias.shape == layer.bias.shape, name
    weight, _ = measures["layer2/0/conv1"]
    out, inp = measure["layer2/0/conv1"], input_unit_measure(resnet, measure, "layer2/0/conv1")
    assert torch.equal(weight[5, 7], torch.full((3, 3), min(out[5], inp[7]).item()))


def test_input_units_of_a_block_are_the_max_over_everything_summed_into_it():
    resnet = HATMaskResNet18(small_input=True)
    measure = {name: torch.rand(n) for name, n in hat_of(resnet).layer_units.items()}
    feeders = resnet.input_layer_names("layer2/0/conv1")
    assert set(feeders) == {"layer1/1/conv2", "layer1/0/conv2", "conv1"}
    expected = torch.stack([measure[name] for name in feeders]).amax(dim=0)
    assert torch.equal(input_unit_measure(resnet, measure, "layer2/0/conv1"), expected)
    # layer2/1's identity shortcut carries layer2/0's output: its conv2 plus its shortcut conv.
    assert set(resnet.input_layer_names("layer3/0/conv1")) == {
        "layer2/1/conv2",
        "layer2/0/conv2",
        "layer2/0/downsample/0",
    }
    expected = torch.maximum(measure["layer2/1/conv2"], measure["layer2/0/conv2"])
    expected = torch.maximum(expected, measure["layer2/0/downsample/0"])
    assert torch.equal(input_unit_measure(resnet, measure, "layer3/0/conv1"), expected)
    assert torch.equal(input_unit_measure(resnet, measure, "conv1"), torch.ones(3))


def test_condition_gradients_hard_values():
    mlp = tiny_mlp()
    store(mlp, 1, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, 1.0]})
    mlp.setup_task_id(2)
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    condition_gradients(mlp)
    assert torch.equal(mlp.fc[0].weight.grad, torch.tensor([[0.0] * 3, [1.0] * 3]))
    assert torch.equal(mlp.fc[0].bias.grad, torch.tensor([0.0, 1.0]))
    # fc/1 unit 1 is used and so is its input unit 0: only that weight is frozen.
    assert torch.equal(mlp.fc[1].weight.grad, torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(mlp.fc[1].bias.grad, torch.tensor([1.0, 0.0]))
    assert torch.equal(mlp.task_embedding["fc/0"].grad, torch.ones(2))


def test_condition_gradients_is_a_no_op_before_any_stored_task():
    mlp = tiny_mlp()
    mlp.setup_task_id(1)
    for parameter in mlp.parameters():
        parameter.grad = torch.full_like(parameter, 3.0)
    condition_gradients(mlp)
    assert all(torch.equal(p.grad, torch.full_like(p, 3.0)) for p in mlp.parameters())


@pytest.mark.parametrize("batch_normalization", ["independent", "shared", None])
def test_every_parameter_of_units_used_earlier_gets_exactly_zero_gradient(batch_normalization):
    """Coverage: shortcut convolutions, proj, biases and shared batch norm included."""
    torch.manual_seed(0)
    resnet = HATMaskResNet18(
        small_input=True, output_dim=10, bias=True, batch_normalization=batch_normalization
    )
    assert uncovered_parameters(resnet) == []
    resnet.setup_task_id(1)
    hat_of(resnet).store_mask()
    resnet.setup_task_id(2)
    for parameter in resnet.parameters():
        parameter.grad = torch.randn_like(parameter)
    condition_gradients(resnet)

    cumulative = hat_of(resnet).cumulative_mask()
    hard = parameter_measures(resnet, cumulative, "min")
    checked = {id(p) for p in resnet.task_embedding.values()}
    for name, (weight_used, bias_used) in hard.items():
        layer = resnet.get_layer_by_name(name)
        assert weight_used.sum() > 0, name
        assert (layer.weight.grad[weight_used == 1] == 0).all(), name
        assert (layer.weight.grad[weight_used == 0] != 0).all(), name
        assert (layer.bias.grad[bias_used == 1] == 0).all(), name
        checked.update({id(layer.weight), id(layer.bias)})
        norm = hat_of(resnet).normalization_layer(name)
        if isinstance(norm, TaskBatchNorm):
            for key, task_norm in norm.norms.items():
                for parameter in task_norm.parameters():
                    assert key == "2" or (parameter.grad == 0).all()
                    checked.add(id(parameter))
        elif norm is not None:
            for parameter in norm.parameters():
                assert (parameter.grad[cumulative[name] == 1] == 0).all(), name
                checked.add(id(parameter))
    every = {id(p) for p in resnet.parameters()}
    assert every == checked
    assert any(name.startswith("layer2.0.downsample.0") for name, _ in resnet.named_parameters())


def test_uncovered_parameter_is_refused():
    mlp = tiny_mlp()
    mlp.extra = nn.Linear(2, 2)
    assert uncovered_parameters(mlp) == ["extra.weight", "extra.bias"]
    mlp.setup_task_id(1)
    with pytest.raises(
        RuntimeError, match=r"\['extra.weight', 'extra.bias'\] belong to no weighted layer"
    ):
        condition_gradients(mlp)


def test_sparsity_regularization_first_task_later_task_and_full_network():
    mask = {"a": torch.tensor([0.5, 1.0]), "b": torch.tensor([0.0, 0.25, 0.75])}
    empty = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert sparsity_regularization(mask, empty).item() == pytest.approx(2.5 / 5)
    previous = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 1.0, 1.0])}
    assert sparsity_regularization(mask, previous).item() == pytest.approx(1.0 / 2)
    full = {"a": torch.ones(2), "b": torch.ones(3)}
    assert sparsity_regularization(mask, full).item() == 0.0
    per_layer = layer_sparsity(mask, previous)
    assert per_layer["a"].item() == 1.0
    assert per_layer["b"].item() == 0.0


def test_sparsity_regularization_gradient_reaches_only_free_units():
    e = torch.zeros(3, requires_grad=True)
    mask = {"a": torch.sigmoid(e)}
    sparsity_regularization(mask, {"a": torch.tensor([1.0, 0.0, 0.0])}).backward()
    assert e.grad[0] == 0
    assert e.grad[1] > 0
    assert e.grad[2] > 0


def test_embedding_gradient_compensation_formula():
    mlp = tiny_mlp()
    mlp.setup_task_id(1)
    e = torch.tensor([0.3, -2.0])
    with torch.no_grad():
        mlp.task_embedding["fc/0"].copy_(e)
    mlp.task_embedding["fc/0"].grad = torch.ones(2)
    s, s_max, thr = 37.5, 400.0, 50.0
    compensate_embedding_gradients(mlp, s, s_max, clamp_threshold=thr)
    expected = [
        s_max * (math.cosh(max(-thr, min(thr, s * v))) + 1) / (s * (math.cosh(v) + 1))
        for v in e.tolist()
    ]
    assert torch.allclose(mlp.task_embedding["fc/0"].grad, torch.tensor(expected), rtol=1e-5)
    with torch.no_grad():
        mlp.task_embedding["fc/0"].copy_(torch.tensor([9.0, -7.0]))
    clamp_task_embedding(mlp, threshold=6.0)
    assert torch.equal(mlp.task_embedding["fc/0"].detach(), torch.tensor([6.0, -6.0]))


def test_adahat_scales_gradients_by_summative_mask():
    mlp = tiny_mlp()
    store(mlp, 1, {"fc/0": [1.0, -1.0], "fc/1": [1.0, 1.0]})
    store(mlp, 2, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, 1.0]})
    mlp.setup_task_id(3)
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    sparsity = {"fc/0": torch.tensor(0.5), "fc/1": torch.tensor(0.0)}
    alpha, epsilon = 1.0, 0.1
    adahat_condition_gradients(mlp, sparsity, alpha=alpha, epsilon=epsilon)
    r0, r1 = alpha / (epsilon + 0.5), alpha / epsilon
    # fc/0: summative (2, 0); raw input units count as used by both earlier tasks.
    assert torch.allclose(mlp.fc[0].weight.grad, torch.tensor([[r0 / (2 + r0)] * 3, [1.0] * 3]))
    assert torch.allclose(mlp.fc[0].bias.grad, torch.tensor([r0 / (2 + r0), 1.0]))
    # fc/1: summative (1, 2), inputs (2, 0); min aggregation.
    assert torch.allclose(
        mlp.fc[1].weight.grad,
        torch.tensor([[r1 / (1 + r1), 1.0], [r1 / (2 + r1), 1.0]]),
    )
    assert torch.allclose(mlp.fc[1].bias.grad, torch.tensor([r1 / (1 + r1), r1 / (2 + r1)]))


def test_check_optimizer_refuses_weight_decay_and_stale_state():
    mlp = tiny_mlp()
    check_optimizer = hat_of(mlp).check_optimizer
    check_optimizer(torch.optim.SGD(mlp.parameters(), lr=0.1, momentum=0.9))
    with pytest.raises(ValueError, match=r"weight_decay=0.01.*Set weight_decay=0"):
        check_optimizer(torch.optim.AdamW(mlp.parameters()))
    with pytest.raises(ValueError, match=r"SGD parameter group 1 has weight_decay=0.5"):
        check_optimizer(
            torch.optim.SGD(
                [
                    {"params": mlp.fc[0].parameters()},
                    {"params": mlp.fc[1].parameters(), "weight_decay": 0.5},
                ],
                lr=0.1,
            )
        )
    optimizer = torch.optim.Adam(mlp.parameters())
    for parameter in mlp.parameters():
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    with pytest.raises(
        ValueError, match=r"already holds state.*create a new optimiser for each task"
    ):
        check_optimizer(optimizer)
    check_optimizer(optimizer, at_task_start=False)


def test_the_old_check_optimizer_is_a_deprecated_alias_of_the_method_contract():
    mlp = tiny_mlp()
    with pytest.warns(DeprecationWarning, match=r"mask_method.check_optimizer"):
        deprecated_check_optimizer(torch.optim.SGD(mlp.parameters(), lr=0.1))
    with (
        pytest.warns(DeprecationWarning, match=r"check_optimizer is deprecated"),
        pytest.raises(ValueError, match=r"^HAT: AdamW parameter group 0 has weight_decay=0.01"),
    ):
        deprecated_check_optimizer(torch.optim.AdamW(mlp.parameters()))
    with pytest.raises(ValueError, match=r"^HAT: AdamW parameter group 0 has weight_decay=0.01"):
        hat_of(mlp).check_optimizer(torch.optim.AdamW(mlp.parameters()))


def test_conditioning_follows_masks_stored_after_earlier_calls():
    mlp = tiny_mlp()
    store(mlp, 1, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, -1.0]})
    mlp.setup_task_id(2)
    mlp.fc[0].bias.grad = torch.ones(2)
    condition_gradients(mlp)
    assert torch.equal(mlp.fc[0].bias.grad, torch.tensor([0.0, 1.0]))
    store(mlp, 2, {"fc/0": [-1.0, 1.0], "fc/1": [-1.0, -1.0]})
    mlp.setup_task_id(3)
    mlp.fc[0].bias.grad = torch.ones(2)
    condition_gradients(mlp)
    assert torch.equal(mlp.fc[0].bias.grad, torch.tensor([0.0, 0.0]))


def test_sparsity_regularization_of_no_layer_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a mask of at least one layer; got none"):
        sparsity_regularization({}, {})


def test_a_weighted_layer_without_a_weight_is_a_clear_error(monkeypatch):
    from clarena.hat._layers import layer_weight

    backbone = tiny_mlp()
    assert layer_weight(backbone, "fc/0") is backbone.get_layer_by_name("fc/0").weight
    monkeypatch.setattr(backbone, "get_layer_by_name", lambda name: nn.ReLU())
    with pytest.raises(TypeError, match=r"weighted layer 'fc/0' has no weight tensor"):
        layer_weight(backbone, "fc/0")


# ---------------------------------------------------------------- fused mechanics against loops
# The per-layer loops the fused mechanics replaced, written out: the fused code must give the
# same gradients bit for bit (same arithmetic, fewer calls), except the regulariser's one sum.


def _loop_scale(backbone, weight_factor, unit_factor):
    for name in backbone.weighted_layer_names:
        layer = backbone.get_layer_by_name(name)
        if layer.weight.grad is not None:
            layer.weight.grad.mul_(weight_factor[name])
        if getattr(layer, "bias", None) is not None and layer.bias.grad is not None:
            layer.bias.grad.mul_(unit_factor[name])
        norm = hat_of(backbone).normalization_layer(name)
        if norm is not None and not isinstance(norm, TaskBatchNorm):
            for parameter in norm.parameters():
                parameter.grad.mul_(unit_factor[name])
    for module in hat_of(backbone).task_norms:
        for key, norm in module.norms.items():
            if key != str(backbone.task_id):
                for parameter in norm.parameters():
                    parameter.grad.zero_()


def _loop_hat(backbone):
    cumulative = hat_of(backbone).cumulative_mask()
    keep = {
        name: 1 - weight_measure(backbone, cumulative, name, "min")
        for name in backbone.weighted_layer_names
    }
    _loop_scale(backbone, keep, {name: 1 - mask for name, mask in cumulative.items()})


def _loop_adahat(backbone, sparsity, alpha, epsilon, aggregation):
    summative = hat_of(backbone).summative_mask()
    num_tasks = float(len(hat_of(backbone).stored_task_ids))
    weight_factor, unit_factor = {}, {}
    for name in backbone.weighted_layer_names:
        rate = alpha / (epsilon + float(sparsity[name]))
        measure = weight_measure(backbone, summative, name, aggregation, num_tasks)
        weight_factor[name] = rate / (measure + rate)
        unit_factor[name] = rate / (summative[name] + rate)
    _loop_scale(backbone, weight_factor, unit_factor)


def _twin_resnets(batch_normalization, tasks=2, seed=0):
    """Two identical ResNet-18s training task ``tasks + 1`` with random stored masks and grads."""
    torch.manual_seed(seed)
    first = HATMaskResNet18(
        small_input=True, output_dim=10, bias=True, batch_normalization=batch_normalization
    )
    for task_id in range(1, tasks + 1):
        first.setup_task_id(task_id)  # a fresh N(0, 1) embedding: a random mask
        hat_of(first).store_mask()
    first.setup_task_id(tasks + 1)
    second = copy.deepcopy(first)
    for (_, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    return first, second


def _assert_same_grads(first, second):
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), name


@pytest.mark.parametrize("batch_normalization", ["independent", "shared", None])
def test_fused_hat_conditioning_is_bit_exact_to_the_per_layer_loop(batch_normalization):
    fused, loop = _twin_resnets(batch_normalization)
    condition_gradients(fused)
    _loop_hat(loop)
    _assert_same_grads(fused, loop)
    condition_gradients(fused)  # the cached factors, a second step
    _loop_hat(loop)
    _assert_same_grads(fused, loop)


@pytest.mark.parametrize("aggregation", ["min", "max", "mean"])
def test_fused_adahat_is_bit_exact_to_the_per_layer_loop(aggregation):
    fused, loop = _twin_resnets("shared")
    sparsity = {name: torch.rand(()) for name in fused.weighted_layer_names}
    adahat_condition_gradients(fused, sparsity, alpha=0.3, epsilon=0.1, aggregation=aggregation)
    _loop_adahat(loop, sparsity, 0.3, 0.1, aggregation)
    _assert_same_grads(fused, loop)
    # min and max take the factors of the units (a separable weight part), mean the weights'.
    cached = fused.__dict__["_hat_mechanics_cache"][1]
    assert (cached.get("adahat-separable") is not None) == (aggregation != "mean")
    # Python floats as the sparsity give the same factors as float32 tensors of them.
    floats = {name: float(value) for name, value in sparsity.items()}
    adahat_condition_gradients(fused, floats, alpha=0.3, epsilon=0.1, aggregation=aggregation)
    _loop_adahat(loop, floats, 0.3, 0.1, aggregation)
    _assert_same_grads(fused, loop)


def test_fused_embedding_compensation_matches_the_per_layer_loop_and_clamp_is_exact():
    """The compensation runs the formula's operations on all units at once: vectorised and
    scalar cosh may differ in the last bit, so the factor is equal within 1e-6 relative."""
    torch.manual_seed(0)
    backbone = HATMaskResNet18(small_input=True, output_dim=10)
    backbone.setup_task_id(1)
    with torch.no_grad():
        for embedding in backbone.task_embedding.values():
            embedding.uniform_(-7.0, 7.0)
            embedding.grad = torch.randn_like(embedding)
    expected = {}
    s, s_max, thr = 123.456, 400.0, 50.0
    for name, embedding in backbone.task_embedding.items():
        e = embedding.detach()
        numerator = torch.cosh(torch.clamp(s * e, -thr, thr)) + 1
        expected[name] = embedding.grad * (s_max / s * numerator / (torch.cosh(e) + 1))
    compensate_embedding_gradients(backbone, s, s_max, thr)
    for name, embedding in backbone.task_embedding.items():
        torch.testing.assert_close(embedding.grad, expected[name], rtol=1e-6, atol=0)
    clamped = {n: e.detach().clamp(-6.0, 6.0) for n, e in backbone.task_embedding.items()}
    clamp_task_embedding(backbone, 6.0)
    for name, embedding in backbone.task_embedding.items():
        assert torch.equal(embedding.detach(), clamped[name]), name


def test_fused_sparsity_regularization_matches_per_layer_sums_within_float32_rounding():
    torch.manual_seed(0)
    backbone = HATMaskResNet18(small_input=True, output_dim=10)
    backbone.setup_task_id(1)
    hat_of(backbone).store_mask()
    backbone.setup_task_id(2)
    embeddings = {
        n: e.detach().clone().requires_grad_() for n, e in backbone.task_embedding.items()
    }
    mask = {n: torch.sigmoid(3.0 * e) for n, e in embeddings.items()}
    cumulative = hat_of(backbone).cumulative_mask()
    value = sparsity_regularization(mask, cumulative)
    used = sum((a.double() * (1 - cumulative[n].double())).sum() for n, a in mask.items())
    free = sum((1 - cumulative[n].double()).sum() for n in mask)
    # One float32 sum over ~4,800 units instead of one per layer: a few ulps apart at most.
    assert value.item() == pytest.approx((used / free).item(), rel=1e-6)
    value.backward()
    for name, embedding in embeddings.items():
        a = torch.sigmoid(3.0 * embedding.detach())
        expected = 3.0 * a * (1 - a) * (1 - cumulative[name]) / free.float()
        assert torch.allclose(embedding.grad, expected, rtol=1e-6, atol=0), name


def test_conditioning_factors_follow_a_loaded_state_dict():
    first, _ = _twin_resnets(None, seed=0)
    condition_gradients(first)  # caches the factors of first's stored masks
    other, _ = _twin_resnets(None, seed=1)
    assert not torch.equal(first.get_buffer("_cumulative"), other.get_buffer("_cumulative"))
    first.load_state_dict(other.state_dict())  # same task (3): only the masks changed
    reference = copy.deepcopy(first)
    for (_, a), (_, b) in zip(first.named_parameters(), reference.named_parameters(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    condition_gradients(first)
    _loop_hat(reference)
    _assert_same_grads(first, reference)
    assert torch.equal(first.get_buffer("_cumulative"), other.get_buffer("_cumulative"))


def test_cached_conditioning_skips_missing_gradients_and_follows_a_dtype_change():
    fused, loop = _twin_resnets("shared")
    condition_gradients(fused)  # caches each parameter's factor
    _loop_hat(loop)
    _assert_same_grads(fused, loop)
    # Parameters without a gradient (not reached by this step's loss) are skipped, the rest
    # scaled by their own factor, bit for bit as the per-layer loop.
    for (_, a), (_, b) in zip(fused.named_parameters(), loop.named_parameters(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    for backbone in (fused, loop):
        for index, name in enumerate(backbone.weighted_layer_names):
            if index % 2 == 0:
                backbone.get_layer_by_name(name).weight.grad = None
    condition_gradients(fused)
    _loop_hat(loop)
    for (name, a), (_, b) in zip(fused.named_parameters(), loop.named_parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        assert a.grad is None or torch.equal(a.grad, b.grad), name
    # .double() replaces the masks' buffer: the cached float32 factors are not reused.
    sparsity = {name: 0.25 for name in fused.weighted_layer_names}
    adahat_condition_gradients(fused, sparsity, alpha=0.3, epsilon=0.1, aggregation="mean")
    fused.double()
    loop.double()
    for (_, a), (_, b) in zip(fused.named_parameters(), loop.named_parameters(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    condition_gradients(fused)
    _loop_hat(loop)
    _assert_same_grads(fused, loop)
    assert all(p.grad.dtype == torch.float64 for p in fused.parameters())
    # AdaHAT's soft factors round differently in float64: cached float32 ones would differ.
    adahat_condition_gradients(fused, sparsity, alpha=0.3, epsilon=0.1, aggregation="mean")
    _loop_adahat(loop, sparsity, 0.3, 0.1, "mean")
    _assert_same_grads(fused, loop)


def test_cumulative_mask_views_follow_stored_masks_dtype_and_are_fresh_dicts():
    mlp = tiny_mlp()
    store(mlp, 1, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, 1.0]})
    hat = hat_of(mlp)
    first = hat.cumulative_mask()
    first["fc/0"] = torch.zeros(5)  # the caller's dict, not the cache
    again = hat.cumulative_mask()
    assert again is not first
    assert torch.equal(again["fc/0"], torch.tensor([1.0, 0.0]))
    assert again["fc/0"]._base is mlp.get_buffer("_cumulative")
    store(mlp, 2, {"fc/0": [-1.0, 1.0], "fc/1": [-1.0, -1.0]})
    assert torch.equal(hat.cumulative_mask()["fc/0"], torch.tensor([1.0, 1.0]))
    mlp.double()
    assert hat.cumulative_mask()["fc/1"].dtype == torch.float64
    assert torch.equal(hat.cumulative_mask()["fc/1"], torch.tensor([0.0, 1.0], dtype=torch.float64))
    # Views made in inference mode are not kept: in place outside it they would raise.
    fresh = tiny_mlp()
    store(fresh, 1, {"fc/0": [1.0, -1.0], "fc/1": [-1.0, 1.0]})
    with torch.inference_mode():
        assert torch.equal(hat_of(fresh).cumulative_mask()["fc/0"], torch.tensor([1.0, 0.0]))
    hat_of(fresh).cumulative_mask()["fc/0"].mul_(1)


def _previous_compensation(backbone, s, s_max, thr):
    """The compensation as it was before a 0-d tensor replaced the Python ``1`` (0.x)."""
    pairs = [(e.detach(), e.grad) for e in hat_of(backbone).task_embedding.values()]
    e = torch.cat([embedding for embedding, _ in pairs])
    numerator = torch.clamp(s * e, -thr, thr).cosh_().add_(1)
    numerator.mul_(s_max / s).div_(torch.cosh(e).add_(1))
    sizes = [embedding.numel() for embedding, _ in pairs]
    torch._foreach_mul_([grad for _, grad in pairs], list(numerator.split(sizes)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_embedding_compensation_is_bit_exact_to_the_previous_path(dtype):
    torch.manual_seed(0)
    first = HATMaskMLP(input_dim=5, hidden_dims=[37, 16], output_dim=9).to(dtype)
    first.setup_task_id(1)
    with torch.no_grad():
        for embedding in first.task_embedding.values():
            embedding.uniform_(-7.0, 7.0)
    second = copy.deepcopy(first)
    for a, b in zip(first.task_embedding.values(), second.task_embedding.values(), strict=True):
        a.grad = torch.randn_like(a)
        b.grad = a.grad.clone()
    for s in (1 / 400, 0.7, 123.456, 400.0):
        compensate_embedding_gradients(first, s, 400.0, 50.0)
        _previous_compensation(second, s, 400.0, 50.0)
        for a, b in zip(first.task_embedding.values(), second.task_embedding.values(), strict=True):
            assert a.grad.dtype == dtype
            assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("aggregation", ["min", "max", "mean"])
def test_weight_measure_of_a_layer_fed_by_the_raw_input_is_a_column(aggregation):
    """Every raw input unit measures ``raw_input_value``: the measure is the same for every
    input, ``Agg(out_i, v)``, a column broadcast over the weight's input dimension."""
    mlp = tiny_mlp()
    measure = {"fc/0": torch.tensor([0.2, 0.8]), "fc/1": torch.tensor([0.5, 1.0])}
    column = weight_measure(mlp, measure, "fc/0", aggregation, raw_input_value=0.5)
    expected = {"min": [0.2, 0.5], "max": [0.5, 0.8], "mean": [0.35, 0.65]}[aggregation]
    assert column.shape == (2, 1)
    assert torch.allclose(column[:, 0], torch.tensor(expected), rtol=0, atol=1e-7)
    assert weight_measure(mlp, measure, "fc/1", aggregation).shape == (2, 2)
