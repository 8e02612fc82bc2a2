"""Bit-exact no-forgetting of HAT in task-incremental learning, and its documented leaks."""

from __future__ import annotations

import io

import pytest
import torch

from clarena.cl import HeadsTIL
from clarena.hat import HATMaskMLP, HATMaskResNet18, hat_of

MLP_SHAPE = (1, 8, 8)
IMAGE_SHAPE = (3, 8, 8)


def make_mlp(batch_normalization):
    return HATMaskMLP(64, [32, 32], 16, batch_normalization=batch_normalization)


def make_resnet(batch_normalization):
    return HATMaskResNet18(
        input_channels=3, output_dim=16, small_input=True, batch_normalization=batch_normalization
    )


#: Finished runs, keyed by their arguments: the ResNet runs are the slow part of this suite, and
#: the tests below only read them (test stage, state_dict), so tests with equal runs share one.
_RUNS: dict[tuple, tuple] = {}


def run_sequence(
    make,
    shape,
    batch_normalization,
    task_ids,
    hat_loop,
    task_data,
    test_stage,
    conditioning="hat",
    num_batches=None,
):
    """Train ``task_ids`` in turn; return the backbone, heads, probe input, and task-1 outputs
    right after task 1 and after the last task."""
    key = (make.__name__, batch_normalization, tuple(task_ids), conditioning, num_batches)
    if key not in _RUNS:
        _RUNS[key] = _run_sequence(
            make,
            shape,
            batch_normalization,
            task_ids,
            hat_loop,
            task_data,
            test_stage,
            conditioning,
            num_batches,
        )
    return _RUNS[key]


def _run_sequence(
    make,
    shape,
    batch_normalization,
    task_ids,
    hat_loop,
    task_data,
    test_stage,
    conditioning,
    num_batches,
):
    torch.manual_seed(0)
    backbone = make(batch_normalization)
    heads = HeadsTIL(backbone.output_dim)
    probe = torch.randn(6, *shape, generator=torch.Generator().manual_seed(7))
    first = task_ids[0]
    after_first = None
    weights_after_first = None
    if num_batches is None:
        num_batches = 3 if make is make_mlp else 2
    for task_id in task_ids:
        data = task_data(task_id, shape, num_batches)
        hat_loop(backbone, heads, task_id, data, conditioning)
        if task_id == first:
            after_first = test_stage(backbone, heads, first, probe)
            weights_after_first = _snapshot(backbone)
    after_last = test_stage(backbone, heads, first, probe)
    return backbone, heads, probe, after_first, after_last, weights_after_first


def _snapshot(backbone):
    return {
        name: tensor.detach().clone()
        for name, tensor in [*backbone.named_parameters(), *backbone.named_buffers()]
    }


def _key_of(backbone, tensor):
    return next(
        k for k, v in [*backbone.named_parameters(), *backbone.named_buffers()] if v is tensor
    )


def _shared_weights_moved(backbone, weights_after_first):
    """Later tasks really trained the shared layers (so equality below is not vacuous)."""
    layer = backbone.get_layer_by_name(backbone.weighted_layer_names[1])
    return not torch.equal(layer.weight, weights_after_first[_key_of(backbone, layer.weight)])


@pytest.mark.parametrize(
    ("make", "shape", "task_ids"),
    [
        (make_mlp, MLP_SHAPE, (1, 2, 3)),
        (make_mlp, MLP_SHAPE, (1, 5, 7)),
        (make_resnet, IMAGE_SHAPE, (1, 2, 3)),
    ],
    ids=["mlp", "mlp-task-ids-1-5-7", "resnet18"],
)
@pytest.mark.parametrize("batch_normalization", ["independent", None])
def test_task_one_outputs_are_bit_exact_after_later_tasks(
    make, shape, task_ids, batch_normalization, hat_loop, task_data, test_stage
):
    backbone, _, _, after_first, after_last, weights = run_sequence(
        make, shape, batch_normalization, task_ids, hat_loop, task_data, test_stage
    )
    assert hat_of(backbone).stored_task_ids == list(task_ids)
    assert _shared_weights_moved(backbone, weights)
    assert torch.equal(after_first[0], after_last[0])
    assert torch.equal(after_first[1], after_last[1])


