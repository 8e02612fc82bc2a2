"""CL backbones and per-task batch norm under compilation: no recompiling across tasks."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch._dynamo.testing import CompileCounterWithBackend

from clarena.backbones.testing import StageRecorder
from clarena.cl import CLMLP, CLBackbone, CLResNet18, CLResNet50, TaskBatchNorm

NUM_TASKS = 2
NUM_BATCHES = 3
#: Small enough that training stays bounded on every kernel set. At 0.01 the setup diverged: the
#: loss of ResNet50 (batch norm over 4 samples of 2x2 maps in its last stage) grew ~30x per step,
#: to inf/NaN features after 6 steps with AVX2 and AVX512 kernels and 1e29 with default ones.
LEARNING_RATE = 1e-3


@pytest.fixture(autouse=True)
def fresh_dynamo() -> None:
    torch._dynamo.reset()


def drive(
    backbone: CLBackbone, batches: list[Tensor], counter: CompileCounterWithBackend | None
) -> tuple[dict[str, int], list[Tensor]]:
    """Train (SGD), validate and test ``NUM_TASKS`` tasks of ``NUM_BATCHES`` batches each.

    Returns the graphs compiled in each stage (zeros without ``counter``) and every feature.
    """
    record = StageRecorder(counter)

    def run(stage: str, batch: Tensor, task_id: int | None = None) -> Tensor:
        return record.run(stage, lambda: backbone(batch, stage, task_id))[0]

    for task_id in range(1, NUM_TASKS + 1):
        backbone.setup_task_id(task_id)
        optimizer = torch.optim.SGD(backbone.parameters(), lr=LEARNING_RATE)
        backbone.train()
        for batch in batches:
            optimizer.zero_grad()
            run("train", batch).square().mean().backward()
            optimizer.step()
        backbone.eval()
        with torch.no_grad():
            for batch in batches:
                run("validation", batch)
            for test_task_id in range(1, task_id + 1):
                for batch in batches:
                    run("test", batch, test_task_id)
    return record.graphs, record.outputs


def check_compiled_like_eager(backbone: CLBackbone, batches: list[Tensor]) -> None:
    """One graph for training, one for evaluation (validation and test share it); eager results."""
    eager = copy.deepcopy(backbone)
    counter = CompileCounterWithBackend("aot_eager")
    backbone.compile(backend=counter, fullgraph=True)
    graphs, compiled = drive(backbone, batches, counter)
    assert graphs == {"train": 1, "validation": 1, "test": 0}
    _, expected = drive(eager, batches, None)
    assert len(compiled) == len(expected)
    # A diverging setup would compare inf or NaN (NaN is unequal to itself): it must fail here.
    assert all(bool(output.isfinite().all()) for output in expected)
    # aot_eager runs the aten kernels eager runs, in the same order (no code generation): the
    # same floats on every kernel set, so the comparison is exact.
    for actual, reference in zip(compiled, expected, strict=True):
        assert torch.equal(actual, reference)


def test_cl_mlp_compiles_once_per_mode_and_matches_eager() -> None:
    torch.manual_seed(0)
    backbone = CLMLP(input_dim=12, hidden_dims=[10, 8], output_dim=6, batch_normalization=True)
    check_compiled_like_eager(backbone, [torch.randn(5, 12) for _ in range(NUM_BATCHES)])


@pytest.mark.slow
@pytest.mark.parametrize("family", [CLResNet18, CLResNet50])
def test_cl_resnet_compiles_once_per_mode_and_matches_eager(family: type[CLBackbone]) -> None:
    torch.manual_seed(0)
    backbone = family(input_channels=3, output_dim=6, small_input=True)
    check_compiled_like_eager(backbone, [torch.randn(4, 3, 16, 16) for _ in range(NUM_BATCHES)])


def test_compiled_task_batch_norm_switches_tasks_without_recompiling() -> None:
    torch.manual_seed(0)
    norm = TaskBatchNorm(nn.BatchNorm1d(4))
    for task_id in (1, 2, 3):
        norm.select(task_id, create=True)
        with torch.no_grad():
            norm.norms[str(task_id)].weight.uniform_(0.5, 1.5)
    reference = copy.deepcopy(norm.norms)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(norm, backend=counter, fullgraph=True)
    batch = torch.randn(8, 4)
    for task_id in (1, 2, 3, 1, 2):
        norm.select(task_id)
        assert torch.equal(compiled(batch), reference[str(task_id)](batch))
    assert counter.frame_count == 1
    # Each task's running statistics moved only when its batch norm ran: 2, 2 and 1 batches.
    for task_id in (1, 2, 3):
        assert torch.equal(
            norm.norms[str(task_id)].running_mean, reference[str(task_id)].running_mean
        )
        assert torch.equal(
            norm.norms[str(task_id)].num_batches_tracked,
            reference[str(task_id)].num_batches_tracked,
        )
