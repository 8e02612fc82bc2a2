"""Per-task batch norm: mode resolution, conversion, isolation between tasks, reload."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from clarena.cl import (
    CLMLP,
    CLResNet18,
    TaskBatchNorm,
    make_batch_norm_task_independent,
    resolve_batch_norm_mode,
    select_task_batch_norm,
)


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, None),
        (False, None),
        ("none", None),
        ("null", None),
        (True, "shared"),
        ("shared", "shared"),
        ("Shared", "shared"),
        ("independent", "independent"),
        ("INDEPENDENT", "independent"),
    ],
)
def test_resolve_batch_norm_mode(value, mode):
    assert resolve_batch_norm_mode(value, "HATMaskMLP") == mode


@pytest.mark.parametrize("value", ["per_task", 1, 0, 1.0, ["shared"]])
def test_resolve_batch_norm_mode_rejects_other_values(value):
    with pytest.raises(
        ValueError,
        match=r"HATMaskMLP: batch_normalization must be null, 'shared' or 'independent'.*got "
        + repr(value).replace("[", r"\[").replace("]", r"\]").replace(".", r"\."),
    ):
        resolve_batch_norm_mode(value, "HATMaskMLP")


def make_converted_mlp() -> CLMLP:
    torch.manual_seed(0)
    mlp = CLMLP(10, [8], 4, batch_normalization=True)
    make_batch_norm_task_independent(mlp)
    return mlp


def task_norms(mlp: CLMLP) -> list[TaskBatchNorm]:
    """The converted MLP's two per-task batch norms (so loops over them are never empty)."""
    norms = [m for m in mlp.modules() if isinstance(m, TaskBatchNorm)]
    assert len(norms) == 2
    return norms


def test_conversion_replaces_every_batch_norm_1d():
    mlp = make_converted_mlp()
    assert not any(isinstance(m, nn.BatchNorm1d) for m in mlp.modules())
    assert all(isinstance(bn, TaskBatchNorm) for bn in mlp.fc_bn)
    assert [n._template.num_features for n in task_norms(mlp)] == [8, 4]


def test_conversion_replaces_batch_norm_2d_in_a_resnet():
    resnet = CLResNet18(input_channels=1, small_input=True)
    count = sum(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    make_batch_norm_task_independent(resnet)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in resnet.modules())
    assert sum(isinstance(m, TaskBatchNorm) for m in resnet.modules()) == count == 20
    resnet.setup_task_id(1)
    select_task_batch_norm(resnet, 1, create=True)
    feature, _ = resnet(torch.randn(2, 1, 8, 8), stage="train")
    assert feature.shape == (2, 512)
    kinds = {
        type(bn)
        for norm in resnet.modules()
        if isinstance(norm, TaskBatchNorm)
        for bn in norm.norms.values()
    }
    assert kinds == {nn.BatchNorm2d}


def test_forward_without_a_selected_task_is_a_runtime_error():
    mlp = make_converted_mlp()
    mlp.setup_task_id(1)
    with pytest.raises(RuntimeError, match=r"no task selected"):
        mlp(torch.randn(4, 10), stage="train")


def test_select_creates_separate_parameters_per_task():
    mlp = make_converted_mlp()
    select_task_batch_norm(mlp, 1, create=True)
    select_task_batch_norm(mlp, 2, create=True)
    for norm in task_norms(mlp):
        assert list(norm.norms) == ["1", "2"]
        assert norm.active_task == 2
        assert norm.norms["1"].weight is not norm.norms["2"].weight
        assert norm.norms["1"].running_mean is not norm.norms["2"].running_mean
    names = {name for name, _ in mlp.named_parameters()}
    assert {"fc_bn.0.norms.1.weight", "fc_bn.0.norms.2.weight", "fc_bn.1.norms.2.bias"} <= names


def test_select_unknown_task_without_create_is_a_value_error():
    mlp = make_converted_mlp()
    select_task_batch_norm(mlp, 1, create=True)
    with pytest.raises(ValueError, match=r"task 3 has no batch norm.*\['1'\].*never trained"):
        select_task_batch_norm(mlp, 3)


def snapshot(norm: nn.BatchNorm1d) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in norm.state_dict().items()}


def test_training_task_two_leaves_task_one_batch_norm_untouched():
    mlp = make_converted_mlp()
    for task_id in (1, 2):
        select_task_batch_norm(mlp, task_id, create=True)
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.1)

    def train(task_id: int, steps: int) -> None:
        mlp.setup_task_id(task_id)
        select_task_batch_norm(mlp, task_id)
        mlp.train()
        for _ in range(steps):
            optimizer.zero_grad()
            feature, _ = mlp(torch.randn(16, 10) + task_id, stage="train")
            feature.square().mean().backward()
            optimizer.step()

    initial = [snapshot(norm.norms["1"]) for norm in task_norms(mlp)]
    train(1, steps=4)
    task_one = [snapshot(norm.norms["1"]) for norm in task_norms(mlp)]
    for before, after in zip(initial, task_one, strict=True):
        assert after["num_batches_tracked"] == 4
        assert not torch.equal(after["weight"], before["weight"])  # task 1 did train its norm

    train(2, steps=4)
    for norm, before in zip(task_norms(mlp), task_one, strict=True):
        after = norm.norms["1"].state_dict()
        assert after.keys() == before.keys()
        for key in before:
            assert torch.equal(after[key], before[key]), key
        # task 2's own statistics and parameters did move
        assert norm.norms["2"].num_batches_tracked == 4
        assert not torch.equal(norm.norms["2"].running_mean, before["running_mean"])
        assert not torch.equal(norm.norms["2"].weight, before["weight"])