@pytest.mark.parametrize(("make", "shape"), [(make_mlp, MLP_SHAPE), (make_resnet, IMAGE_SHAPE)])
def test_without_conditioning_task_one_is_forgotten(make, shape, hat_loop, task_data, test_stage):
    """Control: the same loop minus gradient conditioning changes task 1's outputs."""
    _, _, _, after_first, after_last, _ = run_sequence(
        make, shape, "independent", (1, 2, 3), hat_loop, task_data, test_stage, "none"
    )
    assert not torch.equal(after_first[0], after_last[0])


@pytest.mark.parametrize(("make", "shape"), [(make_mlp, MLP_SHAPE), (make_resnet, IMAGE_SHAPE)])
def test_shared_batch_norm_leaks_through_running_statistics(
    make, shape, hat_loop, task_data, test_stage
):
    """Documented leak: with one batch norm for all tasks, later tasks move its running
    statistics (the affine parameters of used units are conditioned, the statistics cannot be),
    so task 1's test outputs change even with HAT."""
    backbone, _, _, after_first, after_last, weights = run_sequence(
        make, shape, "shared", (1, 2, 3), hat_loop, task_data, test_stage
    )
    assert hat_of(backbone).batch_norm_mode == "shared"
    assert not torch.equal(after_first[0], after_last[0])
    norm = hat_of(backbone).normalization_layer(backbone.weighted_layer_names[0])
    assert not torch.equal(norm.running_mean, weights[_key_of(backbone, norm.running_mean)])


@pytest.mark.parametrize(
    ("make", "shape", "task_ids"),
    [(make_mlp, MLP_SHAPE, (1, 5, 7)), (make_resnet, IMAGE_SHAPE, (1, 2, 3))],
    ids=["mlp", "resnet18"],
)
def test_save_and_reload_into_fresh_instance_reproduces_every_task(
    make, shape, task_ids, hat_loop, task_data, test_stage
):
    backbone, heads, probe, _, _, _ = run_sequence(
        make, shape, "independent", task_ids, hat_loop, task_data, test_stage
    )
    buffer = io.BytesIO()
    torch.save({"backbone": backbone.state_dict(), "heads": heads.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    fresh = make("independent")
    fresh_heads = HeadsTIL(fresh.output_dim)
    fresh.load_state_dict(saved["backbone"])
    fresh_heads.load_state_dict(saved["heads"])

    assert hat_of(fresh).stored_task_ids == list(task_ids)
    assert fresh.processed_task_ids == list(task_ids)
    for name, mask in hat_of(backbone).cumulative_mask().items():
        assert torch.equal(hat_of(fresh).cumulative_mask()[name], mask)
        assert torch.equal(
            hat_of(fresh).summative_mask()[name], hat_of(backbone).summative_mask()[name]
        )
    assert hat_of(fresh).capacity() == hat_of(backbone).capacity()
    for task_id in task_ids:
        expected = test_stage(backbone, heads, task_id, probe)
        got = test_stage(fresh, fresh_heads, task_id, probe)
        assert torch.equal(expected[0], got[0])
        assert torch.equal(expected[1], got[1])


def test_adahat_trains_three_tasks_and_protects_less_than_hat(hat_loop, task_data, test_stage):
    """AdaHAT scales (does not zero) the gradients of used parameters: it trades some forgetting
    for plasticity, so task 1's outputs move, unlike HAT's."""
    backbone, _, _, after_first, after_last, _ = run_sequence(
        make_mlp, MLP_SHAPE, "independent", (1, 2, 3), hat_loop, task_data, test_stage, "adahat"
    )
    assert hat_of(backbone).stored_task_ids == [1, 2, 3]
    assert torch.isfinite(after_last[1]).all()
    assert not torch.equal(after_first[0], after_last[0])


def test_single_batch_task_uses_s_max(hat_loop, task_data, test_stage):
    backbone, _, _, after_first, after_last, _ = run_sequence(
        make_mlp, MLP_SHAPE, "independent", (1, 2), hat_loop, task_data, test_stage, num_batches=1
    )
    assert hat_of(backbone).stored_task_ids == [1, 2]
    assert torch.equal(after_first[1], after_last[1])