def test_eval_output_differs_by_selected_task():
    mlp = make_converted_mlp()
    for task_id in (1, 2):
        mlp.setup_task_id(task_id)
        select_task_batch_norm(mlp, task_id, create=True)
        mlp.train()
        mlp(torch.randn(32, 10) * (task_id * 3), stage="train")
    mlp.eval()
    x = torch.randn(4, 10)
    select_task_batch_norm(mlp, 1)
    out_one = mlp(x, stage="test", task_id=1)[0]
    select_task_batch_norm(mlp, 2)
    out_two = mlp(x, stage="test", task_id=2)[0]
    assert not torch.equal(out_one, out_two)


def test_reload_into_a_fresh_converted_module_restores_every_task():
    mlp = make_converted_mlp()
    for task_id in (3, 1, 7):
        mlp.setup_task_id(task_id)
        select_task_batch_norm(mlp, task_id, create=True)
        mlp.train()
        with torch.no_grad():
            for norm in task_norms(mlp):
                norm.norms[str(task_id)].weight.uniform_(0.5, 1.5)
        mlp(torch.randn(16, 10) * task_id, stage="train")
    buffer = io.BytesIO()
    torch.save(mlp.state_dict(), buffer)
    buffer.seek(0)

    fresh = make_converted_mlp()
    result = fresh.load_state_dict(torch.load(buffer, weights_only=False))
    assert result.missing_keys == []
    assert result.unexpected_keys == []
    assert fresh.processed_task_ids == [3, 1, 7]
    for norm in task_norms(fresh):
        assert list(norm.norms) == ["3", "1", "7"]
    mlp.eval()
    fresh.eval()
    x = torch.randn(5, 10)
    with torch.no_grad():
        for task_id in (3, 1, 7):
            select_task_batch_norm(mlp, task_id)
            select_task_batch_norm(fresh, task_id)
            assert torch.equal(
                fresh(x, stage="test", task_id=task_id)[0], mlp(x, stage="test", task_id=task_id)[0]
            )


@pytest.mark.parametrize("first_task_before_conversion", [False, True])
def test_new_task_batch_norm_follows_the_modules_dtype(first_task_before_conversion):
    mlp = make_converted_mlp()
    if first_task_before_conversion:
        mlp.setup_task_id(1)
        select_task_batch_norm(mlp, 1, create=True)
    mlp.double()
    mlp.setup_task_id(2)
    select_task_batch_norm(mlp, 2, create=True)
    feature, _ = mlp(torch.randn(6, 10, dtype=torch.float64), stage="train")
    feature.sum().backward()
    for norm in task_norms(mlp):
        assert norm.norms["2"].weight.dtype == torch.float64
        assert norm.norms["2"].running_mean.dtype == torch.float64
        assert norm.norms["2"].num_batches_tracked.dtype == torch.int64


def test_reloaded_task_batch_norms_follow_the_modules_dtype():
    mlp = make_converted_mlp()
    mlp.setup_task_id(1)
    select_task_batch_norm(mlp, 1, create=True)
    fresh = make_converted_mlp().double()
    fresh.load_state_dict(mlp.state_dict())
    for norm in task_norms(fresh):
        assert norm.norms["1"].weight.dtype == torch.float64
        assert "_placement" not in norm.state_dict()


def test_each_task_copies_the_template_whole_with_its_state():
    """A per-task norm is a copy of the replaced module: timm's BatchNormAct2d keeps its
    activation; with keep_state a pretrained norm's statistics are every task's starting point,
    by default each task starts fresh."""
    from timm.layers import BatchNormAct2d

    template = BatchNormAct2d(3, act_layer=nn.ReLU)
    with torch.no_grad():
        template.running_mean.fill_(2.0)
        template.weight.fill_(-1.0)
    fresh = TaskBatchNorm(template)
    fresh.select(1, create=True)
    assert type(fresh.norms["1"]) is BatchNormAct2d
    assert torch.equal(fresh.norms["1"].running_mean, torch.zeros(3))
    assert torch.equal(fresh.norms["1"].weight, torch.ones(3))
    norm = TaskBatchNorm(template, keep_state=True).double()
    norm.select(1, create=True)
    norm.select(2, create=True)
    first, second = norm.norms["1"], norm.norms["2"]
    assert type(first) is BatchNormAct2d
    assert first is not second
    assert first is not template
    assert first.weight is not second.weight
    assert torch.equal(second.running_mean, torch.full((3,), 2.0, dtype=torch.float64))
    norm.eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    expected = torch.relu(-(x - 2.0) / torch.sqrt(torch.tensor(1.0 + template.eps)))
    assert torch.allclose(norm(x), expected)
    assert (norm(x) >= 0).all()
